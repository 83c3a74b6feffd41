"""The Modbus driver against a real pymodbus server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymodbus.constants import ExcCodes

from laterne.drivers.backoff import Backoff
from laterne.drivers.field.base import DeviceClient
from laterne.drivers.field.errors import (
    DeviceOffline,
    DeviceTimeout,
    EncodeError,
    ExceptionResponse,
    NotWritable,
    OutOfBounds,
    WriteMismatch,
)
from laterne.drivers.field.modbus import ModbusDevice, ModbusGateway
from laterne.drivers.field.modbus_codec import ReadBlock
from laterne.models.site import DeviceProfile
from laterne.models.values import Quality

from ..conftest import FakeClock, ModbusServerFactory, free_port, modbus_device, profile, unit

NOW = datetime(2026, 1, 15, 22, 0, tzinfo=UTC)
TIMEOUT_S = 0.5

# every data type and order, at golden register values (see test_modbus_codec.GOLDEN)
ALL_TYPES_HOLDING = [
    0xBEEF,  # 0 u16
    0xFFFE,  # 1 i16 -2
    0x1234, 0x5678,  # 2 u32 big
    0x5678, 0x1234,  # 4 u32 little word order
    0xFFFF, 0xFFFE,  # 6 i32 -2
    0x0000, 0x0001, 0x0000, 0x0000,  # 8 u64 2**32
    0xFFFF, 0xFFFF, 0xFFFF, 0xFF85,  # 12 i64 -123
    0x42F6, 0xE979,  # 16 f32 123.456
    0xE979, 0x42F6,  # 18 f32 little word order
    0xF642, 0x79E9,  # 20 f32 byte-swapped
    0x3FF8, 0, 0, 0,  # 22 f64 1.5
    0, 0, 0, 0xF83F,  # 26 f64 little/little
    123,  # 30 dim_pct, 0.1 %
    130,  # 31 temp_c = raw * 0.5 - 40
    5000,  # 32 power_w, beyond its max
]  # fmt: skip
ALL_TYPES_PROFILE: dict[str, dict[str, Any]] = {
    "u16": {"table": "holding", "address": 0, "type": "u16"},
    "i16": {"table": "holding", "address": 1, "type": "i16"},
    "u32_big": {"table": "holding", "address": 2, "type": "u32"},
    "u32_little": {"table": "holding", "address": 4, "type": "u32", "word_order": "little"},
    "i32": {"table": "holding", "address": 6, "type": "i32"},
    "u64": {"table": "holding", "address": 8, "type": "u64"},
    "i64": {"table": "holding", "address": 12, "type": "i64"},
    "f32_big": {"table": "holding", "address": 16, "type": "f32"},
    "f32_little": {"table": "holding", "address": 18, "type": "f32", "word_order": "little"},
    "f32_swapped": {"table": "holding", "address": 20, "type": "f32", "byte_order": "little"},
    "f64_big": {"table": "holding", "address": 22, "type": "f64"},
    "f64_little": {
        "table": "holding", "address": 26, "type": "f64",
        "word_order": "little", "byte_order": "little",
    },
    "dim_pct": {
        "table": "holding", "address": 30, "type": "u16", "scale": 0.1,
        "writable": True, "min": 0, "max": 100,
    },
    "temp_c": {"table": "holding", "address": 31, "type": "i16", "scale": 0.5, "offset": -40},
    "power_w": {"table": "holding", "address": 32, "type": "u16", "min": 0, "max": 1000,
                "unit": "W"},
    "count_veh": {"table": "input", "address": 0, "type": "u32", "kind": "counter"},
    "status": {"table": "input", "address": 2, "type": "u16"},
    "relay": {"table": "coil", "address": 0, "type": "bool", "writable": True, "min": 0, "max": 1},
    "lamp_fault": {"table": "coil", "address": 2, "type": "bool"},
    "door_open": {"table": "discrete", "address": 1, "type": "bool"},
}  # fmt: skip
EXPECTED = {
    "u16": 48879.0,
    "i16": -2.0,
    "u32_big": float(0x12345678),
    "u32_little": float(0x12345678),
    "i32": -2.0,
    "u64": float(2**32),
    "i64": -123.0,
    "f32_big": 123.45600128173828,
    "f32_little": 123.45600128173828,
    "f32_swapped": 123.45600128173828,
    "f64_big": 1.5,
    "f64_little": 1.5,
    "dim_pct": 12.3,
    "temp_c": 25.0,
    "count_veh": 42.0,
    "status": 7.0,
    "relay": 1.0,
    "lamp_fault": 1.0,
    "door_open": 1.0,
}


def all_types_unit(unit_id: int = 1, **kw: Any) -> Any:
    return unit(
        unit_id,
        holding=ALL_TYPES_HOLDING,
        inputs=[0, 42, 7],
        coils=[True, False, True],
        discrete=[False, True],
        **kw,
    )


@pytest.fixture
def all_types() -> DeviceProfile:
    return profile("modbus", ALL_TYPES_PROFILE)


@pytest.fixture
async def gateways(clock: FakeClock) -> AsyncIterator[list[ModbusGateway]]:
    """Gateways made by the test, closed afterwards."""
    made: list[ModbusGateway] = []
    yield made
    for gw in made:
        await gw.close()


def gateway(made: list[ModbusGateway], port: int, clock: FakeClock) -> ModbusGateway:
    gw = ModbusGateway(
        "127.0.0.1", port, timeout_s=TIMEOUT_S, backoff=Backoff(jitter=0.0, monotonic=clock)
    )
    made.append(gw)
    return gw


# ------------------------------------------------------------------------------- reads


def all_types_device(
    profile: DeviceProfile, port: int, made: list[ModbusGateway], clock: FakeClock
) -> ModbusDevice:
    """Unit 1 of the all-types profile on ``port``, through a fresh gateway."""
    return ModbusDevice(modbus_device(profile, port), profile, gateway(made, port, clock))


async def test_reads_every_type_in_merged_requests(
    modbus_server: ModbusServerFactory,
    all_types: DeviceProfile,
    gateways: list[ModbusGateway],
    clock: FakeClock,
) -> None:
    server = await modbus_server(all_types_unit())
    dev = all_types_device(all_types, server.port, gateways, clock)
    assert isinstance(dev, DeviceClient)
    assert dev.device_id == "dev"
    assert dev.plan == [
        ReadBlock("holding", 0, 33, tuple(ALL_TYPES_PROFILE)[:15]),
        ReadBlock("input", 0, 3, ("count_veh", "status")),
        ReadBlock("coil", 0, 3, ("relay", "lamp_fault")),
        ReadBlock("discrete", 1, 1, ("door_open",)),
    ]

    readings = await dev.read(NOW)

    assert list(readings) == list(ALL_TYPES_PROFILE)  # every point, in profile order
    for name, want in EXPECTED.items():
        r = readings[name]
        assert (r.device_id, r.point, r.quality, r.ts, r.error) == (
            "dev",
            name,
            Quality.GOOD,
            NOW,
            "",
        ), name
        assert r.value == pytest.approx(want, rel=1e-15), name
    assert server.requests == [(1, 3), (1, 4), (1, 1), (1, 2)]  # one request per table


async def test_value_outside_its_range_is_a_faulty_reading(
    modbus_server: ModbusServerFactory,
    all_types: DeviceProfile,
    gateways: list[ModbusGateway],
    clock: FakeClock,
) -> None:
    server = await modbus_server(all_types_unit())
    dev = all_types_device(all_types, server.port, gateways, clock)
    power = (await dev.read(NOW))["power_w"]
    assert power.quality is Quality.FAULTY
    assert math.isnan(power.value)
    assert "5000.0 W is outside [0.0, 1000.0]" in power.error


async def test_nan_float_is_a_faulty_reading(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    prof = profile("modbus", {
        "temp_c": {"table": "input", "address": 0, "type": "f32"},
        "ok": {"table": "input", "address": 2, "type": "u16"},
    })  # fmt: skip
    server = await modbus_server(unit(1, inputs=[0x7FC0, 0x0000, 5]))
    gw = gateway(gateways, server.port, clock)
    dev = ModbusDevice(modbus_device(prof, server.port), prof, gw)
    readings = await dev.read(NOW)
    assert readings["temp_c"].quality is Quality.FAULTY
    assert "not a number" in readings["temp_c"].error
    assert readings["ok"].value == 5.0


async def test_two_units_behind_one_port_share_one_connection(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    prof = profile("modbus", {
        "lane1_veh": {"table": "input", "address": 0, "type": "u32", "kind": "counter"},
        "lane2_veh": {"table": "input", "address": 2, "type": "u32", "kind": "counter"},
    })  # fmt: skip
    server = await modbus_server(unit(1, inputs=[0, 11, 0, 12]), unit(2, inputs=[0, 21, 1, 0]))
    gw = gateway(gateways, server.port, clock)
    north = ModbusDevice(modbus_device(prof, server.port, 1, "north"), prof, gw)
    east = ModbusDevice(modbus_device(prof, server.port, 2, "east"), prof, gw)

    for _ in range(3):  # concurrently: the gateway serialises them on one connection
        r_north, r_east = await asyncio.gather(north.read(NOW), east.read(NOW))
        assert [r.value for r in r_north.values()] == [11.0, 12.0]
        assert [r.value for r in r_east.values()] == [21.0, 65536.0]
        assert {r.device_id for r in r_east.values()} == {"east"}

    assert server.connections == 1
    assert sorted(set(server.requests)) == [(1, 4), (2, 4)]
    assert len(server.requests) == 6


async def test_unmapped_address_raises_exception_response(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    prof = profile("modbus", {"x": {"table": "holding", "address": 200, "type": "u16"}})
    server = await modbus_server(unit(1, holding=[1, 2, 3]))
    gw = gateway(gateways, server.port, clock)
    dev = ModbusDevice(modbus_device(prof, server.port), prof, gw)
    with pytest.raises(ExceptionResponse) as info:
        await dev.read(NOW)
    assert info.value.code == 2
    assert info.value.name == "ILLEGAL DATA ADDRESS"
    assert "unit 1" in str(info.value)
    assert gw.connected  # the device answered: the connection stays
    assert gw.backoff.failures == 0


async def test_device_refusing_reads_through_a_gap_is_replanned(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    prof = profile("modbus", {
        "a": {"table": "holding", "address": 0, "type": "u16"},
        "b": {"table": "holding", "address": 1, "type": "u16"},
        "c": {"table": "holding", "address": 5, "type": "u16"},
    })  # fmt: skip
    server = await modbus_server(unit(1, holding_blocks=[(0, [10, 11]), (5, [15])]))
    gw = gateway(gateways, server.port, clock)
    dev = ModbusDevice(modbus_device(prof, server.port), prof, gw)
    assert dev.plan == [ReadBlock("holding", 0, 6, ("a", "b", "c"))]

    readings = await dev.read(NOW)

    assert [r.value for r in readings.values()] == [10.0, 11.0, 15.0]
    assert dev.plan == [ReadBlock("holding", 0, 2, ("a", "b")), ReadBlock("holding", 5, 1, ("c",))]
    server.requests.clear()
    await dev.read(NOW)
    assert len(server.requests) == 2  # the gap-free plan is kept


async def test_naive_time_is_refused(
    modbus_server: ModbusServerFactory,
    all_types: DeviceProfile,
    gateways: list[ModbusGateway],
    clock: FakeClock,
) -> None:
    server = await modbus_server(all_types_unit())
    dev = all_types_device(all_types, server.port, gateways, clock)
    with pytest.raises(ValueError, match="timezone-aware"):
        await dev.read(datetime(2026, 1, 1))
    assert server.requests == []


# ------------------------------------------------------------------------------ writes


async def test_write_register_round_trip(
    modbus_server: ModbusServerFactory,
    all_types: DeviceProfile,
    gateways: list[ModbusGateway],
    clock: FakeClock,
) -> None:
    server = await modbus_server(all_types_unit())
    dev = all_types_device(all_types, server.port, gateways, clock)
    got = await dev.write("dim_pct", 42.5)
    assert got == pytest.approx(42.5)
    assert await server.values(1, "holding", 30) == [425]
    assert server.requests == [(1, 16), (1, 3)]  # write multiple registers, then read back
    got = await dev.write("dim_pct", 42.57)  # rounds to the register's 0.1 % step
    assert got == pytest.approx(42.6)
    assert (await dev.read(NOW))["dim_pct"].value == pytest.approx(42.6)


async def test_write_coil_round_trip(
    modbus_server: ModbusServerFactory,
    all_types: DeviceProfile,
    gateways: list[ModbusGateway],
    clock: FakeClock,
) -> None:
    server = await modbus_server(all_types_unit())
    dev = all_types_device(all_types, server.port, gateways, clock)
    assert await dev.write("relay", 0) == 0.0
    assert await server.values(1, "coil", 0, 3) == [0, 0, 1]  # neighbours untouched
    assert server.requests == [(1, 5), (1, 1)]  # write single coil, then read back
    assert await dev.write("relay", 1) == 1.0
    assert await server.values(1, "coil", 0, 3) == [1, 0, 1]


async def test_write_float_round_trip_in_little_word_order(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    prof = profile("modbus", {
        "setpoint_c": {"table": "holding", "address": 0, "type": "f32", "word_order": "little",
                       "writable": True, "min": 5, "max": 30},
    })  # fmt: skip
    server = await modbus_server(unit(1, holding=[0, 0]))
    gw = gateway(gateways, server.port, clock)
    dev = ModbusDevice(modbus_device(prof, server.port), prof, gw)
    got = await dev.write("setpoint_c", 21.3)
    assert got == pytest.approx(21.3, rel=1e-7)
    assert await server.values(1, "holding", 0, 2) == [0x6666, 0x41AA]  # 21.3f = 0x41AA6666


async def test_out_of_bounds_write_is_refused_and_nothing_sent(
    modbus_server: ModbusServerFactory,
    all_types: DeviceProfile,
    gateways: list[ModbusGateway],
    clock: FakeClock,
) -> None:
    server = await modbus_server(all_types_unit())
    dev = all_types_device(all_types, server.port, gateways, clock)
    with pytest.raises(OutOfBounds) as info:
        await dev.write("dim_pct", 100.1)
    assert (info.value.point, info.value.value, info.value.lo, info.value.hi) == (
        "dim_pct",
        100.1,
        0,
        100,
    )
    with pytest.raises(OutOfBounds):
        await dev.write("dim_pct", -0.5)
    with pytest.raises(OutOfBounds):
        await dev.write("dim_pct", math.nan)
    with pytest.raises(NotWritable, match="read-only"):
        await dev.write("temp_c", 20)
    with pytest.raises(NotWritable, match="no point"):
        await dev.write("nonexistent", 1)
    assert server.requests == []  # nothing reached the device
    assert await server.values(1, "holding", 30) == [123]


async def test_unencodable_write_is_refused_and_nothing_sent(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    prof = profile("modbus", {  # bounds wider than the register can hold
        "level": {"table": "holding", "address": 0, "type": "u16", "writable": True,
                  "min": 0, "max": 100000},
    })  # fmt: skip
    server = await modbus_server(unit(1, holding=[5]))
    gw = gateway(gateways, server.port, clock)
    dev = ModbusDevice(modbus_device(prof, server.port), prof, gw)
    with pytest.raises(EncodeError):
        await dev.write("level", 70000)
    assert server.requests == []


async def test_write_mismatch_is_detected(
    modbus_server: ModbusServerFactory,
    all_types: DeviceProfile,
    gateways: list[ModbusGateway],
    clock: FakeClock,
) -> None:
    async def ignore_writes(
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """A device that acknowledges writes and keeps its old values."""
        if set_values is not None:
            offset = address - start_address
            set_values[:] = registers[offset : offset + count]  # type: ignore[assignment]
        return None

    server = await modbus_server(all_types_unit(action=ignore_writes))
    dev = all_types_device(all_types, server.port, gateways, clock)
    with pytest.raises(WriteMismatch) as info:
        await dev.write("dim_pct", 50)
    assert info.value.point == "dim_pct"
    assert info.value.wanted == 50
    assert info.value.got == pytest.approx(12.3)
    assert server.requests == [(1, 16), (1, 3)]


# ------------------------------------------------------------------- failure and recovery


async def test_server_down_is_offline_at_once_and_recovers_after_backoff(
    modbus_server: ModbusServerFactory,
    all_types: DeviceProfile,
    gateways: list[ModbusGateway],
    clock: FakeClock,
) -> None:
    server = await modbus_server(all_types_unit())
    gw = gateway(gateways, server.port, clock)
    dev = ModbusDevice(modbus_device(all_types, server.port), all_types, gw)
    await dev.read(NOW)

    await server.stop()
    t0 = time.monotonic()
    with pytest.raises(DeviceOffline):
        await dev.read(NOW)
    assert time.monotonic() - t0 < TIMEOUT_S  # refused, not timed out
    assert gw.backoff.failures == 1

    await server.start()  # back on the same port, but we are still backing off
    with pytest.raises(DeviceOffline, match="next attempt in"):
        await dev.read(NOW)
    with pytest.raises(DeviceOffline):
        await dev.write("dim_pct", 50)
    assert gw.backoff.failures == 1  # backing off is not another failure
    n_before = len(server.requests)
    assert server.connections == 0  # nothing touched the network

    clock.advance(gw.backoff.remaining_s())
    readings = await dev.read(NOW)
    assert readings["u16"].value == 48879.0
    assert gw.backoff.failures == 0
    assert len(server.requests) == n_before + 4


async def test_backoff_grows_while_the_server_stays_down(
    all_types: DeviceProfile, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    port = free_port()  # nothing listens here
    gw = gateway(gateways, port, clock)
    dev = ModbusDevice(modbus_device(all_types, port), all_types, gw)
    delays = []
    for _ in range(4):
        with pytest.raises(DeviceOffline):
            await dev.read(NOW)
        delays.append(gw.backoff.remaining_s())
        clock.advance(delays[-1])
    assert delays == [0.5, 1.0, 2.0, 4.0]


async def test_silent_device_times_out_without_backoff(
    all_types: DeviceProfile, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    accepted = 0

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        while await reader.read(256):  # accept requests, never answer
            pass
        writer.close()

    silent = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    timeout_s = 0.2
    try:
        gw = ModbusGateway("127.0.0.1", port, timeout_s=timeout_s, monotonic=clock)
        gateways.append(gw)
        dev = ModbusDevice(modbus_device(all_types, port), all_types, gw)
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeout):
            await dev.read(NOW)
        elapsed = time.monotonic() - t0
        assert timeout_s * 0.9 <= elapsed < timeout_s * 3
        assert gw.backoff.failures == 0  # a silent unit must not take its neighbours offline
        assert gw.connected
        assert dev.backoff.failures == 1  # the unit backs off on its own

        t0 = time.monotonic()
        with pytest.raises(DeviceOffline, match="unit 1: no answer to 1 read"):
            await dev.read(NOW)  # still backing off: fails at once, nothing sent
        assert time.monotonic() - t0 < timeout_s / 2

        for _ in range(2):
            clock.advance(dev.backoff.remaining_s())
            with pytest.raises(DeviceTimeout):
                await dev.read(NOW)
        assert not gw.connected  # three in a row: presumed half-open, dropped (no backoff)
        assert gw.backoff.failures == 0
        clock.advance(dev.backoff.remaining_s())
        with pytest.raises(DeviceTimeout):
            await dev.read(NOW)
        assert accepted == 2  # reconnected at once
    finally:
        silent.close()
        await silent.wait_closed()


async def test_devices_share_and_release_the_gateway(
    modbus_server: ModbusServerFactory, all_types: DeviceProfile, clock: FakeClock
) -> None:
    server = await modbus_server(all_types_unit(1), all_types_unit(2))
    gw = ModbusGateway("127.0.0.1", server.port, timeout_s=TIMEOUT_S, monotonic=clock)
    a = ModbusDevice(modbus_device(all_types, server.port, 1, "a"), all_types, gw)
    b = ModbusDevice(modbus_device(all_types, server.port, 2, "b"), all_types, gw)
    await a.read(NOW)
    await b.read(NOW)
    await a.close()
    assert gw.connected  # b still uses it
    await b.close()
    assert not gw.connected
    await a.read(NOW)  # a closed client reconnects on use
    assert gw.connected
    await a.close()
    assert not gw.connected


def test_device_must_match_its_gateway(all_types: DeviceProfile) -> None:
    gw = ModbusGateway("127.0.0.1", 1502, timeout_s=1)
    with pytest.raises(ValueError, match="not at gateway"):
        ModbusDevice(modbus_device(all_types, 1503), all_types, gw)
    with pytest.raises(TypeError, match="protocol"):
        ModbusDevice(modbus_device(all_types, 1502), profile("opcua", {"x": {"node": "i=1"}}), gw)
    with pytest.raises(ValueError):
        ModbusGateway("127.0.0.1", 502, timeout_s=0)
    with pytest.raises(ValueError):
        ModbusGateway("127.0.0.1", 502, timeout_s=1, max_in_flight=0)
