"""One Modbus gateway and the units behind it, against real pymodbus servers on 127.0.0.1:
exception responses that keep the connection, a unit that does not answer (or stops, and comes
back) without stalling its neighbours, a server killed mid-request and restarted, and the
per-endpoint limit on requests in flight."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pymodbus.constants import ExcCodes

from laterne.drivers.field.errors import DeviceOffline, DeviceTimeout, ExceptionResponse
from laterne.drivers.field.modbus import ModbusGateway

from ..conftest import FakeClock, ModbusServerFactory, profile, unit
from ..modbus_rig import NOW, TIMEOUT_S, device, gateway, gateways, values

__all__ = ["gateways"]  # a fixture, used by name below


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
