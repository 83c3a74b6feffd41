"""The OPC-UA driver against a real asyncua server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from asyncua import ua

from laterne.drivers.backoff import Backoff
from laterne.drivers.field.base import DeviceClient
from laterne.drivers.field.errors import (
    BadStatus,
    DeviceOffline,
    DeviceTimeout,
    EncodeError,
    NotWritable,
    OutOfBounds,
)
from laterne.drivers.field.opcua import LinkState, OpcUaDevice, ua_raw_from_value, value_from_ua
from laterne.models.site import Device, DeviceProfile, PointSpec
from laterne.models.values import Quality

from ..conftest import FakeClock, OpcUaServerFactory, OpcUaServerHandle, free_port, profile

NOW = datetime(2026, 1, 15, 22, 0, tzinfo=UTC)
TIMEOUT_S = 0.5

VT = ua.VariantType
VARIABLES: dict[str, tuple[Any, ua.VariantType, bool]] = {
    "school.outdoor.temperature": (-3.25, VT.Double, False),
    "school.classrooms.setpoint": (19.0, VT.Float, True),
    "school.gym.setpoint": (17.0, VT.Double, True),
    "school.valve.position": (250, VT.UInt16, True),  # 0.1 % steps
    "school.pump.on": (True, VT.Boolean, True),
    "school.heating.power": (900.0, VT.Double, False),  # beyond its max
    "school.name": ("Grundschule", VT.String, False),
}
POINTS: dict[str, dict[str, Any]] = {
    "outdoor_temp_c": {"node": "ns=2;s=school.outdoor.temperature", "type": "f64",
                       "min": -40, "max": 50},
    "classrooms_setpoint_c": {"node": "ns=2;s=school.classrooms.setpoint", "type": "f64",
                              "writable": True, "min": 10, "max": 26},
    "gym_setpoint_c": {"node": "ns=2;s=school.gym.setpoint", "type": "f64",
                       "writable": True, "min": 10, "max": 26},
    "valve_pct": {"node": "ns=2;s=school.valve.position", "type": "u16", "scale": 0.1,
                  "writable": True, "min": 0, "max": 100},
    "pump_on": {"node": "ns=2;s=school.pump.on", "type": "bool", "writable": True,
                "min": 0, "max": 1},
    "heating_power_kw": {"node": "ns=2;s=school.heating.power", "type": "f64", "min": 0,
                         "max": 500, "unit": "kW"},
    "name": {"node": "ns=2;s=school.name", "type": "f64"},
    "missing": {"node": "ns=2;s=school.no.such.node", "type": "f64"},
}  # fmt: skip


def state(dev: OpcUaDevice) -> LinkState:
    """The state, read afresh (keeps mypy from narrowing the property across awaits)."""
    return dev.state


def opcua_device(prof: DeviceProfile, url: str) -> Device:
    return Device.model_validate(
        {"id": "school", "profile": "p", "endpoint": {"url": url}, "timeout_s": TIMEOUT_S}
    )


@pytest.fixture
async def bms(opcua_server: OpcUaServerFactory) -> OpcUaServerHandle:
    return await opcua_server(VARIABLES)


@pytest.fixture
async def school(bms: OpcUaServerHandle, clock: FakeClock) -> AsyncIterator[OpcUaDevice]:
    prof = profile("opcua", POINTS)
    dev = OpcUaDevice(
        opcua_device(prof, bms.url), prof, backoff=Backoff(jitter=0.0, monotonic=clock)
    )
    yield dev
    await dev.close()


async def test_reads_every_node_in_one_call(school: OpcUaDevice) -> None:
    assert isinstance(school, DeviceClient)
    assert state(school) is LinkState.DISCONNECTED
    readings = await school.read(NOW)
    assert state(school) is LinkState.CONNECTED
    assert list(readings) == list(POINTS)
    good = {n: r.value for n, r in readings.items() if r.quality is Quality.GOOD}
    assert good == {
        "outdoor_temp_c": -3.25,
        "classrooms_setpoint_c": 19.0,
        "gym_setpoint_c": 17.0,
        "valve_pct": 25.0,
        "pump_on": 1.0,
    }
    for r in readings.values():
        assert (r.device_id, r.ts) == ("school", NOW)

    power = readings["heating_power_kw"]
    assert power.quality is Quality.FAULTY and math.isnan(power.value)
    assert "900.0 kW is outside [0.0, 500.0]" in power.error
    assert readings["name"].quality is Quality.FAULTY
    assert "is not a number" in readings["name"].error
    assert readings["missing"].quality is Quality.FAULTY
    assert "BadNodeIdUnknown" in readings["missing"].error


async def test_float_node_is_written_as_float(school: OpcUaDevice, bms: OpcUaServerHandle) -> None:
    got = await school.write("classrooms_setpoint_c", 21.3)
    f32 = struct.unpack("<f", struct.pack("<f", 21.3))[0]
    assert got == f32  # the Float read back, not 21.3 exactly
    assert await bms.variant_type("school.classrooms.setpoint") is VT.Float
    assert await bms.value("school.classrooms.setpoint") == f32


async def test_double_node_is_written_as_double(
    school: OpcUaDevice, bms: OpcUaServerHandle
) -> None:
    got = await school.write("gym_setpoint_c", 18.123456789)
    assert got == 18.123456789
    assert await bms.variant_type("school.gym.setpoint") is VT.Double
    assert await bms.value("school.gym.setpoint") == 18.123456789


async def test_integer_and_boolean_nodes_keep_their_types(
    school: OpcUaDevice, bms: OpcUaServerHandle
) -> None:
    assert await school.write("valve_pct", 42.37) == pytest.approx(42.4)
    assert await bms.value("school.valve.position") == 424
    assert await bms.variant_type("school.valve.position") is VT.UInt16
    assert await school.write("pump_on", 0) == 0.0
    assert await bms.value("school.pump.on") is False


async def test_out_of_bounds_and_read_only_writes_are_refused(
    school: OpcUaDevice, bms: OpcUaServerHandle
) -> None:
    with pytest.raises(OutOfBounds) as info:
        await school.write("classrooms_setpoint_c", 30)
    assert (info.value.lo, info.value.hi) == (10, 26)
    with pytest.raises(OutOfBounds):
        await school.write("gym_setpoint_c", math.inf)
    with pytest.raises(NotWritable):
        await school.write("outdoor_temp_c", 5)
    assert state(school) is LinkState.DISCONNECTED  # refused before even connecting
    assert await bms.value("school.classrooms.setpoint") == 19.0


async def test_server_refusing_a_write_raises_bad_status(
    opcua_server: OpcUaServerFactory, clock: FakeClock
) -> None:
    server = await opcua_server({"x.sp": (20.0, VT.Double, False)})  # read-only on the server
    prof = profile("opcua", {
        "sp": {"node": "ns=2;s=x.sp", "writable": True, "min": 0, "max": 50},
    })  # fmt: skip
    dev = OpcUaDevice(opcua_device(prof, server.url), prof, monotonic=clock)
    try:
        with pytest.raises(BadStatus) as info:
            await dev.write("sp", 21)
        assert info.value.name == "BadUserAccessDenied"
        assert state(dev) is LinkState.CONNECTED  # the server answered
    finally:
        await dev.close()


async def test_server_stop_is_offline_and_restart_recovers(
    school: OpcUaDevice, bms: OpcUaServerHandle, clock: FakeClock
) -> None:
    await school.read(NOW)
    await bms.stop()

    t0 = time.monotonic()
    with pytest.raises(DeviceOffline):
        await school.read(NOW)
    assert time.monotonic() - t0 < 2 * TIMEOUT_S
    assert state(school) is LinkState.OFFLINE
    with pytest.raises(DeviceOffline, match="next attempt in"):  # backing off: no network
        await school.write("gym_setpoint_c", 20)

    await bms.start()
    with pytest.raises(DeviceOffline, match="next attempt in"):
        await school.read(NOW)
    clock.advance(school.backoff.remaining_s())

    readings = await school.read(NOW)
    assert readings["outdoor_temp_c"].value == -3.25
    assert state(school) is LinkState.CONNECTED
    assert school.backoff.failures == 0
    assert await school.write("gym_setpoint_c", 20) == 20.0


async def test_nothing_listening_is_offline(clock: FakeClock) -> None:
    prof = profile("opcua", {"t": {"node": "ns=2;s=t"}})
    url = f"opc.tcp://127.0.0.1:{free_port()}/"
    dev = OpcUaDevice(opcua_device(prof, url), prof, monotonic=clock)
    t0 = time.monotonic()
    with pytest.raises(DeviceOffline):
        await dev.read(NOW)
    assert time.monotonic() - t0 < 2 * TIMEOUT_S
    assert dev.backoff.failures == 1
    await dev.close()
    assert state(dev) is LinkState.DISCONNECTED


async def test_silent_server_times_out(clock: FakeClock) -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(256):  # accept, never answer (not even Hello)
            pass
        writer.close()

    silent = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    prof = profile("opcua", {"t": {"node": "ns=2;s=t"}})
    dev = OpcUaDevice(opcua_device(prof, f"opc.tcp://127.0.0.1:{port}/"), prof, monotonic=clock)
    try:
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeout):
            await dev.read(NOW)
        assert time.monotonic() - t0 < 3 * TIMEOUT_S
        assert state(dev) is LinkState.OFFLINE
        assert dev.backoff.failures == 1
    finally:
        await dev.close()
        silent.close()
        await silent.wait_closed()


def test_constructor_checks_endpoint_protocol_and_node_ids() -> None:
    prof = profile("opcua", {"t": {"node": "ns=2;s=t"}})
    modbus = Device.model_validate(
        {"id": "m", "profile": "p", "endpoint": {"host": "127.0.0.1", "port": 502}}
    )
    with pytest.raises(TypeError, match="OPC-UA endpoint"):
        OpcUaDevice(modbus, prof)
    url = "opc.tcp://127.0.0.1:4840/"
    with pytest.raises(TypeError, match="protocol"):
        OpcUaDevice(
            opcua_device(prof, url), profile("modbus", {"x": {"table": "holding", "address": 0}})
        )
    with pytest.raises(Exception, match="ns=x"):  # asyncua's parse error, at construction
        OpcUaDevice(opcua_device(prof, url), profile("opcua", {"t": {"node": "ns=x;q"}}))


# -------------------------------------------------------------------------- pure codec


def spec(**kw: Any) -> PointSpec:
    return PointSpec.model_validate({"node": "ns=2;s=x", **kw})


@pytest.mark.parametrize(
    ("value", "kw", "vt", "raw"),
    [
        (21.5, {}, VT.Double, 21.5),
        (21.5, {}, VT.Float, 21.5),
        (42.37, {"scale": 0.1}, VT.UInt16, 424),
        (-2.5, {}, VT.Int16, -3),
        (-10.0, {"scale": 0.5, "offset": -40}, VT.SByte, 60),
        (1, {}, VT.Boolean, True),
        (0, {}, VT.Boolean, False),
    ],
)
def test_raw_from_value(value: float, kw: dict[str, Any], vt: ua.VariantType, raw: Any) -> None:
    got = ua_raw_from_value(value, spec(**kw), vt)
    assert got == raw and type(got) is type(raw)


@pytest.mark.parametrize(
    ("value", "vt"),
    [
        (256, VT.Byte),
        (128, VT.SByte),
        (-1, VT.UInt32),
        (2, VT.Boolean),
        (4e38, VT.Float),
        (math.nan, VT.Double),
        (1, VT.String),
    ],
)
def test_raw_from_value_refuses_unrepresentable(value: float, vt: ua.VariantType) -> None:
    with pytest.raises(EncodeError):
        ua_raw_from_value(value, spec(), vt)


def test_value_from_ua() -> None:
    assert value_from_ua(True, spec()) == 1.0
    assert value_from_ua(424, spec(scale=0.1)) == pytest.approx(42.4)
    assert value_from_ua(130, spec(scale=0.5, offset=-40)) == 25.0
    for bad in ("x", None, [1.0], b"\x01"):
        with pytest.raises(Exception, match="not a number"):
            value_from_ua(bad, spec())
