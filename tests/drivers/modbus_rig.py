"""What the Modbus driver tests against real pymodbus servers share: gateways on a fake clock
(closed after each test), devices on them, and the values of one read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from laterne.drivers.backoff import Backoff
from laterne.drivers.field.modbus import ModbusDevice, ModbusGateway
from laterne.models.site import DeviceProfile
from laterne.models.values import PointReading

from .conftest import FakeClock, modbus_device

__all__ = ["NOW", "TIMEOUT_S", "device", "gateway", "gateways", "values"]

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
