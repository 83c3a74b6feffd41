"""Losing and regaining an OPC-UA server, against real asyncua servers on 127.0.0.1: while
backing off, a device keeps the class and cause of the failure that started it (FAULTY stays
FAULTY, OFFLINE stays OFFLINE), and a server killed and restarted on its port, with other
NodeIds behind the same browse paths, is read again with its subscription re-created once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from laterne.drivers.field.errors import DeviceOffline, DeviceRefused, DriverError
from laterne.drivers.field.opcua import LinkState, OpcUaDevice

from ..conftest import FakeClock, free_port
from ..opcua_plant import (
    NOW,
    POINTS,
    SCHOOL,
    SECURE_ONLY,
    Security,
    StartServer,
    certificates,
    make_device,
    start_server,
    state,
    until,
    values,
)

__all__ = ["certificates", "make_device", "start_server"]  # fixtures, used by name below


# ------------------------------------------------------------- one kind while backing off


async def test_refused_session_keeps_its_class_and_cause_while_backing_off(
    start_server: StartServer,
    make_device: Callable[..., OpcUaDevice],
    certificates: dict[str, Path],
    clock: FakeClock,
) -> None:
    security = Security(certificates["server_cert"], certificates["server_key"], SECURE_ONLY)
    plant = await start_server(security=security)
    dev = make_device(plant.url)  # security: none, against a secure-only server
    errors: list[DriverError] = []
    for i in range(6):
        with pytest.raises(DriverError) as info:
            await dev.read(NOW)
        errors.append(info.value)
        if i == 3:
            clock.advance(dev.backoff.remaining_s())  # one more real attempt in between
    assert {type(e) for e in errors} == {DeviceRefused}  # FAULTY every time, never OFFLINE
    assert all("No matching endpoints" in str(e) for e in errors)
    assert all("next attempt in" in str(e) for e in errors[1:4] + errors[5:])
    assert "offline" not in " ".join(str(e) for e in errors)
    assert dev.backoff.failures == 2


async def test_unreachable_server_keeps_offline_and_its_cause(
    make_device: Callable[..., OpcUaDevice],
) -> None:
    dev = make_device(f"opc.tcp://127.0.0.1:{free_port()}/nobody/")
    with pytest.raises(DeviceOffline) as first:
        await dev.read(NOW)
    cause = str(first.value)
    for _ in range(3):
        with pytest.raises(DeviceOffline) as later:
            await dev.read(NOW)
        assert type(later.value) is DeviceOffline
        assert str(later.value).startswith(cause + "; next attempt in")


# ------------------------------------------------------------------------- server restart


async def test_server_restart_recovers_subscription_without_loss_or_duplicates(
    start_server: StartServer, make_device: Callable[..., OpcUaDevice], clock: FakeClock
) -> None:
    old = await start_server()
    dev = make_device(old.url)
    assert values(await dev.read(NOW)) == SCHOOL
    assert dev.mode == "subscription"

    await old.stop()  # killed: its sessions and subscriptions die with it

    async def noticed() -> bool:
        return state(dev) is LinkState.OFFLINE

    await until(noticed, "the client notices the server is gone")
    with pytest.raises(DeviceOffline):
        await dev.read(NOW)
    assert dev.backoff.failures == 1

    # back on the same port, after a "firmware update": other NodeIds behind the same paths,
    # and other values
    new = await start_server(old.port, numeric_ids=True)
    await new.set("temp", 18.0)
    with pytest.raises(DeviceOffline, match="next attempt in"):  # still backing off
        await dev.read(NOW)
    clock.advance(dev.backoff.remaining_s())

    readings = await dev.read(NOW)
    assert values(readings) == {**SCHOOL, "temp_c": 18.0}  # every point GOOD, none lost
    assert state(dev) is LinkState.CONNECTED and dev.mode == "subscription"
    assert dev.subscriptions_created == 2
    assert new.subscriptions == 1 and new.items_created == len(POINTS)  # no duplicates
    new.reads.clear()

    await new.set("temp", 19.5)  # a change after the restart arrives by the new subscription

    async def arrived() -> bool:
        return (await dev.read(NOW))["temp_c"].value == 19.5

    await until(arrived, "a change after the restart")
    assert new.reads == []
    assert await dev.write("setpoint_c", 22.0) == 22.0  # re-resolved: the new node is written
    assert await new.nodes["setpoint"].read_value() == 22.0
