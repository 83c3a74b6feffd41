"""OPC-UA driver: polling reads in one service call, typed writes with read-back, our own reconnect.

Rule: asyncua is touched only here, and each of its failures leaves as one
:class:`~laterne.drivers.errors.DriverError`. Reconnecting is ours, not asyncua's
(``auto_reconnect=False``): after a loss the client object is discarded and a fresh one is built
on the next use, after the same jittered exponential backoff as Modbus (asyncua #1660).

Theory of operation
-------------------
The device is in one of three :class:`LinkState` states::

    DISCONNECTED --first use--> CONNECTED --failure--> OFFLINE --backoff over, next use--> ...
         ^                                                                                 |
         +------------------------------- close() ------------------------------------------+

A failed connect or a request that fails for lack of a connection enters OFFLINE and starts the
backoff; while it runs, every call raises ``DeviceOffline`` without touching the network. A
connection found dead *between* calls (asyncua's watchdog saw the socket close) is rebuilt at
once by the next call, which only backs off if that fails. A timeout counts as a loss too: one
OPC-UA client serves one device, so there are no neighbours to protect (unlike a Modbus gateway).

Reads fetch every node's Value attribute in one Read service call. A node whose status is not
Good (Bad or Uncertain) or whose value is not a number becomes a FAULTY reading; so does a value
outside the point's ``[min, max]``. ``value = raw * scale + offset`` as for Modbus.

Writes are checked against the profile first (``NotWritable``, ``OutOfBounds``), then encoded in
the node's *own* data type, read once from the server and cached: a Float node gets a Float
variant, never a Double, because servers refuse mismatched types (``BadTypeMismatch``). Writes
carry no timestamps (many PLCs refuse them). The value is read back and compared within half a
scale step (integers) or a few float ULPs; the read-back is returned. ``PointSpec.type`` is not
consulted for OPC-UA: the node's DataType rules. Subscriptions and security come later.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from enum import StrEnum

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.common.node import Node
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes

from laterne.models.site import DataType, Device, DeviceProfile, OpcUaEndpoint, PointSpec
from laterne.models.values import PointReading

from .backoff import Backoff
from .codec import readback_tolerance
from .errors import (
    BadStatus,
    CommunicationError,
    DecodeError,
    DeviceOffline,
    DriverError,
    EncodeError,
    WriteMismatch,
    map_exceptions,
)
from .points import check_command, faulty_reading, reading_from_value, require_utc

__all__ = ["LinkState", "OpcUaDevice", "ua_raw_from_value", "value_from_ua"]

_log = logging.getLogger(__name__)

UaRaw = bool | int | float

#: integer range of each OPC-UA integer type
_UA_INT_RANGE: dict[ua.VariantType, tuple[int, int]] = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1),
    ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: (0, 2**64 - 1),
}
#: the Modbus-side data type with the same read-back tolerance as each OPC-UA type
_TOLERANCE_TYPE: dict[ua.VariantType, DataType] = {
    ua.VariantType.Boolean: "bool",
    ua.VariantType.SByte: "i16",
    ua.VariantType.Byte: "u16",
    ua.VariantType.Int16: "i16",
    ua.VariantType.UInt16: "u16",
    ua.VariantType.Int32: "i32",
    ua.VariantType.UInt32: "u32",
    ua.VariantType.Int64: "i64",
    ua.VariantType.UInt64: "u64",
    ua.VariantType.Float: "f32",
    ua.VariantType.Double: "f64",
}
_F32_MAX = 3.4028234663852886e38
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

    Raises
    ------
    EncodeError
        not finite, out of the type's range, not 0/1 for Boolean, or an unsupported type.
    """
    name = variant_type.name
    if not math.isfinite(value):
        raise EncodeError(value, name, "not a finite number")
    raw = (value - spec.offset) / spec.scale
    if variant_type is ua.VariantType.Double:
        return float(raw)
    if variant_type is ua.VariantType.Float:
        if abs(raw) > _F32_MAX:
            raise EncodeError(value, name, f"raw value {raw!r} exceeds the Float range")
        return float(raw)
    if not math.isfinite(raw):
        raise EncodeError(value, name, f"raw value {raw!r} is not finite")
    raw_int = int(math.copysign(math.floor(abs(raw) + 0.5), raw))  # round half away from zero
    if variant_type is ua.VariantType.Boolean:
        if raw_int not in (0, 1):
            raise EncodeError(value, name, f"raw value {raw_int} is not 0 or 1")
        return bool(raw_int)
    if variant_type not in _UA_INT_RANGE:
        raise EncodeError(value, name, "the node's data type is not numeric")
    lo, hi = _UA_INT_RANGE[variant_type]
    if not lo <= raw_int <= hi:
        raise EncodeError(value, name, f"raw value {raw_int} is outside [{lo}, {hi}]")
    return raw_int


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


