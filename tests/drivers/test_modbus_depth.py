"""The Modbus driver in depth, against real pymodbus servers on 127.0.0.1.

Issue 3's list: every data type and word/byte order, bit fields, merged reads sized by the
profile, counters across their wrap, exception responses, a unit that stops answering (and one
that never did, behind a live gateway), a server killed and restarted mid-run, out-of-range
values, and the per-endpoint limit on requests in flight.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import struct
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymodbus.constants import ExcCodes

from laterne.drivers.backoff import Backoff
from laterne.drivers.errors import DeviceOffline, DeviceTimeout, ExceptionResponse
from laterne.drivers.factory import build_clients
from laterne.drivers.modbus import ModbusDevice, ModbusGateway
from laterne.models.site import Device, DeviceProfile, SiteConfig
from laterne.models.values import PointReading, Quality

from .conftest import FakeClock, ModbusServerFactory, modbus_device, profile, unit

NOW = datetime(2026, 1, 15, 22, 0, tzinfo=UTC)
TIMEOUT_S = 0.3


@pytest.fixture
async def gateways() -> AsyncIterator[list[ModbusGateway]]:
    made: list[ModbusGateway] = []
    yield made
    for gw in made:
        await gw.close()


def gateway(
    made: list[ModbusGateway],
    port: int,
    clock: FakeClock,
    *,
    max_in_flight: int = 1,
    timeout_s: float = TIMEOUT_S,
) -> ModbusGateway:
    gw = ModbusGateway(
        "127.0.0.1",
        port,
        timeout_s=timeout_s,
        max_in_flight=max_in_flight,
        backoff=Backoff(jitter=0.0, monotonic=clock),
    )
    made.append(gw)
    return gw


def device(
    prof: DeviceProfile, gw: ModbusGateway, unit_id: int = 1, device_id: str = "dev"
) -> ModbusDevice:
    return ModbusDevice(modbus_device(prof, gw.port, unit_id, device_id), prof, gw)


def values(readings: dict[str, PointReading] | BaseException) -> dict[str, float]:
    """Point values of one read (a gathered exception fails the test here)."""
    assert not isinstance(readings, BaseException), readings
    return {name: r.value for name, r in readings.items()}


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


# ---------------------------------------------------------------------- exception responses


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (ExcCodes.ILLEGAL_FUNCTION, "ILLEGAL FUNCTION"),
        (ExcCodes.ILLEGAL_VALUE, "ILLEGAL DATA VALUE"),
        (ExcCodes.DEVICE_FAILURE, "SERVER DEVICE FAILURE"),
        (ExcCodes.DEVICE_BUSY, "SERVER DEVICE BUSY"),
        (ExcCodes.GATEWAY_PATH_UNAVIABLE, "GATEWAY PATH UNAVAILABLE"),
        (ExcCodes.GATEWAY_NO_RESPONSE, "GATEWAY TARGET DEVICE FAILED TO RESPOND"),
    ],
)
async def test_exception_responses_are_typed_and_keep_the_connection(
    modbus_server: ModbusServerFactory,
    gateways: list[ModbusGateway],
    clock: FakeClock,
    code: ExcCodes,
    name: str,
) -> None:
    async def refuse(*_args: Any) -> ExcCodes | None:
        return code

    prof = profile("modbus", {"x": {"table": "holding", "address": 0, "type": "u16"}})
    server = await modbus_server(unit(1, holding=[5], action=refuse), unit(2, holding=[6]))
    gw = gateway(gateways, server.port, clock)
    dev = device(prof, gw)
    with pytest.raises(ExceptionResponse) as info:
        await dev.read(NOW)
    assert (info.value.code, info.value.name) == (int(code), name)
    assert gw.connected and gw.backoff.failures == 0 and dev.backoff.failures == 0
    assert values(await device(prof, gw, 2, "neighbour").read(NOW)) == {"x": 6.0}
    assert server.connections == 1


# ------------------------------------------------------------ units that do not answer


PROF_1 = {"x": {"table": "input", "address": 0, "type": "u16"}}


async def test_an_unserved_unit_behind_a_gateway_is_refused_and_neighbours_read(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    """The gateway knows the unit is gone and answers with an exception for it (pymodbus's
    simulator: 0x04; a real gateway: 0x0B, see the parametrised test above)."""
    prof = profile("modbus", PROF_1)
    server = await modbus_server(*(unit(u, inputs=[u]) for u in (1, 2, 3)))
    gw = gateway(gateways, server.port, clock)
    devs = [device(prof, gw, u, f"u{u}") for u in (1, 9, 2, 3)]
    got = await asyncio.gather(*(d.read(NOW) for d in devs), return_exceptions=True)
    assert isinstance(got[1], ExceptionResponse) and "unit 9" in str(got[1])
    assert [values(g) for g in (got[0], got[2], got[3])] == [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]
    assert gw.connected and server.connections == 1


async def _never_answer(*_args: Any) -> ExcCodes | None:
    """A dead RTU slave behind a live gateway: the request goes nowhere (answers far too late,
    with a transaction id the client no longer waits for)."""
    await asyncio.sleep(5 * TIMEOUT_S)
    return None


async def test_one_dead_unit_does_not_stall_its_neighbours(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    """A silent unit id: it times out, its neighbours on the same connection read in the same
    cycle, and from the next cycle on it fails at once (its own backoff) instead of costing
    everyone ``timeout_s`` again (OpenEMS #6, Home Assistant #51326)."""
    prof = profile("modbus", PROF_1)
    server = await modbus_server(
        *(unit(u, inputs=[u]) for u in (1, 2, 3)), unit(9, inputs=[9], action=_never_answer)
    )
    gw = gateway(gateways, server.port, clock)
    devs = [device(prof, gw, u, f"u{u}") for u in (1, 9, 2, 3)]

    t0 = time.monotonic()
    got = await asyncio.gather(*(d.read(NOW) for d in devs), return_exceptions=True)
    assert time.monotonic() - t0 >= TIMEOUT_S * 0.9
    assert isinstance(got[1], DeviceTimeout)
    assert [values(g) for g in (got[0], got[2], got[3])] == [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]
    assert gw.connected and gw.backoff.failures == 0 and server.connections == 1
    assert devs[1].backoff.failures == 1

    t0 = time.monotonic()
    got = await asyncio.gather(*(d.read(NOW) for d in devs), return_exceptions=True)
    assert time.monotonic() - t0 < TIMEOUT_S / 2  # the dead unit costs nothing this cycle
    assert isinstance(got[1], DeviceOffline) and "next attempt in" in str(got[1])
    assert [values(g) for g in (got[0], got[2], got[3])] == [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]

    clock.advance(devs[1].backoff.remaining_s())  # due again: tried, still silent
    with pytest.raises(DeviceTimeout):
        await devs[1].read(NOW)
    assert devs[1].backoff.failures == 2
    assert gw.connected  # its silence never took the shared connection down
    assert values(await devs[0].read(NOW)) == {"x": 1.0}


async def test_a_unit_that_stops_answering_mid_run_and_comes_back(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    muted = False
    release = asyncio.Event()

    async def maybe_hang(*_args: Any) -> ExcCodes | None:
        if muted:
            await release.wait()  # answers late: after the client's timeout
        return None

    prof = profile("modbus", PROF_1)
    server = await modbus_server(unit(1, inputs=[7], action=maybe_hang), unit(2, inputs=[8]))
    gw = gateway(gateways, server.port, clock)
    dev, neighbour = device(prof, gw, 1, "a"), device(prof, gw, 2, "b")
    assert values(await dev.read(NOW)) == {"x": 7.0}

    muted = True
    with pytest.raises(DeviceTimeout):
        await dev.read(NOW)
    assert values(await neighbour.read(NOW)) == {"x": 8.0}

    muted = False
    release.set()  # the late answer arrives now, with a stale transaction id
    await asyncio.sleep(0.05)
    assert values(await neighbour.read(NOW)) == {"x": 8.0}  # not confused by it
    with pytest.raises(DeviceOffline):
        await dev.read(NOW)  # still backing off
    clock.advance(dev.backoff.remaining_s())
    await server.set_values(1, "input", 0, [70])
    assert values(await dev.read(NOW)) == {"x": 70.0}
    assert dev.backoff.failures == 0
    assert server.connections == 1


# ----------------------------------------------------------------- server killed mid-run


async def test_server_killed_during_a_request_and_restarted(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    slow = asyncio.Event()
    arrived = asyncio.Event()

    async def hang_when_slow(*_args: Any) -> ExcCodes | None:
        if slow.is_set():
            arrived.set()
            await asyncio.sleep(10)
        return None

    prof = profile("modbus", PROF_1)
    server = await modbus_server(unit(1, inputs=[1], action=hang_when_slow))
    gw = gateway(gateways, server.port, clock, timeout_s=2.0)
    dev = device(prof, gw)
    assert values(await dev.read(NOW)) == {"x": 1.0}

    slow.set()
    pending = asyncio.ensure_future(dev.read(NOW))
    await asyncio.wait_for(arrived.wait(), 1.0)
    t0 = time.monotonic()
    await server.stop()
    with pytest.raises(DeviceOffline, match="connection lost"):
        await pending
    assert time.monotonic() - t0 < 1.0  # the loss, not the 2 s timeout
    assert gw.backoff.failures == 1 and not gw.connected
    assert dev.backoff.failures == 0  # the unit did nothing wrong

    slow.clear()
    await server.start()
    with pytest.raises(DeviceOffline, match="next attempt in"):
        await dev.read(NOW)
    clock.advance(gw.backoff.remaining_s())
    assert values(await dev.read(NOW)) == {"x": 1.0}
    assert gw.backoff.failures == 0 and server.connections == 1


async def test_a_pool_survives_a_restart_and_counts_the_outage_once(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    prof = profile("modbus", PROF_1)
    units = [unit(u, inputs=[u], action=_slow_reader) for u in range(1, 5)]
    server = await modbus_server(*units)
    gw = gateway(gateways, server.port, clock, max_in_flight=3)
    devs = [device(prof, gw, u, f"u{u}") for u in range(1, 5)]
    await asyncio.gather(*(d.read(NOW) for d in devs))
    assert gw.connections == 3 and server.connections == 3

    await server.stop()
    got = await asyncio.gather(*(d.read(NOW) for d in devs), return_exceptions=True)
    assert all(isinstance(g, DeviceOffline) for g in got)
    assert gw.backoff.failures == 1  # one outage, however many connections noticed it

    await server.start()
    clock.advance(gw.backoff.remaining_s())
    got = await asyncio.gather(*(d.read(NOW) for d in devs))
    assert [values(g) for g in got] == [{"x": float(u)} for u in range(1, 5)]
    assert gw.backoff.failures == 0 and gw.connections == 3 and server.connections == 3


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


# ------------------------------------------------------------------- requests in flight


_in_flight = 0
_peak_in_flight = 0


async def _slow_reader(function_code: int, *_args: Any) -> ExcCodes | None:
    """Server-side hook: count the requests being served at once, each taking 50 ms."""
    global _in_flight, _peak_in_flight
    _in_flight += 1
    _peak_in_flight = max(_peak_in_flight, _in_flight)
    try:
        await asyncio.sleep(0.05)
    finally:
        _in_flight -= 1
    return None


@pytest.fixture
def in_flight_counter() -> None:
    global _in_flight, _peak_in_flight
    _in_flight = _peak_in_flight = 0


@pytest.mark.usefixtures("in_flight_counter")
@pytest.mark.parametrize("limit", [1, 2, 4])
async def test_requests_in_flight_never_exceed_the_endpoint_limit(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock, limit: int
) -> None:
    prof = profile("modbus", PROF_1)
    server = await modbus_server(*(unit(u, inputs=[u], action=_slow_reader) for u in range(1, 9)))
    gw = gateway(gateways, server.port, clock, max_in_flight=limit)
    devs = [device(prof, gw, u, f"u{u}") for u in range(1, 9)]

    for _ in range(2):
        got = await asyncio.gather(*(d.read(NOW) for d in devs))
        assert [values(g) for g in got] == [{"x": float(u)} for u in range(1, 9)]

    assert _peak_in_flight == limit  # overlap up to the limit, never beyond
    assert gw.connections == limit and server.connections == limit
    assert len(server.requests) == 16


@pytest.mark.usefixtures("in_flight_counter")
async def test_sequential_requests_reuse_one_connection_of_the_pool(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    prof = profile("modbus", PROF_1)
    server = await modbus_server(unit(1, inputs=[1], action=_slow_reader))
    gw = gateway(gateways, server.port, clock, max_in_flight=4)
    dev = device(prof, gw)
    for _ in range(3):
        await dev.read(NOW)
    assert gw.connections == 1 and server.connections == 1 and _peak_in_flight == 1


def test_factory_gives_a_gateway_the_largest_in_flight_limit_behind_it(
    demo_site: SiteConfig,
) -> None:
    def with_limit(d: Device, n: int) -> Device:
        return d.model_copy(update={"endpoint": d.endpoint.model_copy(update={"max_in_flight": n})})

    devices = [with_limit(d, 3) if d.id == "counter-east" else d for d in demo_site.devices]
    clients = build_clients(demo_site.model_copy(update={"devices": devices}))
    north, east, seg = clients["counter-north"], clients["counter-east"], clients["seg-lindenweg"]
    assert isinstance(north, ModbusDevice) and isinstance(east, ModbusDevice)
    assert isinstance(seg, ModbusDevice)
    assert north.gateway is east.gateway
    assert north.gateway.max_in_flight == 3
    assert seg.gateway.max_in_flight == 1  # the default: one connection, serialised
