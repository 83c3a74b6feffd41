"""Reading a Modbus unit, against real pymodbus servers on 127.0.0.1: every data type and
word/byte order in one merged request, bit fields of a status word, reads planned by the
profile's limits (and re-planned when a device refuses gaps), counters across their wrap, and
values outside their range."""

from __future__ import annotations

import itertools
import math
import struct
from typing import Any

import pytest

from laterne.drivers.field.errors import ExceptionResponse
from laterne.drivers.field.modbus import ModbusGateway
from laterne.models.site import DeviceProfile
from laterne.models.values import Quality

from ..conftest import FakeClock, ModbusServerFactory, profile, unit
from ..modbus_rig import NOW, device, gateway, gateways, values

__all__ = ["gateways"]  # a fixture, used by name below


# --------------------------------------------------------------- types and word orders

TYPES_AND_VALUES: dict[str, float] = {
    "u16": 0xBEEF,
    "i16": -12345,
    "u32": 0x12345678,
    "i32": -123456789,
    "u64": float(0x0123456789ABCDE0),
    "i64": -1234567890123,
    "f32": -1.5,
    "f64": 123.456,
}
_FMT = {"u16": "H", "i16": "h", "u32": "I", "i32": "i", "u64": "Q", "i64": "q", "f32": "f",
        "f64": "d"}  # fmt: skip


def words_of(value: float, type_: str, wo: str, bo: str) -> list[int]:
    """Registers of ``value``, built independently of the codec under test."""
    raw: float | int = value if type_ in ("f32", "f64") else int(value)
    data = struct.pack(">" + _FMT[type_], raw)
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if bo == "little":
        words = [w[::-1] for w in words]
    if wo == "little":
        words.reverse()
    return [int.from_bytes(w, "big") for w in words]


