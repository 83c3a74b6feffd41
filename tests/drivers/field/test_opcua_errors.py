"""The OPC-UA driver's exception mapping, case by case: every asyncua failure (status codes,
its own asserts and parse errors, a refused secure channel) and every socket failure becomes one
typed driver error raised from the original; cancellation passes."""

from __future__ import annotations

import asyncio
import struct

import pytest
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import (
    BadCertificateUntrusted,
    BadNodeIdUnknown,
    BadRequestTimeout,
    BadSessionClosed,
    BadTimeout,
    UaError,
)

from laterne.drivers.field.errors import (
    UA_CERTIFICATE_CODES,
    BadStatus,
    CertificateRejected,
    DeviceOffline,
    DeviceRefused,
    DeviceTimeout,
    DriverError,
    ProtocolError,
    WriteMismatch,
)
from laterne.drivers.field.opcua_errors import (
    UA_OFFLINE_CODES,
    UA_TIMEOUT_CODES,
    map_opcua_exceptions,
)


@pytest.mark.parametrize(
    ("exc", "mapped"),
    [
        (TimeoutError(), DeviceTimeout),
        (ConnectionRefusedError(111, "Connection refused"), DeviceOffline),
        (BadTimeout(), DeviceTimeout),  # type: ignore[no-untyped-call]
        (BadRequestTimeout(), DeviceTimeout),  # type: ignore[no-untyped-call]
        (BadSessionClosed(), DeviceOffline),  # type: ignore[no-untyped-call]
        (BadNodeIdUnknown(), BadStatus),  # type: ignore[no-untyped-call]
        (BadCertificateUntrusted(), CertificateRejected),  # type: ignore[no-untyped-call]
    ],
)
def test_status_codes_and_sockets_are_mapped_from_the_original(
    exc: BaseException, mapped: type[DriverError]
) -> None:
    with pytest.raises(mapped) as info, map_opcua_exceptions("dev-1"):
        raise exc
    assert type(info.value) is mapped
    assert info.value.__cause__ is exc
    assert str(info.value).startswith("dev-1")


def test_bad_status_carries_code_and_name() -> None:
    with pytest.raises(BadStatus) as info, map_opcua_exceptions("dev-1"):
        raise BadNodeIdUnknown()  # type: ignore[no-untyped-call]
    assert info.value.name == "BadNodeIdUnknown"
    assert info.value.code == 0x80340000
    assert str(info.value) == "dev-1: OPC-UA status 0x80340000 (BadNodeIdUnknown)"


def test_certificate_refusal_names_the_code_and_what_to_do() -> None:
    with pytest.raises(CertificateRejected) as info, map_opcua_exceptions("dev-1"):
        raise BadCertificateUntrusted()  # type: ignore[no-untyped-call]
    assert info.value.code == StatusCodes.BadCertificateUntrusted
    assert "(BadCertificateUntrusted, 0x801a0000)" in str(info.value)
    assert UA_CERTIFICATE_CODES[StatusCodes.BadCertificateUntrusted] in str(info.value)


def test_the_code_tables_do_not_overlap() -> None:
    assert not UA_TIMEOUT_CODES & UA_OFFLINE_CODES
    assert not (UA_TIMEOUT_CODES | UA_OFFLINE_CODES) & set(UA_CERTIFICATE_CODES)


def test_our_errors_pass_unchanged() -> None:
    ours = WriteMismatch("p", 1.0, 2.0)
    with pytest.raises(WriteMismatch) as info, map_opcua_exceptions("dev-1"):
        raise ours
    assert info.value is ours


async def open_secure_channel(exc: BaseException) -> None:
    """Raises ``exc`` from a frame named as asyncua's, as asyncua does."""
    raise exc


async def find_endpoint() -> None:
    raise UaError("No matching endpoints: 1, http://opcfoundation.org/UA/SecurityPolicy#None")


@pytest.mark.parametrize(
    ("exc", "secured", "mapped", "says"),
    [
        (AssertionError(), True, CertificateRejected, "asyncua: AssertionError"),
        (AssertionError(), False, ProtocolError, "OPC-UA protocol error (AssertionError)"),
        (ConnectionResetError(104, "Connection reset"), True, CertificateRejected, "closed"),
        (ConnectionResetError(104, "Connection reset"), False, DeviceOffline, "Connection reset"),
        (TimeoutError(), True, DriverError, "no answer in time"),  # a timeout stays a timeout
        (BadCertificateUntrusted(), False, CertificateRejected, "BadCertificateUntrusted"),  # type: ignore[no-untyped-call]
        (struct.error("unpack requires 4 bytes"), False, ProtocolError, "unpack requires"),
        (ValueError("bad value"), False, ProtocolError, "(ValueError: bad value)"),
        (UaError("Unsupported message type"), False, ProtocolError, "Unsupported message"),
        (BadNodeIdUnknown(), True, BadStatus, "BadNodeIdUnknown"),  # type: ignore[no-untyped-call]
    ],
)
async def test_every_asyncua_failure_becomes_a_driver_error(
    exc: BaseException, secured: bool, mapped: type[DriverError], says: str
) -> None:
    with pytest.raises(mapped) as info, map_opcua_exceptions("dev", opening_secure_channel=secured):
        await open_secure_channel(exc)
    assert says in str(info.value) and str(info.value).startswith("dev: ")
    assert info.value.__cause__ is exc
    if mapped is ProtocolError:
        assert isinstance(info.value, ProtocolError) and info.value.kind == type(exc).__name__


async def test_no_matching_endpoint_is_a_refusal_and_cancellation_passes() -> None:
    with (
        pytest.raises(DeviceRefused, match="offers no endpoint") as info,
        map_opcua_exceptions("d"),
    ):
        await find_endpoint()
    assert type(info.value) is DeviceRefused
    with pytest.raises(asyncio.CancelledError), map_opcua_exceptions("d"):
        raise asyncio.CancelledError
    with pytest.raises(KeyboardInterrupt), map_opcua_exceptions("d"):
        raise KeyboardInterrupt
