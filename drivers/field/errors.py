"""Typed driver errors, and the mapping of the socket layer's exceptions that every driver shares.

Rule: nothing that pymodbus, asyncua or the socket layer raises for an *expected* field failure
leaves :mod:`laterne.drivers`. Each driver has one boundary that turns its library's exceptions
into the most specific :class:`DriverError` below and raises it ``from`` the original, so the
cause stays in the traceback: :func:`~laterne.drivers.field.modbus.map_modbus_exceptions` for
pymodbus, :func:`~laterne.drivers.field.opcua_errors.map_opcua_exceptions` for asyncua. Both start
from :func:`map_socket_exceptions`, the part they share (timeouts and ``OSError``). This module
holds the tree and that shared part, and nothing of either library but the names of OPC-UA
status codes (from asyncua's table), which :class:`BadStatus` and :class:`CertificateRejected`
put into their messages.

The tree::

    DriverError                       anything a field device did or we refused to do
    ├── CommunicationError            the device could not be talked to; retrying later may help
    │   ├── DeviceOffline             connect refused, connection lost, or backing off
    │   └── DeviceTimeout             connected, but no answer in time
    ├── DeviceRefused                 the device answered, and the answer is "no"
    │   ├── ExceptionResponse         Modbus exception response: ``code`` and its name
    │   ├── BadStatus                 OPC-UA bad status code: ``code`` and its name
    │   └── CertificateRejected       OPC-UA: the server refused our client certificate
    ├── DecodeError                   the answer cannot be turned into a value (short, NaN, ...)
    │   ├── ProtocolError             OPC-UA: asyncua failed on the server's answer: ``kind``
    │   └── UnresolvedAddress         OPC-UA: a point's address names no node on this server
    │       ├── UnresolvedBrowsePath  no node (or several) at a point's browse path
    │       └── UnknownNamespace      a ``nsu=`` NodeId's namespace URI is not on the server
    ├── WriteMismatch                 written, but the read-back differs: ``point, wanted, got``
    ├── InvalidCommand                refused by us before anything was sent
    │   ├── NotWritable               the point is not writable (or does not exist)
    │   ├── OutOfBounds               outside the point's command bounds: ``point, value, lo, hi``
    │   └── EncodeError               not representable in the point's data type
    └── SetupError                    the site's settings cannot be applied at connect time
        └── MissingCredential         an environment variable named for a credential is unset


``CommunicationError`` means "mark the device OFFLINE"; ``DeviceRefused``, ``DecodeError`` and
``WriteMismatch`` mean "the device is there but misbehaves" (FAULTY; a refused certificate and a
protocol error are FAULTY too: the server is there, and retrying alone will not help);
``InvalidCommand`` means the caller asked for something the site configuration forbids, and the
field never saw it. The OPC-UA driver, backing off after a failure, raises until its next try an
error of the *same class* as that failure, its message ending in when the next attempt is, so a
device keeps one quality and one cause while it waits.
``SetupError`` is ours to fix on the controller's host (a variable to export, a certificate file
to replace); the field never saw a byte either, and the device counts as FAULTY.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from asyncua.ua import status_codes
from asyncua.ua.status_codes import StatusCodes

__all__ = [
    "MODBUS_EXCEPTION_NAMES",
    "UA_CERTIFICATE_CODES",
    "BadStatus",
    "CertificateRejected",
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
    "ProtocolError",
    "SetupError",
    "UnknownNamespace",
    "UnresolvedAddress",
    "UnresolvedBrowsePath",
    "WriteMismatch",
    "again",
    "map_socket_exceptions",
    "raised_in",
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

_TRUST_US = (
    "trust Laterne's client certificate on the server (most servers keep a certificate they "
    "refused in a 'rejected' folder or list: move it to the trusted ones)"
)
_NEW_CERT = "make a new one with `laterne opcua-cert` and trust it on the server"

#: OPC-UA status codes by which a server refuses our application instance certificate (in
#: OpenSecureChannel, CreateSession or ActivateSession), each with what to do about it
UA_CERTIFICATE_CODES: dict[int, str] = {
    StatusCodes.BadCertificateUntrusted: _TRUST_US,
    StatusCodes.BadSecurityChecksFailed: _TRUST_US,
    StatusCodes.BadNoValidCertificates: _TRUST_US,
    StatusCodes.BadCertificateInvalid: f"the certificate is malformed; {_NEW_CERT}",
    StatusCodes.BadCertificateTimeInvalid: "the certificate has expired or is not valid yet "
    f"(check both clocks); {_NEW_CERT}",
    StatusCodes.BadCertificateIssuerTimeInvalid: "the certificate's issuer has expired; renew "
    "it and trust it on the server",
    StatusCodes.BadCertificateUriInvalid: "the application URI in the certificate's "
    f"subjectAltName is not the one the client announces; {_NEW_CERT}",
    StatusCodes.BadCertificateHostNameInvalid: "the certificate names another host; make a new "
    "one with `laterne opcua-cert --host <this host's name>` and trust it on the server",
    StatusCodes.BadCertificateUseNotAllowed: "the certificate's key usage does not allow an "
    f"OPC-UA client; {_NEW_CERT}",
    StatusCodes.BadCertificateIssuerUseNotAllowed: "the certificate's issuer may not sign "
    f"application certificates; {_NEW_CERT}",
    StatusCodes.BadCertificateRevoked: f"the server lists the certificate as revoked; {_NEW_CERT}",
    StatusCodes.BadCertificateIssuerRevoked: "the server lists the certificate's issuer as "
    f"revoked; {_NEW_CERT}",
    StatusCodes.BadCertificateRevocationUnknown: "the server has no revocation list for the "
    "certificate's issuer; add one on the server, or use a self-signed certificate",
    StatusCodes.BadCertificateIssuerRevocationUnknown: "the server has no revocation list for "
    "the certificate's issuer; add one on the server, or use a self-signed certificate",
    StatusCodes.BadCertificateChainIncomplete: "the server does not have the certificate's "
    "issuer; trust the issuer on the server, or use a self-signed certificate",
    StatusCodes.BadCertificatePolicyCheckFailed: "the certificate does not meet the security "
    f"policy (Basic256Sha256: RSA 2048 to 4096 bits, SHA-256 signature); {_NEW_CERT}",
}


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


class CertificateRejected(DeviceRefused):
    """The OPC-UA server refused our client certificate. ``code`` is the status code it gave
    (``None`` when it only closed the secure channel as we opened it), ``reason`` what it said
    or did. The message says so, and what to do: mostly, trust Laterne's certificate there."""

    def __init__(self, reason: str, context: str = "", code: int | None = None) -> None:
        self.code = code
        self.reason = reason
        if code is None:  # the channel was refused before any status code could say why
            hint = f"{_TRUST_US}; if the site pins server_certificate, check it is still the "
            hint += "server's own (`laterne browse URL --save-server-certificate FILE`)"
        else:
            hint = UA_CERTIFICATE_CODES.get(code, _TRUST_US)
        prefix = f"{context}: " if context else ""
        super().__init__(f"{prefix}the server refused our client certificate ({reason}): {hint}")