async def test_every_type_word_and_byte_order_in_one_merged_request(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    points: dict[str, dict[str, Any]] = {}
    regs: list[int] = []
    expected: dict[str, float] = {}
    for type_, value in TYPES_AND_VALUES.items():
        for wo in ("big", "little"):
            for bo in ("big", "little"):
                name = f"{type_}_{wo}_{bo}"
                points[name] = {"table": "input", "address": len(regs), "type": type_,
                                "word_order": wo, "byte_order": bo}  # fmt: skip
                regs.extend(words_of(value, type_, wo, bo))
                expected[name] = value
    assert len(regs) == 80
    prof = profile("modbus", points)
    server = await modbus_server(unit(1, inputs=regs))
    dev = device(prof, gateway(gateways, server.port, clock))

    got = await dev.read(NOW)

    assert server.ranges == [(1, 4, 0, 80)]  # one request for all 32 points
    for name, want in expected.items():
        assert got[name].quality is Quality.GOOD, name
        if name.startswith("f32"):
            assert got[name].value == pytest.approx(want, rel=1e-7), name
        else:
            assert got[name].value == want, name


# --------------------------------------------------------------------------- bit fields


async def test_bit_fields_of_one_status_word_are_read_with_one_request(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    prof = profile("modbus", {
        "lamp_fault": {"table": "holding", "address": 10, "type": "u16", "bit": 0},
        "door_open": {"table": "holding", "address": 10, "type": "u16", "bit": 3},
        "on_battery": {"table": "holding", "address": 10, "type": "u16", "bit": 15},
        "status": {"table": "holding", "address": 10, "type": "u16"},
        "alarm_pct": {"table": "input", "address": 0, "type": "u16", "bit": 2, "scale": 100},
    })  # fmt: skip
    server = await modbus_server(
        unit(1, holding_blocks=[(10, [0b1000_0000_0000_1000])], inputs=[0b100])
    )
    dev = device(prof, gateway(gateways, server.port, clock))

    assert values(await dev.read(NOW)) == {
        "lamp_fault": 0.0,
        "door_open": 1.0,
        "on_battery": 1.0,
        "status": float(0x8008),
        "alarm_pct": 100.0,
    }
    assert server.ranges == [(1, 3, 10, 1), (1, 4, 0, 1)]

    await server.set_values(1, "holding", 10, [0x0001])
    got = values(await dev.read(NOW))
    assert (got["lamp_fault"], got["door_open"], got["on_battery"]) == (1.0, 0.0, 0.0)


# ------------------------------------------------------------------ read planning per profile


def with_planning(points: dict[str, dict[str, Any]], **kw: int) -> DeviceProfile:
    return DeviceProfile.model_validate({"protocol": "modbus", "points": points, **kw})


async def test_profile_max_read_registers_splits_requests(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    points = {f"r{i:02d}": {"table": "input", "address": i, "type": "u16"} for i in range(24)}
    points["f"] = {"table": "input", "address": 24, "type": "f32"}  # 24..25: never split
    prof = with_planning(points, max_read_registers=10)
    server = await modbus_server(unit(1, inputs=[*range(24), 0x3FC0, 0x0000]))
    dev = device(prof, gateway(gateways, server.port, clock))

    got = values(await dev.read(NOW))

    assert server.ranges == [(1, 4, 0, 10), (1, 4, 10, 10), (1, 4, 20, 6)]
    assert all(count <= 10 for *_x, count in server.ranges)
    assert [got[f"r{i:02d}"] for i in range(24)] == [float(i) for i in range(24)]
    assert got["f"] == 1.5


async def test_profile_max_gap_zero_never_reads_through_a_gap(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    points = {
        "a": {"table": "holding", "address": 0, "type": "u16"},
        "b": {"table": "holding", "address": 1, "type": "u16"},
        "c": {"table": "holding", "address": 3, "type": "u16"},
        "d": {"table": "holding", "address": 7, "type": "u32"},
    }
    server = await modbus_server(unit(1, holding_blocks=[(0, [10, 11]), (3, [13]), (7, [0, 17])]))
    gw = gateway(gateways, server.port, clock)
    dev = device(with_planning(points, max_gap_registers=0), gw)
    for _ in range(2):
        assert values(await dev.read(NOW)) == {"a": 10.0, "b": 11.0, "c": 13.0, "d": 17.0}
    assert server.ranges == [(1, 3, 0, 2), (1, 3, 3, 1), (1, 3, 7, 2)] * 2

    # the default profile (gap 8) reads through, is refused, re-plans once, keeps the plan
    server.ranges.clear()
    dev8 = device(with_planning(points), gw, device_id="dev8")
    for _ in range(2):
        assert values(await dev8.read(NOW)) == {"a": 10.0, "b": 11.0, "c": 13.0, "d": 17.0}
    assert server.ranges == [(1, 3, 0, 9)] + [(1, 3, 0, 2), (1, 3, 3, 1), (1, 3, 7, 2)] * 2


async def test_gap_free_plan_that_is_refused_raises(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    prof = with_planning(
        {"a": {"table": "holding", "address": 0, "type": "u16"},
         "z": {"table": "holding", "address": 3, "type": "u16"}},
        max_gap_registers=0,
    )  # fmt: skip
    server = await modbus_server(unit(1, holding=[1, 2]))
    dev = device(prof, gateway(gateways, server.port, clock))
    with pytest.raises(ExceptionResponse) as info:
        await dev.read(NOW)
    assert info.value.code == 2
    assert server.ranges == [(1, 3, 0, 1), (1, 3, 3, 1)]  # no re-plan loop


# ------------------------------------------------------------------- counters at the wrap


async def test_counters_across_the_wrap_decode_to_raw_values(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    prof = profile("modbus", {
        "c16": {"table": "input", "address": 0, "type": "u16", "kind": "counter"},
        "c32": {"table": "input", "address": 1, "type": "u32", "kind": "counter"},
        "c32_le": {"table": "input", "address": 3, "type": "u32", "kind": "counter",
                   "word_order": "little"},
        "c64": {"table": "input", "address": 5, "type": "u64", "kind": "counter"},
    })  # fmt: skip
    server = await modbus_server(unit(1, inputs=[0] * 9))
    dev = device(prof, gateway(gateways, server.port, clock))
    seen: list[dict[str, float]] = []
    for c16, c32, c64 in [
        (0xFFFE, 2**32 - 2, 2**53 - 1),
        (0xFFFF, 2**32 - 1, 2**64 - 1),
        (0x0000, 0, 0),
        (0x0001, 1, 1),
    ]:
        regs = [
            c16,
            *words_of(c32, "u32", "big", "big"),
            *words_of(c32, "u32", "little", "big"),
            *words_of(c64, "u64", "big", "big"),
        ]
        await server.set_values(1, "input", 0, regs)
        readings = await dev.read(NOW)
        assert all(r.quality is Quality.GOOD for r in readings.values())
        seen.append(values(readings))
    assert [s["c16"] for s in seen] == [65534.0, 65535.0, 0.0, 1.0]
    assert [s["c32"] for s in seen] == [4294967294.0, 4294967295.0, 0.0, 1.0]
    assert [s["c32_le"] for s in seen] == [s["c32"] for s in seen]
    assert [s["c64"] for s in seen] == [float(2**53 - 1), float(2**64 - 1), 0.0, 1.0]
    # the policy's rate: differences modulo 2**bits, one vehicle per step across the wrap
    steps = [(b["c32"] - a["c32"]) % 2**32 for a, b in itertools.pairwise(seen)]
    assert steps == [1.0, 1.0, 1.0]


# ------------------------------------------------------------------- out-of-range values


async def test_out_of_range_values_are_faulty_readings_and_the_rest_is_good(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    prof = profile("modbus", {
        "temp_c": {"table": "input", "address": 0, "type": "i16", "scale": 0.1,
                   "min": -40, "max": 60, "unit": "degC"},
        "power_w": {"table": "input", "address": 1, "type": "f32", "min": 0, "max": 5000},
        "flow": {"table": "input", "address": 3, "type": "f32"},
        "dim_pct": {"table": "input", "address": 5, "type": "u16", "scale": 0.1,
                    "min": 0, "max": 100},
        "ok": {"table": "input", "address": 6, "type": "u16"},
    })  # fmt: skip
    regs = [
        *words_of(-999, "i16", "big", "big"),  # -99.9 degC
        *words_of(-1.0, "f32", "big", "big"),  # negative power
        0x7F80, 0x0000,  # +inf
        1001,  # 100.1 %
        3,
    ]  # fmt: skip
    server = await modbus_server(unit(1, inputs=regs))
    dev = device(prof, gateway(gateways, server.port, clock))
    got = await dev.read(NOW)
    for name in ("temp_c", "power_w", "flow", "dim_pct"):
        assert got[name].quality is Quality.FAULTY, name
        assert math.isnan(got[name].value), name
    assert "-99.9" in got["temp_c"].error and "outside [-40.0, 60.0]" in got["temp_c"].error
    assert "not a number" in got["flow"].error
    assert got["ok"].quality is Quality.GOOD and got["ok"].value == 3.0
    assert len(server.ranges) == 1
