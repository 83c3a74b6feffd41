"""The OPC-UA driver's exception boundary: every asyncua failure becomes one typed error.

Rule: asyncua fails in many more shapes than its status-code errors (an ``AssertionError`` when
a server answers OpenSecureChannel with a fault, ``struct.error``, ``ValueError``, plain
``UaError``), and one misbehaving server must never take the rest of the site down, so inside
:func:`map_opcua_exceptions` *every* ``Exception`` becomes a
:class:`~laterne.drivers.field.errors.DriverError`: the socket layer's by the shared
:func:`~laterne.drivers.field.errors.map_socket_exceptions`, asyncua's status codes by the table
below, anything else a :class:`~laterne.drivers.field.errors.ProtocolError` naming the original type
and message, each raised ``from`` the original. The OPC-UA modules (:mod:`.opcua`,
:mod:`.opcua_browse`) use it around every asyncua call; nothing else here is asyncua's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from asyncua.ua import status_codes
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from .errors import (
    UA_CERTIFICATE_CODES,
    BadStatus,
    CertificateRejected,
    DeviceOffline,
    DeviceRefused,
    DeviceTimeout,
    DriverError,
    ProtocolError,
    map_socket_exceptions,
    raised_in,
)

__all__ = ["UA_OFFLINE_CODES", "UA_TIMEOUT_CODES", "map_opcua_exceptions"]

#: OPC-UA status codes that mean "the connection or session is gone", not "this value is bad"
UA_OFFLINE_CODES: frozenset[int] = frozenset(
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
#: OPC-UA status codes of a request that got no answer in time
UA_TIMEOUT_CODES: frozenset[int] = frozenset(
    {StatusCodes.BadTimeout, StatusCodes.BadRequestTimeout}
)


@contextmanager
def map_opcua_exceptions(context: str, *, opening_secure_channel: bool = False) -> Iterator[None]:
    """Re-raise every ``Exception`` raised inside the block as a :class:`DriverError`.

    ``context`` names the device or endpoint (e.g. ``"opcua school (opc.tcp://...)"``) and
    prefixes every message. Our own :class:`DriverError` passes through untouched;
    ``asyncio.CancelledError`` and ``KeyboardInterrupt`` (``BaseException``) pass unchanged.

    Pass ``opening_secure_channel`` around a *secured* connect (sign or sign-and-encrypt):
    a server that does not trust our certificate may refuse it before any status code can
    reach us, by closing the channel (``ConnectionError``) or by answering OpenSecureChannel
    with a fault, on which asyncua fails in parsing and then in its own ``assert``
    (``AssertionError``). Whether a failure came "while opening" is told by its traceback
    passing through asyncua's ``open_secure_channel``.

    ===============================================  =====================
    raised inside the block                          re-raised as
    ===============================================  =====================
    ``TimeoutError`` / ``asyncio.TimeoutError``       DeviceTimeout
    ``OSError`` incl. ``ConnectionError``             DeviceOffline
    asyncua BadTimeout, BadRequestTimeout             DeviceTimeout
      (:data:`UA_TIMEOUT_CODES`)
    asyncua session/channel/connection codes          DeviceOffline
      (:data:`UA_OFFLINE_CODES`)
    asyncua certificate codes                         CertificateRejected
      (:data:`~laterne.drivers.field.errors.UA_CERTIFICATE_CODES`)
    any other asyncua ``UaStatusCodeError``           BadStatus
    secured, in OpenSecureChannel: anything but a     CertificateRejected
      status code or a timeout
    ``UaError`` "No matching endpoints" (the server   DeviceRefused
      offers no endpoint with our policy and mode)
    any other ``Exception``                           ProtocolError
    ===============================================  =====================
    """
    try:
        with map_socket_exceptions(context):
            yield
    except DriverError as exc:
        cause = exc.__cause__
        if (
            opening_secure_channel
            and isinstance(exc, DeviceOffline)
            and isinstance(cause, OSError)
            and raised_in(cause, "open_secure_channel")
        ):
            reason = f"it closed the secure channel as we opened it: {cause}"
            raise CertificateRejected(reason, context) from cause
        raise
    except UaStatusCodeError as exc:
        code = int(exc.code)
        if code in UA_TIMEOUT_CODES:
            raise DeviceTimeout(f"{context}: {exc}") from exc
        if code in UA_OFFLINE_CODES:
            raise DeviceOffline(f"{context}: {exc}") from exc
        if code in UA_CERTIFICATE_CODES:
            name, _doc = status_codes.get_name_and_doc(code)  # said as BadStatus says it
            raise CertificateRejected(f"{name}, {code:#010x}", context, code) from exc
        raise BadStatus(code, context) from exc
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        kind = type(exc).__name__
        if opening_secure_channel and raised_in(exc, "open_secure_channel"):
            reason = f"it answered OpenSecureChannel with an error; asyncua: {kind}"
            raise CertificateRejected(reason, context) from exc
        if isinstance(exc, UaError) and raised_in(exc, "find_endpoint"):
            raise DeviceRefused(
                f"{context}: the server offers no endpoint with the security mode and policy "
                f"configured ({exc})"
            ) from exc
        raise ProtocolError(kind, str(exc), context) from exc