class DecodeError(DriverError):
    """The device's answer cannot be turned into a value (wrong length, NaN, wrong type)."""


class ProtocolError(DecodeError):
    """asyncua failed on what the server sent (or on the state it left the session in) with an
    exception that is not one of its status codes. ``kind`` is that exception's type name,
    ``detail`` its message."""

    def __init__(self, kind: str, detail: str, context: str = "") -> None:
        self.kind = kind
        self.detail = detail
        prefix = f"{context}: " if context else ""
        said = f": {detail}" if detail else ""
        super().__init__(f"{prefix}OPC-UA protocol error ({kind}{said})")


class UnresolvedAddress(DecodeError):
    """A point's address (browse path, namespace URI) names no node on this server. The point
    is FAULTY; the device's other points work, and the next connection tries again."""


class UnresolvedBrowsePath(UnresolvedAddress):
    """The server resolves no node (or more than one) at a point's browse path."""

    def __init__(self, path: str, reason: str, context: str = "") -> None:
        self.path = path
        self.reason = reason
        prefix = f"{context}: " if context else ""
        super().__init__(f"{prefix}browse path {path!r} does not resolve: {reason}")


class UnknownNamespace(UnresolvedAddress):
    """A ``nsu=<uri>;...`` NodeId names a namespace URI that is not in the server's namespace
    array. ``known`` is that array (index = position)."""

    def __init__(self, node: str, uri: str, known: Sequence[str], context: str = "") -> None:
        self.node = node
        self.uri = uri
        self.known = tuple(known)
        prefix = f"{context}: " if context else ""
        listed = ", ".join(f"[{i}] {u}" for i, u in enumerate(self.known)) or "none"
        super().__init__(
            f"{prefix}node {node!r}: the server has no namespace {uri!r}; its namespaces are "
            f"{listed}"
        )


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
def map_socket_exceptions(context: str) -> Iterator[None]:
    """Re-raise the socket layer's exceptions as :class:`DriverError` subclasses.

    The part of every driver's mapping that is not its library's. ``context`` names the device
    or endpoint (e.g. ``"127.0.0.1:502 unit 3"``) and prefixes every message. Our own
    :class:`DriverError` passes through untouched; anything else propagates unchanged, for the
    driver's own mapping (or, unrecognised there too, as a bug).

    ==========================================  =====================
    raised inside the block                     re-raised as
    ==========================================  =====================
    ``TimeoutError`` / ``asyncio.TimeoutError``  DeviceTimeout
    ``OSError`` incl. ``ConnectionError``        DeviceOffline
    ==========================================  =====================
    """
    try:
        yield
    except DriverError:
        raise
    except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError, a subclass of OSError
        raise DeviceTimeout(f"{context}: no answer in time") from exc
    except OSError as exc:
        raise DeviceOffline(f"{context}: {exc.strerror or exc}") from exc


def raised_in(exc: BaseException, function: str) -> bool:
    """Whether ``exc`` propagated through a frame of a function named ``function``."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == function:
            return True
        tb = tb.tb_next
    return False


_E = TypeVar("_E", bound=DriverError)


def again(error: _E, message: str | None = None) -> _E:
    """A fresh exception of ``error``'s class and attributes, with ``message`` (else its own).

    For raising a remembered failure once more (a driver backing off after it, a point whose
    address did not resolve) without growing its traceback or chaining the old one.
    """
    fresh = type(error).__new__(type(error))
    fresh.__dict__.update(error.__dict__)
    Exception.__init__(fresh, str(error) if message is None else message)
    return fresh
