"""``write_function`` of a Modbus profile, against real pymodbus servers on 127.0.0.1.

Each server refuses one of the two register-write function codes with ILLEGAL FUNCTION (0x01),
as a controller that implements only the other does, so the function code the driver sends is
checked by what the server accepts, not only by what it records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymodbus.constants import ExcCodes

from laterne.drivers.backoff import Backoff
from laterne.drivers.field.errors import ExceptionResponse
from laterne.drivers.field.modbus import ModbusDevice, ModbusGateway
from laterne.models.site import DeviceProfile

from ..conftest import FakeClock, ModbusServerFactory, modbus_device, unit

FC_WRITE_COIL = 5
FC_WRITE_SINGLE = 6
FC_WRITE_MULTIPLE = 16
FC_READ_HOLDING = 3
FC_READ_COILS = 1

POINTS: dict[str, dict[str, Any]] = {
    "dim_pct": {
        "table": "holding", "address": 0, "type": "u16", "scale": 0.1,
        "writable": True, "min": 0, "max": 100,
    },
    "offset_c": {
        "table": "holding", "address": 1, "type": "i16", "scale": 0.1,
        "writable": True, "min": -10, "max": 10,
    },
    "relay": {"table": "coil", "address": 0, "type": "bool", "writable": True, "min": 0, "max": 1},
}  # fmt: skip


def refusing(function_code: int) -> Any:
    """A pymodbus request hook answering ``function_code`` with ILLEGAL FUNCTION."""

    async def action(fc: int, *_args: Any) -> ExcCodes | None:
        return ExcCodes.ILLEGAL_FUNCTION if fc == function_code else None

    return action


def write_profile(write_function: str | None) -> DeviceProfile:
    data: dict[str, Any] = {"protocol": "modbus", "points": POINTS}
    if write_function is not None:
        data["write_function"] = write_function
    return DeviceProfile.model_validate(data)


@pytest.fixture
async def gateways() -> AsyncIterator[list[ModbusGateway]]:
    made: list[ModbusGateway] = []
    yield made
    for gw in made:
        await gw.close()


def device(
    prof: DeviceProfile, port: int, gateways: list[ModbusGateway], clock: FakeClock
) -> ModbusDevice:
    gw = ModbusGateway(
        "127.0.0.1", port, timeout_s=0.5, backoff=Backoff(jitter=0.0, monotonic=clock)
    )
    gateways.append(gw)
    return ModbusDevice(modbus_device(prof, port), prof, gw)


def test_default_is_multiple() -> None:
    assert write_profile(None).write_function == "multiple"


async def test_multiple_sends_fc16_and_fails_where_only_fc06_is_implemented(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    server = await modbus_server(
        unit(1, holding=[500, 0], coils=[False], action=refusing(FC_WRITE_MULTIPLE))
    )
    dev = device(write_profile("multiple"), server.port, gateways, clock)
    with pytest.raises(ExceptionResponse) as info:
        await dev.write("dim_pct", 42.5)
    assert info.value.code == ExcCodes.ILLEGAL_FUNCTION
    assert server.requests == [(1, FC_WRITE_MULTIPLE)]
    assert await server.values(1, "holding", 0) == [500]  # nothing written


async def test_single_sends_fc06_where_only_fc06_is_implemented(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    server = await modbus_server(
        unit(1, holding=[500, 0], coils=[False], action=refusing(FC_WRITE_MULTIPLE))
    )
    dev = device(write_profile("single"), server.port, gateways, clock)
    assert await dev.write("dim_pct", 42.5) == pytest.approx(42.5)
    assert await dev.write("offset_c", -1.5) == pytest.approx(-1.5)  # i16 as one register
    assert await server.values(1, "holding", 0, 2) == [425, 0x10000 - 15]
    assert server.requests == [
        (1, FC_WRITE_SINGLE),
        (1, FC_READ_HOLDING),
        (1, FC_WRITE_SINGLE),
        (1, FC_READ_HOLDING),
    ]


async def test_single_fails_and_multiple_succeeds_where_only_fc16_is_implemented(
    modbus_server: ModbusServerFactory, gateways: list[ModbusGateway], clock: FakeClock
) -> None:
    server = await modbus_server(
        unit(1, holding=[500, 0], coils=[False], action=refusing(FC_WRITE_SINGLE))
    )
    single = device(write_profile("single"), server.port, gateways, clock)
    with pytest.raises(ExceptionResponse) as info:
        await single.write("dim_pct", 10.0)
    assert info.value.code == ExcCodes.ILLEGAL_FUNCTION
    multiple = device(write_profile("multiple"), server.port, gateways, clock)
    assert await multiple.write("dim_pct", 10.0) == pytest.approx(10.0)
    assert await server.values(1, "holding", 0) == [100]
    assert server.requests == [(1, FC_WRITE_SINGLE), (1, FC_WRITE_MULTIPLE), (1, FC_READ_HOLDING)]


@pytest.mark.parametrize("write_function", ["single", "multiple"])
async def test_coils_use_fc05_either_way(
    modbus_server: ModbusServerFactory,
    gateways: list[ModbusGateway],
    clock: FakeClock,
    write_function: str,
) -> None:
    server = await modbus_server(unit(1, holding=[0, 0], coils=[False]))
    dev = device(write_profile(write_function), server.port, gateways, clock)
    assert await dev.write("relay", 1) == 1.0
    assert await server.values(1, "coil", 0) == [1]
    assert server.requests == [(1, FC_WRITE_COIL), (1, FC_READ_COILS)]
