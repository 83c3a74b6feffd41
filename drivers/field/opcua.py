"""OPC-UA driver: subscriptions or polling, browse paths, security, our own reconnect, typed writes.

Rule: asyncua is touched only here (and in the ``opcua_*`` helpers), and each of its failures
leaves as one :class:`~laterne.drivers.field.errors.DriverError`, whatever its type
(:func:`~laterne.drivers.field.opcua_errors.map_opcua_exceptions`: an ``AssertionError`` deep in
asyncua
makes this device FAULTY with that reason; it does not stop the site). Reconnecting is ours, not
asyncua's (``auto_reconnect=False``): after a loss the client object is discarded with everything
built on it (resolved browse paths, the subscription, cached data types), and a fresh one is
built on the next use, after the same jittered exponential backoff as Modbus (asyncua #1660).

Theory of operation
-------------------
The device is in one of three :class:`LinkState` states::

    DISCONNECTED --first use--> CONNECTED --failure--> OFFLINE --backoff over, next use--> ...
         ^                                                                                 |
         +------------------------------- close() ------------------------------------------+

A failed connect or a request that fails for lack of a connection enters OFFLINE and starts the
backoff; while it runs, every call raises, without touching the network, an error of the same
class as the failure that started it, with its message and when the next attempt is
(``"...: the server refused our client certificate (...): ...; next attempt in 3.2 s"``). So a
device that the server refuses stays FAULTY with the server's reason, and one that does not
answer stays OFFLINE; neither flips between the two on every retry. A
connection found dead *between* calls (asyncua's supervisor saw the socket close, or its
periodic ServerStatus probe failed) is rebuilt at once by the next call, which only backs off if
that fails. A timeout counts as a loss too: one OPC-UA client serves one device, so there are no
neighbours to protect (unlike a Modbus gateway).

**Connecting** builds a ``Client``, applies security and credentials
(:mod:`~laterne.drivers.field.opcua_security`; credentials come from the environment variables the
endpoint names, read at every connect), connects, and then prepares the new session:

1. Points given by a ``nsu=<namespace URI>;...`` NodeId get the index of that URI in the
   server's NamespaceArray (``i=2255``, read once per connection). A URI the server does not
   have makes that point FAULTY (:class:`~laterne.drivers.field.errors.UnknownNamespace`, naming the
   URI and the server's namespaces), like an unresolved browse path below. Every NodeId and
   browse path is parsed by :mod:`laterne.models.opcua_address`, the validator's parser.
2. Points given by ``browse_path`` are resolved in one TranslateBrowsePathsToNodeIds call
   (format in :mod:`~laterne.drivers.field.opcua_paths`: ``2:School/2:Classrooms/2:Temperature``,
   starting at the Objects folder). The NodeIds are cached for the life of the connection and
   resolved again after every reconnect. A path that does not resolve (no match, or more than
   one) makes that point's readings FAULTY and a write to it raise
   :class:`~laterne.drivers.field.errors.UnresolvedBrowsePath` (a ``DecodeError``); the other points
   work. The next connection tries again.
3. With ``subscribe: true``, one subscription is created (``publishing_interval_ms``) with one
   monitored item per resolved point, client handle = the point's index. Then one full Read of
   those points fills the latest-value table, so no point waits for its first change after a
   (re)connect. Should the server refuse CreateSubscription or CreateMonitoredItems as a
   service (``BadServiceUnsupported``, ``BadTooManySubscriptions``, any Bad status), the session
   falls back to polling, logged once; the next connection tries again. A point whose own
   monitored item is refused (e.g. ``BadNodeIdUnknown``) is polled instead.

:attr:`OpcUaDevice.mode` says which of ``"subscription"`` and ``"polling"`` is in force.

**Reading, polling mode**: one Read service call for every point's Value attribute. A node whose
status is not Good (Bad or Uncertain) or whose value is not a number becomes a FAULTY reading;
so does a value outside the point's ``[min, max]``. ``value = raw * scale + offset`` as for
Modbus.

**Reading, subscription mode**: ``read(now)`` answers from the latest-value table with no
network round trip (only points without a monitored item are read). Data-change subscriptions
report changes only, so silence alone says nothing; what proves a table current is that the
subscription was *heard from*: every publish response, the server's keep-alives included, marks
it alive (:mod:`~laterne.drivers.field.opcua_feed`). We ask for a keep-alive at least twice per
``Device.stale_after_s``. The rule:

* connection down (asyncua saw the socket close or its ServerStatus probe fail) -> reconnect,
  else ``DeviceOffline``;
* subscription heard from within ``stale_after_s`` (device's monotonic clock) -> the table's
  values are current: GOOD, or FAULTY by status/range as when polling;
* silent for longer, or a bad status-change notification (the server expired it) -> the
  table is not trusted: the subscription is deleted and re-created and the table refreshed by
  one full Read *before* answering, so what ``read`` returns is never older than that Read.
  If that fails, the device is OFFLINE (or FAULTY) by the usual error mapping.

So a reading the driver returns as GOOD was confirmed by the server within ``stale_after_s``;
ageing a reading that is not refreshed (STALE) stays the runtime's job, as for every driver.
Samples are ordered by source timestamp, so a Read and a notification that cross on the wire
cannot put an older value over a newer one.

**Writes** are checked against the profile first (``NotWritable``, ``OutOfBounds``), then
encoded in the node's *own* data type, read once per connection and cached: a Float node gets a
Float variant, never a Double, because servers refuse mismatched types (``BadTypeMismatch``).
Writes carry no timestamps (many PLCs refuse them). The value is read back and compared within
half a scale step (integers) or a few float ULPs; the read-back is returned and also stored in
the latest-value table. ``PointSpec.type`` is not consulted for OPC-UA: the node's DataType rules.

**Security**: ``none``, or Basic256Sha256 with ``sign`` / ``sign_and_encrypt`` and the
certificate and key files the endpoint names. A server refusing our certificate is a
:class:`~laterne.drivers.field.errors.CertificateRejected` saying what to do, whether it answers
with a certificate status code (``BadCertificateUntrusted``, ``BadSecurityChecksFailed``, ...)
or just closes the secure channel as we open it (asyncua then fails with an ``AssertionError``
or a ``ConnectionError`` inside OpenSecureChannel). Refused credentials are a
:class:`~laterne.drivers.field.errors.BadStatus`. Both make the device FAULTY and are backed off
like a
lost connection. A server without an endpoint for the wanted policy and mode is a
:class:`~laterne.drivers.field.errors.DeviceRefused`. An unset credential variable is
:class:`~laterne.drivers.field.errors.MissingCredential`, raised before connecting.

**No leaked subscriptions**: a subscription is deleted with its session (CloseSession with
DeleteSubscriptions) when we close or rebuild on a live connection. When the connection died
instead, the old session's subscription cannot be reached any more; we request a lifetime of
three keep-alive periods (about 1.5 x ``stale_after_s``) and a short session timeout, so a
server that survived the outage drops it on its own soon after. A restarted server has none.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from laterne.models.opcua_address import NodeAddress, parse_node_id
from laterne.models.site import (
    Device,
    DeviceProfile,
    OpcUaEndpoint,
    OpcUaProfile,
    PointSpec,
)
from laterne.models.values import PointReading

from ..backoff import Backoff
from .errors import (
    BadStatus,
    CommunicationError,
    DecodeError,
    DeviceOffline,
    DeviceRefused,
    DriverError,
    EncodeError,
    ProtocolError,
    SetupError,
    UnknownNamespace,
    UnresolvedAddress,
    UnresolvedBrowsePath,
    WriteMismatch,
    again,
)
from .opcua_errors import map_opcua_exceptions
from .opcua_feed import Feed, keepalive_count
from .opcua_paths import (
    BrowsePath,
    browse_path_request,
    format_browse_path,
    node_id,
    parse_browse_path,
    resolve_namespace,
)
from .opcua_security import apply_credentials, apply_security
from .points import check_command, faulty_reading, reading_from_value, require_utc
from .scaling import RawType, float_type, int_type, raw_from_value, readback_tolerance

__all__ = ["LinkState", "Mode", "OpcUaDevice", "ua_raw_from_value", "value_from_ua"]

_log = logging.getLogger(__name__)

UaRaw = bool | int | float
Mode = Literal["subscription", "polling"]

#: the raw number type of each numeric OPC-UA type (:func:`ua_raw_from_value`)
_UA_RAW_TYPES: dict[ua.VariantType, RawType] = {
    ua.VariantType.Boolean: int_type("Boolean", 1, signed=False),
    ua.VariantType.SByte: int_type("SByte", 8, signed=True),
    ua.VariantType.Byte: int_type("Byte", 8, signed=False),
    ua.VariantType.Int16: int_type("Int16", 16, signed=True),
    ua.VariantType.UInt16: int_type("UInt16", 16, signed=False),
    ua.VariantType.Int32: int_type("Int32", 32, signed=True),
    ua.VariantType.UInt32: int_type("UInt32", 32, signed=False),
    ua.VariantType.Int64: int_type("Int64", 64, signed=True),
    ua.VariantType.UInt64: int_type("UInt64", 64, signed=False),
    ua.VariantType.Float: float_type("Float", 32),
    ua.VariantType.Double: float_type("Double", 64),
}
#: the connect sequence is about five round trips (hello, channel, session, activate, ...)
_CONNECT_ROUND_TRIPS = 5


class LinkState(StrEnum):
    """Connection state of one OPC-UA device."""

    DISCONNECTED = "disconnected"  # never connected, or closed by us
    CONNECTED = "connected"
    OFFLINE = "offline"  # lost or refused; backing off before the next attempt


# ------------------------------------------------------------------------- pure codec


def ua_raw_from_value(value: float, spec: PointSpec, variant_type: ua.VariantType) -> UaRaw:
    """The raw node value of engineering ``value``: ``(value - offset) / scale``, node's type.

    The rounding and range checks are every driver's
    (:func:`~laterne.drivers.field.scaling.raw_from_value`); a Boolean node gets ``True``/``False``.

    Raises
    ------
    EncodeError
        not finite, out of the type's range, not 0/1 for Boolean, or an unsupported type.
    """
    raw_type = _UA_RAW_TYPES.get(variant_type)
    if raw_type is None:
        raise EncodeError(value, variant_type.name, "the node's data type is not numeric")
    raw = raw_from_value(value, spec, raw_type)
    return bool(raw) if variant_type is ua.VariantType.Boolean else raw


def value_from_ua(raw: object, spec: PointSpec) -> float:
    """The engineering value ``raw * scale + offset`` of a node value.

    Raises
    ------
    DecodeError
        ``raw`` is not a bool, int or float (a string, an array, a structure, null).
    """
    if isinstance(raw, bool | int | float):
        return float(raw) * spec.scale + spec.offset
    raise DecodeError(f"node value {raw!r} ({type(raw).__name__}) is not a number")


# ---------------------------------------------------------------------------- device

#: extra round trips of the unsecured GetEndpoints exchange (hello, channel, request, close)
_ENDPOINT_ROUND_TRIPS = 4
#: the shortest session timeout we request [s]; a dead client's session expires after it
_MIN_SESSION_TIMEOUT_S = 30.0


@dataclass
class _Session:
    """What one connection knows. Dropped with its client: nothing here survives a reconnect."""

    client: Client
    node_ids: dict[str, ua.NodeId] = field(default_factory=dict)  # resolved points
    unresolved: dict[str, UnresolvedAddress] = field(default_factory=dict)  # point -> why
    resolved: bool = False
    prepared: bool = False  # subscription created, or polling chosen
    feed: Feed | None = None
    polled: list[str] = field(default_factory=list)  # points read with a Read call
    variant_types: dict[str, ua.VariantType] = field(default_factory=dict)


class OpcUaDevice:
    """One OPC-UA server (endpoint URL) read and written by its profile.

    Parameters
    ----------
    device : the site's device entry (its endpoint must be an :class:`OpcUaEndpoint`);
        ``timeout_s`` bounds every request, ``stale_after_s`` the silence of a subscription
    profile : its profile (an :class:`OpcUaProfile`)
    backoff : reconnect policy; by default ``Backoff(monotonic=monotonic)``
    monotonic : clock for the default backoff and for subscription liveness [s]
    environ : where credential variables are looked up; by default ``os.environ``

    Raises
    ------
    TypeError
        not an OPC-UA device or profile.
    ValueError
        a malformed ``node`` or ``browse_path`` (an ``AddressError``).
    """

    def __init__(
        self,
        device: Device,
        profile: DeviceProfile,
        *,
        backoff: Backoff | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        if not isinstance(device.endpoint, OpcUaEndpoint):
            raise TypeError(f"device {device.id!r} has no OPC-UA endpoint")
        if not isinstance(profile, OpcUaProfile):
            raise TypeError(f"device {device.id!r}: profile protocol is {profile.protocol!r}")
        self._device = device
        self._profile: OpcUaProfile = profile
        self._endpoint: OpcUaEndpoint = device.endpoint
        self._url: str = device.endpoint.url
        self._timeout_s: float = device.timeout_s
        self._stale_after_s: float = device.stale_after_s
        self._monotonic = monotonic
        self._environ = environ
        self._backoff = backoff if backoff is not None else Backoff(monotonic=monotonic)
        # parse every node id and browse path now: a malformed one is a configuration error
        self._nodes: dict[str, NodeAddress] = {}
        self._paths: dict[str, BrowsePath] = {}
        for name, spec in profile.points.items():
            if spec.node is not None:
                self._nodes[name] = parse_node_id(spec.node)
            else:
                assert spec.browse_path is not None  # the profile guarantees one of the two
                self._paths[name] = parse_browse_path(spec.browse_path)
        self._session: _Session | None = None
        self._failure: DriverError | None = None  # what started the backoff running now
        self._state = LinkState.DISCONNECTED
        self._lock = asyncio.Lock()
        self._last_mode: Mode | None = None  # to log a change of mode once
        self._subscriptions_created = 0
        self._notifications_before = 0  # data changes counted by feeds already dropped

    def __repr__(self) -> str:
        return f"OpcUaDevice({self.device_id!r}, {self._url!r})"

    @property
    def device_id(self) -> str:
        """The device's id in the site configuration."""
        return str(self._device.id)

    @property
    def state(self) -> LinkState:
        """The connection state (OFFLINE while backing off)."""
        if self._state is LinkState.CONNECTED and not self._client_alive():
            return LinkState.OFFLINE
        return self._state

    @property
    def mode(self) -> Mode:
        """``"subscription"`` while a subscription feeds the reads, else ``"polling"``.

        Before the first connection (and while offline) this is what the endpoint asks for.
        """
        session = self._session
        if session is None or not session.prepared:
            return "subscription" if self._endpoint.subscribe else "polling"
        return "subscription" if session.feed is not None else "polling"

    @property
    def subscription_id(self) -> int | None:
        """The server's id of our subscription on the current session, if there is one."""
        session = self._session
        if session is None or session.feed is None:
            return None
        return session.feed.subscription_id

    @property
    def subscriptions_created(self) -> int:
        """Subscriptions created since construction (one per connection, plus re-creations)."""
        return self._subscriptions_created

    @property
    def notifications(self) -> int:
        """Data-change notifications received since construction [count]."""
        session = self._session
        live = session.feed.notifications if session is not None and session.feed else 0
        return self._notifications_before + live

    def source_timestamp(self, point: str) -> datetime | None:
        """Source (else server) timestamp of the latest subscribed value of ``point`` (UTC)."""
        session = self._session
        if session is None or session.feed is None:
            return None
        sample = session.feed.samples.get(point)
        return sample.source_ts if sample is not None else None

    @property
    def backoff(self) -> Backoff:
        """The reconnect policy (read its ``failures`` and ``remaining_s()``)."""
        return self._backoff

    async def read(self, now: datetime) -> dict[str, PointReading]:
        """Every point, from the subscription's table or one Read call; see ``DeviceClient``."""
        require_utc(now)
        names = list(self._profile.points)
        async with self._lock:
            session = await self._ready()
            feed = session.feed
            if feed is not None and (feed.lost or feed.silent_s() > self._stale_after_s):
                reason = feed.lost_reason or f"not heard from for {feed.silent_s():.1f} s"
                sid = feed.subscription_id
                _log.warning("%s: subscription %s %s; re-creating it", self._ctx, sid, reason)
                await self._drop_feed(session)
                await self._start_feed(session)
            polled = await self._read_values(session, session.polled) if session.polled else {}
            feed = session.feed
        readings: dict[str, PointReading] = {}
        for name in names:
            spec = self._profile.points[name]
            unresolved = session.unresolved.get(name)
            dv = polled.get(name)
            if dv is None and feed is not None and name in feed.samples:
                dv = feed.samples[name].value
            if unresolved is not None:
                readings[name] = faulty_reading(self.device_id, name, now, str(unresolved))
            elif dv is None:
                readings[name] = faulty_reading(self.device_id, name, now, "no value received")
            else:
                try:
                    value = self._value_of(dv, spec)
                except (BadStatus, DecodeError) as exc:
                    readings[name] = faulty_reading(self.device_id, name, now, str(exc))
                else:
                    readings[name] = reading_from_value(self.device_id, name, spec, value, now)
        return readings

    async def write(self, point: str, value: float) -> float:
        """Write one point in the node's own type, read it back; see ``DeviceClient.write``."""
        spec = check_command(self.device_id, self._profile.points, point, value)
        async with self._lock:
            session = await self._ready()
            unresolved = session.unresolved.get(point)
            if unresolved is not None:  # a fresh exception: re-raising one grows its traceback
                raise again(unresolved)
            client = session.client
            node = client.get_node(session.node_ids[point])
            variant_type = session.variant_types.get(point)
            if variant_type is None:
                async with self._guard():
                    variant_type = await node.read_data_type_as_variant_type()
                session.variant_types[point] = variant_type  # non-numeric fails in the encoder
            raw = ua_raw_from_value(value, spec, variant_type)
            async with self._guard():
                results = await client.uaclient.write_attributes(
                    [node.nodeid],
                    [ua.DataValue(ua.Variant(raw, variant_type))],
                    AttributeIds.Value,
                )
            status = results[0]
            if not status.is_good():
                if status.value == StatusCodes.BadTypeMismatch:
                    session.variant_types.pop(point, None)  # the server changed; ask again
                raise BadStatus(status.value, f"{self._ctx}: write {point!r}")
            dv = (await self._read_values(session, [point]))[point]
            if session.feed is not None and point in session.feed.samples:
                session.feed.update(point, dv)
        got = self._value_of(dv, spec)
        expected = value_from_ua(raw, spec)
        tolerance = readback_tolerance(expected, spec, _UA_RAW_TYPES[variant_type])
        if abs(got - expected) > tolerance:
            raise WriteMismatch(point, value, got, context=self.device_id)
        return got

    async def close(self) -> None:
        """Close the session (deleting its subscription). The next call reconnects."""
        async with self._lock:
            await self._discard()
            self._state = LinkState.DISCONNECTED

    # ------------------------------------------------------------------------ internals

    @property
    def _ctx(self) -> str:
        return f"opcua {self.device_id} ({self._url})"

    def _client_alive(self) -> bool:
        session = self._session
        return session is not None and session.client.state is UaClientState.CONNECTED

    def _value_of(self, dv: ua.DataValue, spec: PointSpec) -> float:
        status = dv.StatusCode
        if status is not None and not status.is_good():
            raise BadStatus(status.value, self._ctx)
        return value_from_ua(dv.Value.Value if dv.Value is not None else None, spec)

    async def _read_values(
        self, session: _Session, names: Sequence[str]
    ) -> dict[str, ua.DataValue]:
        """Value attribute (with both timestamps) of ``names``, in one Read service call."""
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        for name in names:
            rv = ua.ReadValueId()
            rv.NodeId = session.node_ids[name]
            rv.AttributeId = AttributeIds.Value
            params.NodesToRead.append(rv)
        async with self._guard():
            data_values = await session.client.uaclient.read(params)
        if len(data_values) != len(names):
            raise DecodeError(f"{self._ctx}: asked for {len(names)} values, got {len(data_values)}")
        return dict(zip(names, data_values, strict=True))

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """Map asyncua exceptions; a communication failure also drops the client (backoff), and
        so does a protocol error (asyncua may have lost track of the session)."""
        try:
            with map_opcua_exceptions(self._ctx):
                yield
        except (CommunicationError, ProtocolError) as exc:
            await self._discard()
            self._failed(exc)
            raise

    async def _ready(self) -> _Session:
        """A connected session with browse paths resolved and the read mode chosen."""
        session = await self._connected()
        if not session.resolved:
            await self._resolve(session)
        if not session.prepared:
            if self._endpoint.subscribe:
                await self._start_feed(session)
            else:
                session.polled = list(session.node_ids)
            session.prepared = True
            self._log_mode()
        return session

    async def _connected(self) -> _Session:
        if self._session is not None and self._client_alive():
            return self._session
        if self._session is not None:  # it was connected and is not any more: try once at once
            _log.info("%s: connection lost, reconnecting", self._ctx)
            await self._discard()
        if not self._backoff.ready():
            # the same kind of error as the failure that started the backoff, with its cause
            failure = self._failure or DeviceOffline(
                f"{self._ctx}: offline after {self._backoff.failures} failed attempt(s)"
            )
            raise again(failure, f"{failure}; next attempt in {self._backoff.remaining_s():.1f} s")
        watchdog_s = max(1.0, self._device.poll_interval_s)
        client = Client(self._url, timeout=self._timeout_s, watchdog_intervall=watchdog_s)
        session_timeout_s = max(_MIN_SESSION_TIMEOUT_S, 4 * watchdog_s, 2 * self._stale_after_s)
        client.session_timeout = round(1000 * session_timeout_s)  # [ms]
        apply_credentials(client, self._endpoint, self._ctx, self._environ)  # before any I/O
        round_trips = _CONNECT_ROUND_TRIPS
        if self._endpoint.security != "none" and self._endpoint.server_certificate is None:
            round_trips += _ENDPOINT_ROUND_TRIPS
        secured = self._endpoint.security != "none"
        try:
            with map_opcua_exceptions(self._ctx):  # the timeout of the whole sequence
                async with asyncio.timeout(self._timeout_s * round_trips):
                    with map_opcua_exceptions(self._ctx):  # GetEndpoints, unsecured
                        await apply_security(client, self._endpoint, self._ctx)
                    with map_opcua_exceptions(self._ctx, opening_secure_channel=secured):
                        await client.connect(auto_reconnect=False)
        except BaseException as exc:
            await _disconnect_quietly(client, self._timeout_s)
            if isinstance(exc, DriverError) and not isinstance(exc, SetupError):
                self._failed(exc)  # refused sessions back off too
            raise
        self._session = _Session(client)
        self._answered()
        return self._session

    async def _resolve(self, session: _Session) -> None:
        """NodeIds of every point: parsed ones with their namespace URI looked up in the
        server's namespace array, browse paths in one call."""
        session.node_ids = {}
        session.unresolved = {}
        by_uri = any(a.namespace_uri is not None for a in self._nodes.values())
        namespaces = await self._namespace_array(session) if by_uri else []
        for name, address in self._nodes.items():
            text = str(self._profile.points[name].node)
            try:
                resolved = resolve_namespace(address, namespaces, text, self._ctx)
            except UnknownNamespace as exc:
                session.unresolved[name] = exc
            else:
                session.node_ids[name] = node_id(resolved)
        if self._paths:
            names = list(self._paths)
            requests = [browse_path_request(self._paths[n]) for n in names]
            async with self._guard():
                results = await session.client.uaclient.translate_browsepaths_to_nodeids(requests)
            if len(results) != len(names):
                raise DecodeError(f"{self._ctx}: {len(names)} browse paths, {len(results)} results")
            for name, result in zip(names, results, strict=True):
                text = format_browse_path(self._paths[name])
                complete = [t for t in result.Targets if t.RemainingPathIndex == _WHOLE_PATH]
                if not result.StatusCode.is_good():
                    reason = str(result.StatusCode.name)
                    session.unresolved[name] = UnresolvedBrowsePath(text, reason, self._ctx)
                elif len(complete) != 1:
                    reason = f"{len(complete)} nodes match"
                    session.unresolved[name] = UnresolvedBrowsePath(text, reason, self._ctx)
                else:
                    target = complete[0].TargetId
                    session.node_ids[name] = ua.NodeId(target.Identifier, target.NamespaceIndex)
        for name, err in session.unresolved.items():
            _log.warning("point %r: %s", name, err)  # err names the device
        # keep the profile's order, so reads and monitored items follow it
        order = [n for n in self._profile.points if n in session.node_ids]
        session.node_ids = {n: session.node_ids[n] for n in order}
        session.resolved = True

    async def _namespace_array(self, session: _Session) -> list[str]:
        """The server's NamespaceArray (i=2255): namespace URIs, index = position."""
        rv = ua.ReadValueId()
        rv.NodeId = ua.NodeId(ua.Int32(ObjectIds.Server_NamespaceArray))
        rv.AttributeId = AttributeIds.Value
        params = ua.ReadParameters()
        params.NodesToRead.append(rv)
        async with self._guard():
            (dv,) = await session.client.uaclient.read(params)
        if dv.StatusCode is not None and not dv.StatusCode.is_good():
            raise BadStatus(dv.StatusCode.value, f"{self._ctx}: NamespaceArray")
        value = dv.Value.Value if dv.Value is not None else None
        if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
            raise DecodeError(f"{self._ctx}: NamespaceArray is not a list of URIs: {value!r}")
        return list(value)

    async def _start_feed(self, session: _Session) -> None:
        """Subscribe to every resolved point and fill the table by one Read; on a refusal by
        the server, fall back to polling for this connection."""
        names = list(session.node_ids)
        session.feed = None
        session.polled = list(names)
        if not names:
            return
        interval_ms = self._endpoint.publishing_interval_ms
        keepalive = keepalive_count(interval_ms, self._stale_after_s)
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = interval_ms
        params.RequestedMaxKeepAliveCount = keepalive
        params.RequestedLifetimeCount = 3 * keepalive
        params.MaxNotificationsPerPublish = 0  # no limit
        params.PublishingEnabled = True
        params.Priority = 0
        feed = Feed({i: n for i, n in enumerate(names, start=1)}, self._monotonic)
        client = session.client
        try:
            async with self._guard():
                created = await client.uaclient.create_subscription(params, feed.on_publish)
        except DeviceRefused as exc:
            self._fall_back(str(exc))
            return
        feed.subscription_id = int(created.SubscriptionId)
        items = []
        for handle, name in feed.handles.items():
            item = ua.MonitoredItemCreateRequest()
            item.ItemToMonitor.NodeId = session.node_ids[name]
            item.ItemToMonitor.AttributeId = AttributeIds.Value
            item.MonitoringMode = ua.MonitoringMode.Reporting
            item.RequestedParameters.ClientHandle = handle
            item.RequestedParameters.SamplingInterval = interval_ms
            item.RequestedParameters.QueueSize = 1
            item.RequestedParameters.DiscardOldest = True
            items.append(item)
        mparams = ua.CreateMonitoredItemsParameters()
        mparams.SubscriptionId = feed.subscription_id
        mparams.TimestampsToReturn = ua.TimestampsToReturn.Both
        mparams.ItemsToCreate = items
        try:
            async with self._guard():
                results = await client.uaclient.create_monitored_items(mparams)
        except DeviceRefused as exc:
            await self._delete_subscription(client, feed.subscription_id)
            self._fall_back(str(exc))
            return
        if len(results) != len(names):
            raise DecodeError(f"{self._ctx}: {len(names)} monitored items, {len(results)} results")
        monitored = [n for n, r in zip(names, results, strict=True) if r.StatusCode.is_good()]
        for name, result in zip(names, results, strict=True):
            if not result.StatusCode.is_good():
                status = result.StatusCode.name
                _log.info("%s: point %r not monitored (%s); polling it", self._ctx, name, status)
        # one full read, so that no point waits for its first change
        if monitored:
            try:
                for name, dv in (await self._read_values(session, monitored)).items():
                    feed.update(name, dv)
            except DriverError:  # the next attempt creates a new one: do not leave this behind
                if self._session is session:  # a communication error already dropped it all
                    await self._delete_subscription(client, feed.subscription_id)
                raise
        feed.refreshed()
        session.feed = feed
        session.polled = [n for n in names if n not in monitored]
        self._subscriptions_created += 1

    async def _drop_feed(self, session: _Session) -> None:
        feed, session.feed = session.feed, None
        if feed is None:
            return
        self._notifications_before += feed.notifications
        if feed.subscription_id is not None:
            await self._delete_subscription(session.client, feed.subscription_id)

    async def _delete_subscription(self, client: Client, subscription_id: int) -> None:
        """Best effort: a subscription we cannot delete expires after its lifetime."""
        with suppress(Exception):
            async with asyncio.timeout(self._timeout_s):
                await client.uaclient.delete_subscriptions([subscription_id])

    def _fall_back(self, reason: str) -> None:
        _log.warning("%s: subscriptions refused (%s); polling instead", self._ctx, reason)
        self._last_mode = "polling"

    def _log_mode(self) -> None:
        mode = self.mode
        if mode != self._last_mode:
            _log.info("%s: reading by %s", self._ctx, mode)
        self._last_mode = mode

    async def _discard(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            if session.feed is not None:
                self._notifications_before += session.feed.notifications
            await _disconnect_quietly(session.client, self._timeout_s)

    def _failed(self, exc: DriverError) -> None:
        delay_s = self._backoff.failure()
        self._failure = again(exc)  # without its traceback: it holds the discarded client
        if self._state is not LinkState.OFFLINE:
            _log.warning("%s is offline (%s); retrying in %.1f s", self._ctx, exc, delay_s)
        self._state = LinkState.OFFLINE

    def _answered(self) -> None:
        self._backoff.success()
        self._failure = None
        if self._state is LinkState.OFFLINE:
            _log.info("%s recovered", self._ctx)
        self._state = LinkState.CONNECTED


#: RemainingPathIndex of a target that matched the whole browse path (OPC-UA Part 4, 7.30)
_WHOLE_PATH = 0xFFFFFFFF


async def _disconnect_quietly(client: Client, timeout_s: float) -> None:
    """Close session, channel and socket; a dead server must not make this fail or hang."""
    with suppress(Exception):
        async with asyncio.timeout(timeout_s * 2):
            await client.disconnect()
