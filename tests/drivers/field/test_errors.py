"""The typed error tree, the socket mapping every driver's own mapping starts from, and
raising a remembered error once more."""

from __future__ import annotations

import pytest
from asyncua.ua.status_codes import StatusCodes

from laterne.drivers.field.errors import (
    BadStatus,
    CertificateRejected,
    CommunicationError,
    DecodeError,
    DeviceOffline,
    DeviceRefused,
    DeviceTimeout,
    DriverError,
    EncodeError,
    ExceptionResponse,
    InvalidCommand,
    MissingCredential,
    NotWritable,
    OutOfBounds,
    ProtocolError,
    SetupError,
    UnknownNamespace,
    UnresolvedAddress,
    UnresolvedBrowsePath,
    WriteMismatch,
    again,
    map_socket_exceptions,
)


def test_the_tree() -> None:
    assert issubclass(DeviceOffline, CommunicationError)
    assert issubclass(DeviceTimeout, CommunicationError)
    assert issubclass(ExceptionResponse, DeviceRefused)
    assert issubclass(BadStatus, DeviceRefused)
    assert issubclass(CertificateRejected, DeviceRefused)
    assert issubclass(ProtocolError, DecodeError)
    assert issubclass(UnresolvedBrowsePath, UnresolvedAddress)
    assert issubclass(UnknownNamespace, UnresolvedAddress)
    assert issubclass(UnresolvedAddress, DecodeError)
    assert issubclass(OutOfBounds, InvalidCommand)
    assert issubclass(NotWritable, InvalidCommand)
    assert issubclass(EncodeError, InvalidCommand)
    assert issubclass(MissingCredential, SetupError)
    for cls in (CommunicationError, DeviceRefused, DecodeError, WriteMismatch, InvalidCommand,
                SetupError):  # fmt: skip
        assert cls.__bases__ == (DriverError,), cls
    e = ExceptionResponse(0x0B, "gw unit 4")
    assert (e.code, e.name) == (11, "GATEWAY TARGET DEVICE FAILED TO RESPOND")
    assert str(e) == "gw unit 4: Modbus exception 0x0b (GATEWAY TARGET DEVICE FAILED TO RESPOND)"
    assert ExceptionResponse(0x42).name == "UNKNOWN EXCEPTION"
    assert BadStatus(0x80340000).name == "BadNodeIdUnknown"


@pytest.mark.parametrize(
    ("exc", "mapped", "says"),
    [
        (TimeoutError(), DeviceTimeout, "dev-1: no answer in time"),
        (ConnectionRefusedError(111, "Connection refused"), DeviceOffline, "dev-1: Connection "),
        (ConnectionResetError(), DeviceOffline, "dev-1: "),
        (OSError(113, "No route to host"), DeviceOffline, "dev-1: No route to host"),
    ],
)
def test_socket_exceptions_are_mapped_from_the_original(
    exc: BaseException, mapped: type[DriverError], says: str
) -> None:
    with pytest.raises(mapped) as info, map_socket_exceptions("dev-1"):
        raise exc
    assert type(info.value) is mapped
    assert info.value.__cause__ is exc
    assert str(info.value).startswith(says)


def test_socket_mapping_leaves_the_rest_to_the_driver() -> None:
    ours = WriteMismatch("p", 1.0, 2.0)
    with pytest.raises(WriteMismatch) as info, map_socket_exceptions("dev-1"):
        raise ours
    assert info.value is ours
    with pytest.raises(ValueError), map_socket_exceptions("dev-1"):  # a library's, or a bug
        raise ValueError("x")


def test_again_is_a_fresh_error_of_the_same_class() -> None:
    original = CertificateRejected(
        "BadCertificateUntrusted", "dev", StatusCodes.BadCertificateUntrusted
    )
    try:
        raise original
    except CertificateRejected as exc:
        caught = exc
    fresh = again(caught, f"{caught}; next attempt in 1.0 s")
    assert type(fresh) is CertificateRejected and fresh.code == caught.code
    assert str(fresh) == f"{caught}; next attempt in 1.0 s"
    assert fresh.__traceback__ is None and fresh.__cause__ is None
    assert str(again(caught)) == str(caught)
