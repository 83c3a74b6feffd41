"""Typed driver errors, and the one place where library exceptions become ours.

Rule: nothing that pymodbus, asyncua or the socket layer raises for an *expected* field failure
leaves :mod:`laterne.drivers`. :func:`map_exceptions` turns each into the most specific
:class:`DriverError` below and raises it ``from`` the original, so the cause stays in the
traceback. Anything it does not recognise is a bug (ours or the library's) and propagates unchanged.

The tree::

    DriverError                       anything a field device did or we refused to do
    ├── CommunicationError            the device could not be talked to; retrying later may help
    │   ├── DeviceOffline             connect refused, connection lost, or backing off
    │   └── DeviceTimeout             connected, but no answer in time
    ├── DeviceRefused                 the device answered, and the answer is "no"
    │   ├── ExceptionResponse         Modbus exception response: ``code`` and its name
    │   └── BadStatus                 OPC-UA bad status code: ``code`` and its name
    ├── DecodeError                   the answer cannot be turned into a value (short, NaN, ...)
    │   └── UnresolvedBrowsePath      OPC-UA: the server has no node at a point's browse path
    ├── WriteMismatch                 written, but the read-back differs: ``point, wanted, got``
    └── InvalidCommand                refused by us before anything was sent
        ├── NotWritable               the point is not writable (or does not exist)
        ├── OutOfBounds               outside the point's command bounds: ``point, value, lo, hi``
        └── EncodeError               not representable in the point's data type
    └── SetupError                    the site's settings cannot be applied at connect time
        └── MissingCredential         an environment variable named for a credential is unset


``CommunicationError`` means "mark the device OFFLINE"; ``DeviceRefused``, ``DecodeError`` and
``WriteMismatch`` mean "the device is there but misbehaves" (FAULTY); ``InvalidCommand`` means the
caller asked for something the site configuration forbids, and the field never saw it.
``SetupError`` is ours to fix on the controller's host (a variable to export, a certificate file
to replace); the field never saw a byte either, and the device counts as FAULTY.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from asyncua.ua import status_codes
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError
from pymodbus.exceptions import ConnectionException, ModbusIOException

__all__ = [
    "MODBUS_EXCEPTION_NAMES",
    "BadStatus",
    "CommunicationError",
    "DecodeError",
    "DeviceOffline",
    "DeviceRefused",
    "DeviceTimeout",
    "DriverError",
    "EncodeError",
    "ExceptionResponse",
    "InvalidCommand",
    "MissingCredential",
    "NotWritable",
    "OutOfBounds",
    "SetupError",
    "UnresolvedBrowsePath",
    "WriteMismatch",
    "map_exceptions",
]

#: Modbus exception codes (Modbus Application Protocol v1.1b3, section 7)
MODBUS_EXCEPTION_NAMES: dict[int, str] = {
    0x01: "ILLEGAL FUNCTION",
    0x02: "ILLEGAL DATA ADDRESS",
    0x03: "ILLEGAL DATA VALUE",
    0x04: "SERVER DEVICE FAILURE",
    0x05: "ACKNOWLEDGE",
    0x06: "SERVER DEVICE BUSY",
    0x08: "MEMORY PARITY ERROR",
    0x0A: "GATEWAY PATH UNAVAILABLE",
    0x0B: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
}

# OPC-UA status codes that mean "the connection or session is gone", not "this value is bad"
_UA_OFFLINE_CODES: frozenset[int] = frozenset(
    {
        StatusCodes.BadCommunicationError,
        StatusCodes.BadShutdown,
        StatusCodes.BadServerNotConnected,
        StatusCodes.BadServerHalted,
        StatusCodes.BadSecureChannelIdInvalid,
        StatusCodes.BadSecureChannelClosed,
        StatusCodes.BadSessionIdInvalid,
        StatusCodes.BadSessionClosed,
        StatusCodes.BadNoCommunication,
        StatusCodes.BadConnectionClosed,
        StatusCodes.BadNotConnected,
    }
)
_UA_TIMEOUT_CODES: frozenset[int] = frozenset(
    {StatusCodes.BadTimeout, StatusCodes.BadRequestTimeout}
)


class DriverError(Exception):
    """Base of every error a driver raises for a field device or a refused command."""


class CommunicationError(DriverError):
    """The device could not be talked to. The device is OFFLINE; retrying later may help."""


class DeviceOffline(CommunicationError):
    """Connect refused, connection lost, or the driver is backing off before the next attempt."""


class DeviceTimeout(CommunicationError):
    """The request was sent but no answer came within the device's timeout."""


class DeviceRefused(DriverError):
    """The device answered with a protocol-level refusal."""


class ExceptionResponse(DeviceRefused):
    """A Modbus exception response. ``code`` is the exception code, ``name`` its meaning."""

    def __init__(self, code: int, context: str = "") -> None:
        self.code = code
        self.name = MODBUS_EXCEPTION_NAMES.get(code, "UNKNOWN EXCEPTION")
        prefix = f"{context}: " if context else ""
        super().__init__(f"{prefix}Modbus exception {code:#04x} ({self.name})")


