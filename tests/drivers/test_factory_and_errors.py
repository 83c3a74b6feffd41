"""Client construction from a site, and the mapping of library exceptions to ours."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from asyncua.ua.uaerrors import BadNodeIdUnknown, BadSessionClosed, BadTimeout
from pymodbus.exceptions import ConnectionException, ModbusIOException, ParameterException

from laterne.drivers.base import DeviceClient
from laterne.drivers.errors import (
    BadStatus,
    CommunicationError,
    DeviceOffline,
    DeviceRefused,
    DeviceTimeout,
    DriverError,
    ExceptionResponse,
    InvalidCommand,
    NotWritable,
    OutOfBounds,
    WriteMismatch,
    map_exceptions,
)
from laterne.drivers.factory import build_clients
from laterne.drivers.modbus import ModbusDevice
from laterne.drivers.opcua import OpcUaDevice
from laterne.models.site import SiteConfig


def test_build_clients_shares_one_gateway_per_host_and_port(demo_site: SiteConfig) -> None:
    clients = build_clients(demo_site)
    assert list(clients) == [d.id for d in demo_site.devices]
    for client in clients.values():
        assert isinstance(client, DeviceClient)
    modbus = {k: c for k, c in clients.items() if isinstance(c, ModbusDevice)}
    assert set(modbus) == {
        "counter-north",
        "counter-east",
        "seg-bahnhofstr",
        "seg-elberfelder",
        "seg-lindenweg",
    }
    assert modbus["counter-north"].gateway is modbus["counter-east"].gateway
    assert modbus["seg-bahnhofstr"].gateway is modbus["seg-lindenweg"].gateway
    assert modbus["seg-bahnhofstr"].gateway is not modbus["counter-north"].gateway
    assert (modbus["counter-east"].unit_id, modbus["seg-lindenweg"].unit_id) == (2, 3)
    assert len({id(m.gateway) for m in modbus.values()}) == 2
    assert isinstance(clients["school"], OpcUaDevice)
    assert not any(m.gateway.connected for m in modbus.values())  # nothing connects yet


def raise_(exc: BaseException) -> Callable[[], None]:
    def f() -> None:
        raise exc

    return f


@pytest.mark.parametrize(
    ("exc", "mapped"),
    [
        (TimeoutError(), DeviceTimeout),  # asyncio.TimeoutError is the same class since 3.11
        (ModbusIOException("No response received"), DeviceTimeout),
        (ConnectionException("Not connected"), DeviceOffline),
        (ConnectionRefusedError(111, "Connection refused"), DeviceOffline),
        (ConnectionResetError(), DeviceOffline),
        (OSError(113, "No route to host"), DeviceOffline),
        (BadTimeout(), DeviceTimeout),  # type: ignore[no-untyped-call]
        (BadSessionClosed(), DeviceOffline),  # type: ignore[no-untyped-call]
        (BadNodeIdUnknown(), BadStatus),  # type: ignore[no-untyped-call]
    ],
)
def test_library_exceptions_are_mapped_from_the_original(
    exc: BaseException, mapped: type[DriverError]
) -> None:
    with pytest.raises(mapped) as info, map_exceptions("dev-1"):
        raise_(exc)()
    assert type(info.value) is mapped
    assert info.value.__cause__ is exc
    assert str(info.value).startswith("dev-1")


def test_bad_status_carries_code_and_name() -> None:
    with pytest.raises(BadStatus) as info, map_exceptions("dev-1"):
        raise BadNodeIdUnknown()  # type: ignore[no-untyped-call]
    assert info.value.name == "BadNodeIdUnknown"
    assert info.value.code == 0x80340000


def test_our_errors_and_unknown_errors_pass_unchanged() -> None:
    ours = WriteMismatch("p", 1.0, 2.0)
    with pytest.raises(WriteMismatch) as info, map_exceptions("dev-1"):
        raise ours
    assert info.value is ours
    with pytest.raises(ParameterException), map_exceptions("dev-1"):  # a bug, not the field
        raise ParameterException("bad count")
    with pytest.raises(KeyError), map_exceptions("dev-1"):
        raise KeyError("x")


def test_the_tree() -> None:
    assert issubclass(DeviceOffline, CommunicationError)
    assert issubclass(DeviceTimeout, CommunicationError)
    assert issubclass(ExceptionResponse, DeviceRefused)
    assert issubclass(BadStatus, DeviceRefused)
    assert issubclass(OutOfBounds, InvalidCommand)
    assert issubclass(NotWritable, InvalidCommand)
    e = ExceptionResponse(0x0B, "gw unit 4")
    assert (e.code, e.name) == (11, "GATEWAY TARGET DEVICE FAILED TO RESPOND")
    assert str(e) == "gw unit 4: Modbus exception 0x0b (GATEWAY TARGET DEVICE FAILED TO RESPOND)"
    assert ExceptionResponse(0x42).name == "UNKNOWN EXCEPTION"