class OpcUaDevice:
    """One OPC-UA server (endpoint URL) read and written by its profile.

    Parameters
    ----------
    device : the site's device entry (its endpoint must be an :class:`OpcUaEndpoint`);
        ``timeout_s`` bounds every request
    profile : its profile (protocol ``opcua``)
    backoff : reconnect policy; by default ``Backoff(monotonic=monotonic)``
    monotonic : clock for the default backoff [s]
    """

    def __init__(
        self,
        device: Device,
        profile: DeviceProfile,
        *,
        backoff: Backoff | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(device.endpoint, OpcUaEndpoint):
            raise TypeError(f"device {device.id!r} has no OPC-UA endpoint")
        if profile.protocol != "opcua":
            raise TypeError(f"device {device.id!r}: profile protocol is {profile.protocol!r}")
        self._device = device
        self._profile = profile
        self._url: str = device.endpoint.url
        self._timeout_s: float = device.timeout_s
        self._backoff = backoff if backoff is not None else Backoff(monotonic=monotonic)
        # parse every node id now: a malformed one is a configuration error, not a field failure
        self._node_ids: dict[str, ua.NodeId] = {}
        for name, spec in profile.points.items():
            assert spec.node is not None  # the profile guarantees it
            self._node_ids[name] = ua.NodeId.from_string(spec.node)
        self._variant_types: dict[str, ua.VariantType] = {}
        self._client: Client | None = None
        self._state = LinkState.DISCONNECTED
        self._lock = asyncio.Lock()

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
    def backoff(self) -> Backoff:
        """The reconnect policy (read its ``failures`` and ``remaining_s()``)."""
        return self._backoff

    async def read(self, now: datetime) -> dict[str, PointReading]:
        """Read every point in one Read call; see :meth:`laterne.drivers.base.DeviceClient.read`."""
        require_utc(now)
        names = list(self._profile.points)
        async with self._lock:
            client = await self._connected()
            nodes = [client.get_node(self._node_ids[n]) for n in names]
            async with self._guard():
                data_values = await client.read_attributes(nodes, AttributeIds.Value)
        if len(data_values) != len(names):
            raise DecodeError(f"{self._ctx}: asked for {len(names)} values, got {len(data_values)}")
        readings: dict[str, PointReading] = {}
        for name, dv in zip(names, data_values, strict=True):
            spec = self._profile.points[name]
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
            client = await self._connected()
            node = client.get_node(self._node_ids[point])
            variant_type = await self._variant_type(point, node)
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
                    self._variant_types.pop(point, None)  # the server changed; ask again
                raise BadStatus(status.value, f"{self._ctx}: write {point!r}")
            async with self._guard():
                (dv,) = await client.read_attributes([node], AttributeIds.Value)
        got = self._value_of(dv, spec)
        expected = value_from_ua(raw, spec)
        tolerance = readback_tolerance(expected, spec, _TOLERANCE_TYPE[variant_type])
        if abs(got - expected) > tolerance:
            raise WriteMismatch(point, value, got, context=self.device_id)
        return got

    async def close(self) -> None:
        """Close the session. The next call reconnects (subject to backoff)."""
        async with self._lock:
            await self._discard()
            self._state = LinkState.DISCONNECTED

    # ------------------------------------------------------------------------ internals

    @property
    def _ctx(self) -> str:
        return f"opcua {self.device_id} ({self._url})"

    def _client_alive(self) -> bool:
        return self._client is not None and self._client.state is UaClientState.CONNECTED

    def _value_of(self, dv: ua.DataValue, spec: PointSpec) -> float:
        status = dv.StatusCode
        if status is not None and not status.is_good():
            raise BadStatus(status.value, self._ctx)
        return value_from_ua(dv.Value.Value if dv.Value is not None else None, spec)

    async def _variant_type(self, point: str, node: Node) -> ua.VariantType:
        cached = self._variant_types.get(point)
        if cached is not None:
            return cached
        async with self._guard():
            variant_type = await node.read_data_type_as_variant_type()
        self._variant_types[point] = variant_type  # a non-numeric one fails in the encoder
        return variant_type

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """Map asyncua exceptions; a communication failure also drops the client (backoff)."""
        try:
            with map_exceptions(self._ctx):
                yield
        except CommunicationError as exc:
            await self._discard()
            self._failed(str(exc))
            raise

    async def _connected(self) -> Client:
        if self._client is not None and self._client_alive():
            return self._client
        if self._client is not None:  # it was connected and is not any more: try once at once
            _log.info("%s: connection lost, reconnecting", self._ctx)
            await self._discard()
        if not self._backoff.ready():
            raise DeviceOffline(
                f"{self._ctx}: offline after {self._backoff.failures} failed attempt(s),"
                f" next attempt in {self._backoff.remaining_s():.1f} s"
            )
        client = Client(
            self._url,
            timeout=self._timeout_s,
            watchdog_intervall=max(1.0, self._device.poll_interval_s),
        )
        try:
            with map_exceptions(self._ctx):
                async with asyncio.timeout(self._timeout_s * _CONNECT_ROUND_TRIPS):
                    await client.connect(auto_reconnect=False)
        except BaseException as exc:
            await _disconnect_quietly(client, self._timeout_s)
            if isinstance(exc, DriverError):  # refused sessions back off too
                self._failed(str(exc))
            raise
        self._client = client
        self._answered()
        return client

    async def _discard(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _disconnect_quietly(client, self._timeout_s)

    def _failed(self, reason: str) -> None:
        delay_s = self._backoff.failure()
        if self._state is not LinkState.OFFLINE:
            _log.warning("%s is offline (%s); retrying in %.1f s", self._ctx, reason, delay_s)
        self._state = LinkState.OFFLINE

    def _answered(self) -> None:
        self._backoff.success()
        if self._state is LinkState.OFFLINE:
            _log.info("%s recovered", self._ctx)
        self._state = LinkState.CONNECTED


async def _disconnect_quietly(client: Client, timeout_s: float) -> None:
    """Close session, channel and socket; a dead server must not make this fail or hang."""
    with suppress(Exception):
        async with asyncio.timeout(timeout_s * 2):
            await client.disconnect()