class BadStatus(DeviceRefused):
    """An OPC-UA bad status code. ``code`` is the 32-bit status, ``name`` e.g. BadTypeMismatch."""

    def __init__(self, code: int, context: str = "") -> None:
        self.code = code
        self.name = _ua_status_name(code)
        prefix = f"{context}: " if context else ""
        super().__init__(f"{prefix}OPC-UA status {code:#010x} ({self.name})")


class DecodeError(DriverError):
    """The device's answer cannot be turned into a value (wrong length, NaN, wrong type)."""


class UnresolvedBrowsePath(DecodeError):
    """The server resolves no node (or more than one) at a point's browse path."""

    def __init__(self, path: str, reason: str, context: str = "") -> None:
        self.path = path
        self.reason = reason
        prefix = f"{context}: " if context else ""
        super().__init__(f"{prefix}browse path {path!r} does not resolve: {reason}")


class WriteMismatch(DriverError):
    """A write was acknowledged, but reading the point back gave a different value."""

    def __init__(self, point: str, wanted: float, got: float, context: str = "") -> None:
        self.point = point
        self.wanted = wanted
        self.got = got
        prefix = f"{context}: " if context else ""
        super().__init__(f"{prefix}wrote {wanted!r} to {point!r} but read back {got!r}")


class InvalidCommand(DriverError):
    """A command was refused before anything was sent to the device."""


class NotWritable(InvalidCommand):
    """The point is read-only, or the device has no such point."""


class OutOfBounds(InvalidCommand):
    """The value lies outside the point's command bounds ``[lo, hi]`` (or is not finite)."""

    def __init__(self, point: str, value: float, lo: float, hi: float, context: str = "") -> None:
        self.point = point
        self.value = value
        self.lo = lo
        self.hi = hi
        prefix = f"{context}: " if context else ""
        super().__init__(f"{prefix}{point!r}: {value!r} is outside [{lo!r}, {hi!r}]")


class EncodeError(InvalidCommand):
    """The value cannot be represented in the point's data type (range, not integral, NaN)."""

    def __init__(self, value: float, type_name: str, reason: str) -> None:
        self.value = value
        self.type_name = type_name
        super().__init__(f"{value!r} cannot be encoded as {type_name}: {reason}")


class SetupError(DriverError):
    """The device's settings cannot be applied: a certificate that does not load, a credential
    variable that is not set. Nothing was sent; fixing the controller's host fixes it."""


class MissingCredential(SetupError):
    """The environment variable ``variable`` named by the site configuration is not set."""

    def __init__(self, variable: str, what: str, context: str = "") -> None:
        self.variable = variable
        prefix = f"{context}: " if context else ""
        super().__init__(f"{prefix}environment variable {variable} ({what}) is not set")


def _ua_status_name(code: int) -> str:
    name, _doc = status_codes.get_name_and_doc(code)
    return str(name)


@contextmanager
def map_exceptions(context: str) -> Iterator[None]:
    """Re-raise library and socket exceptions as :class:`DriverError` subclasses.

    ``context`` names the device or endpoint (e.g. ``"127.0.0.1:502 unit 3"``) and prefixes every
    message. Our own :class:`DriverError` passes through untouched; unknown exceptions propagate.

    ==========================================  =====================
    raised inside the block                     re-raised as
    ==========================================  =====================
    ``TimeoutError`` / ``asyncio.TimeoutError``  DeviceTimeout
    pymodbus ``ModbusIOException`` (no answer)   DeviceTimeout
    pymodbus ``ConnectionException``             DeviceOffline
    ``OSError`` incl. ``ConnectionError``        DeviceOffline
    asyncua BadTimeout, BadRequestTimeout        DeviceTimeout
    asyncua session/channel/connection codes     DeviceOffline
    any other asyncua ``UaStatusCodeError``      BadStatus
    ==========================================  =====================
    """
    try:
        yield
    except DriverError:
        raise
    except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError, a subclass of OSError
        raise DeviceTimeout(f"{context}: no answer in time") from exc
    except ModbusIOException as exc:
        raise DeviceTimeout(f"{context}: {exc.string}") from exc
    except ConnectionException as exc:
        raise DeviceOffline(f"{context}: {exc.string}") from exc
    except OSError as exc:
        raise DeviceOffline(f"{context}: {exc.strerror or exc}") from exc
    except UaStatusCodeError as exc:
        code = int(exc.code)
        if code in _UA_TIMEOUT_CODES:
            raise DeviceTimeout(f"{context}: {exc}") from exc
        if code in _UA_OFFLINE_CODES:
            raise DeviceOffline(f"{context}: {exc}") from exc
        raise BadStatus(code, context) from exc
