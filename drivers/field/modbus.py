"""Modbus TCP driver: shared connections per gateway, typed errors, reconnect with backoff.

Rule: pymodbus is touched only by :class:`ModbusGateway`, and every one of its failure shapes
(it raises, returns a response whose ``isError()`` is true, or logs and drops a frame, which we
see as a timeout) leaves the gateway as exactly one
:class:`~laterne.drivers.field.errors.DriverError`:
what it raises through :func:`map_modbus_exceptions`, the driver's one exception mapping.

Theory of operation
-------------------
A *gateway* is one ``host:port``. Every Modbus unit behind it (unit ids 1, 2, 3 on an RTU
gateway, or the one unit of a plain TCP device) shares its connections. ``max_in_flight``
(default 1) bounds the requests outstanding at the endpoint at once. pymodbus 3.16 serialises
requests per client (one lock per connection), so the gateway keeps a small pool of up to
``max_in_flight`` TCP connections and hands each request an idle one: with the default of 1 there
is exactly one connection and requests on it are strictly serialised, as most gateways require;
with N > 1 up to N requests overlap on N connections. Connections are opened lazily, one at a time
(under one lock, so a dead endpoint costs one connect attempt, not N).

Failures and what they do to the connection:

=================================  =================  ==========================================
failure                            raised             connection
=================================  =================  ==========================================
connect refused / connect timeout  DeviceOffline      backoff starts
connection lost                    DeviceOffline      that connection dropped, backoff starts
no answer in ``timeout_s``         DeviceTimeout      kept (one silent unit must not take its
                                                      neighbours offline); dropped, without
                                                      backoff, after 3 timeouts in a row on it
exception response                 ExceptionResponse  kept; the gateway answered
during backoff                     DeviceOffline      not touched: fails at once
=================================  =================  ==========================================

Backoff (:class:`~laterne.drivers.backoff.Backoff`) is exponential with jitter and a cap, on an
injected monotonic clock. Any answer, even an exception response, ends it. Loss and recovery of
a gateway are logged once each, on the transition.

A :class:`ModbusDevice` is one unit id plus its profile. It reads all points through the merged
read plan of :func:`~laterne.drivers.field.modbus_codec.plan_reads`, sized by the profile
(``max_gap_registers``, ``max_read_registers``); if the device refuses a read that spans a gap
(ILLEGAL DATA ADDRESS), it re-plans once without gaps and keeps that plan. A unit that does not
answer (a dead RTU slave behind a live gateway) gets its own backoff: until it is due again its
reads fail at once with ``DeviceOffline``, so it does not cost its neighbours ``timeout_s`` on
the shared connection every poll (OpenEMS #6, Home Assistant #51326). Writes are checked against
the profile before anything is sent, then read back and compared. Register writes use function
code 16 (Write Multiple Registers), or 06 (Write Single Register) for a profile with
``write_function: single``, for controllers that implement only that; coils use 05.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ExceptionResponse as PduExceptionResponse
from pymodbus.pdu import ModbusPDU

from laterne.models.site import Device, DeviceProfile, ModbusEndpoint, ModbusProfile
from laterne.models.values import PointReading, Quality

from ..backoff import Backoff
from .errors import (
    DecodeError,
    DeviceOffline,
    DeviceTimeout,
    DriverError,
    ExceptionResponse,
    WriteMismatch,
    map_socket_exceptions,
)
from .modbus_codec import BlockDecoder, ReadBlock, Table, decode, encode, plan_reads
from .points import check_command, faulty_reading, reading_from_value, require_utc
from .scaling import readback_tolerance

__all__ = ["ModbusDevice", "ModbusGateway", "map_modbus_exceptions"]

_log = logging.getLogger(__name__)

#: consecutive unanswered requests (any unit) after which the connection is presumed half-open
_MAX_SILENT_REQUESTS = 3
#: Modbus exception code 0x02: the device does not map an address in the request
_ILLEGAL_DATA_ADDRESS = 0x02

_Request = Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]]


@contextmanager
def map_modbus_exceptions(context: str) -> Iterator[None]:
    """Re-raise pymodbus's and the socket layer's exceptions as typed driver errors.

    ``context`` names the endpoint (e.g. ``"modbus 127.0.0.1:502 unit 3"``) and prefixes every
    message. Our own :class:`~laterne.drivers.field.errors.DriverError` passes through untouched;
    anything else (``ParameterException``: a bug, ours or the library's) propagates unchanged.
    An exception *response* is not raised by pymodbus but returned; :class:`ModbusGateway`
    turns it into an :class:`~laterne.drivers.field.errors.ExceptionResponse`.

    ==========================================  =====================
    raised inside the block                     re-raised as
    ==========================================  =====================
    ``TimeoutError`` / ``asyncio.TimeoutError``  DeviceTimeout
    ``OSError`` incl. ``ConnectionError``        DeviceOffline
    pymodbus ``ModbusIOException`` (no answer)   DeviceTimeout
    pymodbus ``ConnectionException``             DeviceOffline
    ==========================================  =====================
    """
    try:
        with map_socket_exceptions(context):
            yield
    except ModbusIOException as exc:
        raise DeviceTimeout(f"{context}: {exc.string}") from exc
    except ConnectionException as exc:
        raise DeviceOffline(f"{context}: {exc.string}") from exc


class _Loss:
    """Whether pymodbus reported a connection lost, and the request waiting on that connection.

    pymodbus does not fail a pending request when the peer closes the connection (it waits for
    the timeout), so its ``trace_connect(False)`` callback wakes the waiter here instead.
    """

    __slots__ = ("lost", "waiter")

    def __init__(self) -> None:
        self.lost = False
        self.waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self.lost = True
        _wake(self.waiter)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


@dataclass(slots=True)
class _Link:
    """One TCP connection, its loss flag and its run of unanswered requests."""

    client: AsyncModbusTcpClient
    loss: _Loss
    silent_requests: int = 0

    @property
    def usable(self) -> bool:
        return self.client.connected and not self.loss.lost


class ModbusGateway:
    """One Modbus TCP endpoint (``host:port``), shared by every unit id behind it.

    Parameters
    ----------
    host, port : the TCP endpoint
    timeout_s : connect timeout and answer timeout of each request [s]
    max_in_flight : requests outstanding at the endpoint at once; each in-flight request has a
        TCP connection of its own (pymodbus serialises requests per connection), so this is
        also the most connections the gateway opens. 1 (the default): one connection, strictly
        serialised requests.
    backoff : reconnect policy; by default ``Backoff(monotonic=monotonic)``
    monotonic : clock for the default backoff [s]
    """

    def __init__(
        self,
        host: str,
        port: int = 502,
        *,
        timeout_s: float,
        max_in_flight: int = 1,
        backoff: Backoff | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self._backoff = backoff if backoff is not None else Backoff(monotonic=monotonic)
        self._slots = asyncio.Semaphore(max_in_flight)
        # idle slot numbers; a request holds one slot (and its connection) from start to answer
        self._idle: list[int] = list(range(max_in_flight - 1, -1, -1))
        self._links: list[_Link | None] = [None] * max_in_flight
        self._connect_lock = asyncio.Lock()
        self._up: bool | None = None  # None: never tried
        self._users = 0
        self._requests = 0

    def __repr__(self) -> str:
        return f"ModbusGateway({self.host!r}, {self.port})"

    @property
    def label(self) -> str:
        """``host:port``, as used in error messages."""
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """True while at least one TCP connection is open."""
        return self.connections > 0

    @property
    def connections(self) -> int:
        """TCP connections open now (at most ``max_in_flight``)."""
        return sum(1 for link in self._links if link is not None and link.client.connected)

    @property
    def requests(self) -> int:
        """Requests sent since the gateway was made (instrumentation for benchmarks)."""
        return self._requests

    @property
    def backoff(self) -> Backoff:
        """The reconnect policy (read its ``failures`` and ``remaining_s()``)."""
        return self._backoff

    # ------------------------------------------------------------------ public requests

    async def read(self, unit_id: int, table: Table, address: int, count: int) -> list[int]:
        """Read ``count`` registers (or bits, as 0/1) of ``table`` from ``address`` on."""
        ctx = self._context(unit_id)
        if table == "holding":
            pdu = await self._request(
                ctx, lambda c: c.read_holding_registers(address, count=count, device_id=unit_id)
            )
        elif table == "input":
            pdu = await self._request(
                ctx, lambda c: c.read_input_registers(address, count=count, device_id=unit_id)
            )
        elif table == "coil":
            pdu = await self._request(
                ctx, lambda c: c.read_coils(address, count=count, device_id=unit_id)
            )
        else:
            pdu = await self._request(
                ctx, lambda c: c.read_discrete_inputs(address, count=count, device_id=unit_id)
            )
        values: list[int]
        if table in ("coil", "discrete"):
            values = [int(b) for b in pdu.bits[:count]]
        else:
            values = list(pdu.registers)
        if len(values) < count:
            raise DecodeError(
                f"{ctx}: asked for {count} {table} values at {address}, got {len(values)}"
            )
        return values[:count]

    async def write_register(self, unit_id: int, address: int, value: int) -> None:
        """Write one holding register (function code 06, Write Single Register)."""
        await self._request(
            self._context(unit_id),
            lambda c: c.write_register(address, value, device_id=unit_id),
        )

    async def write_registers(self, unit_id: int, address: int, values: Sequence[int]) -> None:
        """Write holding registers from ``address`` on (function code 16)."""
        regs = list(values)
        await self._request(
            self._context(unit_id),
            lambda c: c.write_registers(address, regs, device_id=unit_id),
        )

    async def write_coil(self, unit_id: int, address: int, value: bool) -> None:
        """Write one coil (function code 5)."""
        await self._request(
            self._context(unit_id), lambda c: c.write_coil(address, value, device_id=unit_id)
        )

    async def close(self) -> None:
        """Close every connection now. The next request reconnects (subject to backoff)."""
        for slot in range(self.max_in_flight):
            self._drop(slot)

    def attach(self) -> None:
        """Register one more device using this gateway (see :meth:`release`)."""
        self._users += 1

    async def release(self) -> None:
        """A device stops using the gateway; the last one out closes the connections."""
        self._users = max(0, self._users - 1)
        if self._users == 0:
            await self.close()

    # ------------------------------------------------------------------------ internals

    def _context(self, unit_id: int) -> str:
        return f"modbus {self.label} unit {unit_id}"

    async def _request(self, ctx: str, call: _Request) -> ModbusPDU:
        async with self._slots:
            slot = self._idle.pop()
            try:
                return await self._request_on(slot, ctx, call)
            finally:
                self._idle.append(slot)

    async def _request_on(self, slot: int, ctx: str, call: _Request) -> ModbusPDU:
        link = await self._connected_link(slot)
        self._requests += 1
        try:
            with map_modbus_exceptions(ctx):
                response = await self._answer_or_loss(link, call)
        except DeviceTimeout:
            link.silent_requests += 1
            if link.silent_requests >= _MAX_SILENT_REQUESTS and self._links[slot] is link:
                _log.info(
                    "%s: %d requests in a row unanswered, reconnecting",
                    self.label,
                    link.silent_requests,
                )
                self._drop(slot)
            raise
        except DeviceOffline as exc:
            self._lost(slot, link, str(exc))
            raise
        link.silent_requests = 0
        self._answered()
        if isinstance(response, PduExceptionResponse):
            raise ExceptionResponse(response.exception_code, ctx)
        if response.isError():
            raise DecodeError(f"{ctx}: error response {response}")
        return response

    async def _answer_or_loss(self, link: _Link, call: _Request) -> ModbusPDU:
        """The response, or ``DeviceOffline`` as soon as the connection drops under the request.

        One task per request and one plain future it and the loss callback both complete: no
        watcher task, no ``asyncio.wait`` (this is the hot path of every poll). pymodbus enforces
        ``timeout_s`` itself; the ``2 * timeout_s + 1`` guard only catches a hang inside it.
        """
        loop = asyncio.get_running_loop()
        request: asyncio.Future[ModbusPDU] = asyncio.ensure_future(call(link.client))
        waiter: asyncio.Future[None] = loop.create_future()
        request.add_done_callback(lambda _t: _wake(waiter))
        guard = loop.call_later(2 * self.timeout_s + 1.0, _wake, waiter)
        link.loss.waiter = waiter
        try:
            await waiter
        finally:
            guard.cancel()
            link.loss.waiter = None
            if not request.done():
                request.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await request
        if not request.cancelled():
            return request.result()
        if link.loss.lost:
            raise DeviceOffline(f"modbus {self.label}: connection lost during the request")
        raise DeviceTimeout(f"modbus {self.label}: request hung past {2 * self.timeout_s + 1} s")

    async def _connected_link(self, slot: int) -> _Link:
        link = self._links[slot]
        if link is not None and link.usable:
            return link
        async with self._connect_lock:
            if not self._backoff.ready():
                raise DeviceOffline(
                    f"modbus {self.label}: offline after {self._backoff.failures} failed"
                    f" attempt(s), next attempt in {self._backoff.remaining_s():.1f} s"
                )
            self._drop(slot)
            loss = _Loss()

            def on_connect(connected: bool) -> None:
                if not connected:
                    loss.set()

            client = AsyncModbusTcpClient(
                self.host,
                port=self.port,
                name=self.label,
                timeout=self.timeout_s,
                retries=0,
                reconnect_delay=0,  # reconnects are ours, not a pymodbus background task
                trace_connect=on_connect,
            )
            # silence is handled by _request_on (_MAX_SILENT_REQUESTS), not by pymodbus
            client.set_max_no_responses(1_000_000)
            try:
                with map_modbus_exceptions(f"modbus {self.label}"):
                    ok = await client.connect()
            except DriverError as exc:
                client.close()
                self._lost(slot, None, str(exc))
                raise
            if not ok:
                client.close()
                msg = f"modbus {self.label}: connect refused or timed out"
                self._lost(slot, None, msg)
                raise DeviceOffline(msg)
            link = _Link(client, loss)
            self._links[slot] = link
            return link

    def _drop(self, slot: int) -> None:
        link = self._links[slot]
        if link is not None:
            self._links[slot] = None
            link.client.close()

    def _lost(self, slot: int, link: _Link | None, reason: str) -> None:
        """A connect failed (``link`` None) or the connection ``link`` of ``slot`` was lost."""
        if link is None or self._links[slot] is link:
            self._drop(slot)
        if not self._backoff.ready():
            return  # a sibling connection already reported this outage
        delay_s = self._backoff.failure()
        if self._up is not False:
            _log.warning("%s is offline (%s); retrying in %.1f s", self.label, reason, delay_s)
        self._up = False

    def _answered(self) -> None:
        self._backoff.success()
        if self._up is False:
            _log.info("%s recovered", self.label)
        self._up = True


class ModbusDevice:
    """One Modbus unit behind a :class:`ModbusGateway`, read and written by its profile.

    Parameters
    ----------
    device : the site's device entry (its endpoint must be a :class:`ModbusEndpoint`)
    profile : its profile (a :class:`ModbusProfile`); ``max_gap_registers`` and
        ``max_read_registers`` size the read plan (see :func:`plan_reads`)
    gateway : the shared gateway for ``device.endpoint.host:port``
    backoff : this unit's own retry policy after it stops answering; by default
        ``Backoff(monotonic=gateway.backoff.monotonic)``
    """

    def __init__(
        self,
        device: Device,
        profile: DeviceProfile,
        gateway: ModbusGateway,
        *,
        backoff: Backoff | None = None,
    ) -> None:
        if not isinstance(device.endpoint, ModbusEndpoint):
            raise TypeError(f"device {device.id!r} has no Modbus endpoint")
        if not isinstance(profile, ModbusProfile):
            raise TypeError(f"device {device.id!r}: profile protocol is {profile.protocol!r}")
        ep = device.endpoint
        if (ep.host, ep.port) != (gateway.host, gateway.port):
            raise ValueError(
                f"device {device.id!r} is at {ep.host}:{ep.port}, not at gateway {gateway.label}"
            )
        self._device = device
        self._profile: ModbusProfile = profile
        self._gateway = gateway
        self.unit_id: int = ep.unit_id
        self._backoff = (
            backoff if backoff is not None else Backoff(monotonic=gateway.backoff.monotonic)
        )
        # [min, max] of every point, for the fast GOOD path of _read_plan
        self._bounds: dict[str, tuple[float, float]] = {
            name: (
                spec.min if spec.min is not None else -math.inf,
                spec.max if spec.max is not None else math.inf,
            )
            for name, spec in profile.points.items()
        }
        self._plan = self._compile(profile.max_gap_registers)
        self._plan_without_gaps = self._compile(0)
        self._attached = False
        self._attach()

    def _compile(self, max_gap: int) -> list[BlockDecoder]:
        points = self._profile.points
        blocks = plan_reads(points, max_gap=max_gap, max_count=self._profile.max_read_registers)
        return [BlockDecoder(b, points) for b in blocks]

    def _gaps_read_through(self) -> bool:
        """True if the current plan reads registers that no point uses."""
        return [d.block for d in self._plan] != [d.block for d in self._plan_without_gaps]

    @property
    def device_id(self) -> str:
        """The device's id in the site configuration."""
        return str(self._device.id)

    @property
    def gateway(self) -> ModbusGateway:
        """The (shared) gateway this device is reached through."""
        return self._gateway

    @property
    def backoff(self) -> Backoff:
        """This unit's retry policy after timeouts (the gateway has its own for connects)."""
        return self._backoff

    @property
    def plan(self) -> list[ReadBlock]:
        """The read requests one :meth:`read` sends."""
        return [d.block for d in self._plan]

    async def read(self, now: datetime) -> dict[str, PointReading]:
        """Read every point; see :meth:`laterne.drivers.field.base.DeviceClient.read`.

        Raises ``DeviceOffline`` at once, without a request, while this unit is backing off
        after it stopped answering.
        """
        require_utc(now)
        self._attach()
        if not self._backoff.ready():
            raise DeviceOffline(
                f"modbus {self._gateway.label} unit {self.unit_id}: no answer to"
                f" {self._backoff.failures} read(s) in a row, next attempt in"
                f" {self._backoff.remaining_s():.1f} s"
            )
        try:
            try:
                return await self._read_plan(self._plan, now)
            except ExceptionResponse as exc:
                if exc.code != _ILLEGAL_DATA_ADDRESS or not self._gaps_read_through():
                    raise
                _log.info(
                    "%s refuses reads through gaps; reading without gaps from now on",
                    self.device_id,
                )
                self._plan = self._plan_without_gaps
                return await self._read_plan(self._plan, now)
        except DeviceTimeout:
            self._backoff.failure()
            raise

    async def write(self, point: str, value: float) -> float:
        """Write one point and read it back; see ``DeviceClient.write``."""
        check_command(self.device_id, self._profile.points, point, value)
        spec = self._profile.points[point]  # as a ModbusPoint
        raw = encode(value, spec)
        self._attach()
        if spec.table == "coil":
            await self._gateway.write_coil(self.unit_id, spec.address, bool(raw[0]))
        elif self._profile.write_function == "single":
            if len(raw) != 1:  # the site validator refuses such a profile
                raise ValueError(
                    f"{self.device_id}.{point}: write_function single writes one register, "
                    f"but {spec.type} spans {len(raw)}"
                )
            await self._gateway.write_register(self.unit_id, spec.address, raw[0])
        else:
            await self._gateway.write_registers(self.unit_id, spec.address, raw)
        back = await self._gateway.read(self.unit_id, spec.table, spec.address, spec.register_count)
        got = decode(back, spec)
        expected = decode(raw, spec)
        if abs(got - expected) > readback_tolerance(expected, spec):
            raise WriteMismatch(point, value, got, context=self.device_id)
        return got

    async def close(self) -> None:
        """Stop using the gateway; it closes when its last device has closed."""
        if self._attached:
            self._attached = False
            await self._gateway.release()

    def _attach(self) -> None:
        if not self._attached:
            self._attached = True
            self._gateway.attach()

    async def _read_plan(self, plan: list[BlockDecoder], now: datetime) -> dict[str, PointReading]:
        points = self._profile.points
        device_id = self.device_id
        bounds = self._bounds
        readings: dict[str, PointReading] = {}
        for decoder in plan:
            block = decoder.block
            values = await self._gateway.read(self.unit_id, block.table, block.address, block.count)
            try:
                decoded = decoder.decode(values)
            except DecodeError as exc:
                for name in block.points:
                    readings[name] = faulty_reading(device_id, name, now, str(exc))
                continue
            for name, value, error in decoded:
                lo, hi = bounds[name]
                if error:
                    readings[name] = faulty_reading(device_id, name, now, error)
                elif lo <= value <= hi:  # decoded values are finite (floats checked above)
                    readings[name] = PointReading(device_id, name, value, Quality.GOOD, now)
                else:
                    readings[name] = reading_from_value(device_id, name, points[name], value, now)
        self._backoff.success()
        return {name: readings[name] for name in points}  # profile order
