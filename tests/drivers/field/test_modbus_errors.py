"""The Modbus driver's exception mapping, case by case: pymodbus's and the socket layer's
failures become typed driver errors raised from the original; ours pass; a bug propagates."""

from __future__ import annotations

import pytest
from pymodbus.exceptions import ConnectionException, ModbusIOException, ParameterException

from laterne.drivers.field.errors import DeviceOffline, DeviceTimeout, DriverError, WriteMismatch
from laterne.drivers.field.modbus import map_modbus_exceptions


@pytest.mark.parametrize(
    ("exc", "mapped", "says"),
    [
        (TimeoutError(), DeviceTimeout, "no answer in time"),
        (ModbusIOException("No response received"), DeviceTimeout, "No response received"),
        (ConnectionException("Not connected"), DeviceOffline, "Not connected"),
        (ConnectionRefusedError(111, "Connection refused"), DeviceOffline, "Connection refused"),
        (ConnectionResetError(), DeviceOffline, ""),
        (OSError(113, "No route to host"), DeviceOffline, "No route to host"),
    ],
)
def test_library_exceptions_are_mapped_from_the_original(
    exc: BaseException, mapped: type[DriverError], says: str
) -> None:
    with pytest.raises(mapped) as info, map_modbus_exceptions("modbus 127.0.0.1:502 unit 3"):
        raise exc
    assert type(info.value) is mapped
    assert info.value.__cause__ is exc
    assert str(info.value).startswith("modbus 127.0.0.1:502 unit 3: ")
    assert says in str(info.value)


def test_our_errors_and_bugs_pass_unchanged() -> None:
    ours = WriteMismatch("p", 1.0, 2.0)
    with pytest.raises(WriteMismatch) as info, map_modbus_exceptions("dev-1"):
        raise ours
    assert info.value is ours
    with pytest.raises(ParameterException), map_modbus_exceptions("dev-1"):  # a bug, not the field
        raise ParameterException("bad count")
    with pytest.raises(KeyError), map_modbus_exceptions("dev-1"):
        raise KeyError("x")
