"""Modbus TCP driver: one shared connection per gateway, typed errors, reconnect with backoff.

Rule: pymodbus is touched only by :class:`ModbusGateway`, and every one of its failure shapes
(it raises, returns a response whose ``isError()`` is true, or logs and drops a frame, which we
see as a timeout) leaves the gateway as exactly one :class:`~laterne.drivers.errors.DriverError`.

Theory of operation
-------------------
A *gateway* is one ``host:port``. Every Modbus unit behind it (unit ids 1, 2, 3 on an RTU
gateway, or the one unit of a plain TCP device) shares one TCP connection, and requests on it
are serialised (``max_in_flight``, default 1: most gateways cannot interleave requests). The
connection is opened lazily by the first request.

Failures and what they do to the connection:

=================================  =================  ==========================================
failure                            raised             connection
=================================  =================  ==========================================
connect refused / connect timeout  DeviceOffline      backoff starts
connection lost                    DeviceOffline      dropped, backoff starts
no answer in ``timeout_s``         DeviceTimeout      kept (one silent unit must not take its
                                                      neighbours offline); dropped, without
                                                      backoff, after 3 timeouts in a row
exception response                 ExceptionResponse  kept; the gateway answered
during backoff                     DeviceOffline      not touched: fails at once
=================================  =================  ==========================================

Backoff (:class:`~laterne.drivers.backoff.Backoff`) is exponential with jitter and a cap, on an
injected monotonic clock. Any answer, even an exception response, ends it. Loss and recovery of
a gateway are logged once each, on the transition.

A :class:`ModbusDevice` is one unit id plus its profile. It reads all points through the merged
read plan of :func:`~laterne.drivers.codec.plan_reads`; if the device refuses a read that spans
a gap (ILLEGAL DATA ADDRESS), it re-plans once without gaps and keeps that plan. Writes are
checked against the profile before anything is sent, then read back and compared.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ExceptionResponse as PduExceptionResponse
from pymodbus.pdu import ModbusPDU

from laterne.models.site import Device, DeviceProfile, ModbusEndpoint
from laterne.models.values import PointReading

from .backoff import Backoff
from .codec import ReadBlock, Table, decode, encode, extract, plan_reads, readback_tolerance
from .errors import (
    DecodeError,
    DeviceOffline,
    DeviceTimeout,
    DriverError,
    ExceptionResponse,
    WriteMismatch,
    map_exceptions,
)
from .points import check_command, faulty_reading, reading_from_value, require_utc

__all__ = ["ModbusDevice", "ModbusGateway"]

_log = logging.getLogger(__name__)

#: consecutive unanswered requests (any unit) after which the connection is presumed half-open
_MAX_SILENT_REQUESTS = 3
#: Modbus exception code 0x02: the device does not map an address in the request
_ILLEGAL_DATA_ADDRESS = 0x02

_Request = Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]]


@dataclass(frozen=True, slots=True)
class _Link:
    """One TCP connection and the event pymodbus sets when the peer drops it."""

    client: AsyncModbusTcpClient
    lost: asyncio.Event


class ModbusGateway:
    """One Modbus TCP endpoint (``host:port``), shared by every unit id behind it.

    Parameters
    ----------
    host, port : the TCP endpoint
    timeout_s : connect timeout and answer timeout of each request [s]
    max_in_flight : requests allowed on the connection at once. pymodbus 3.16 serialises
        requests per client anyway, so values above 1 currently buy no parallelism.
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
        self._connect_lock = asyncio.Lock()
        self._link: _Link | None = None
        self._silent_requests = 0
        self._up: bool | None = None  # None: never tried
        self._users = 0

    def __repr__(self) -> str:
        return f"ModbusGateway({self.host!r}, {self.port})"

    @property
    def label(self) -> str:
        """``host:port``, as used in error messages."""
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """True while a TCP connection is open."""
        return self._link is not None and self._link.client.connected

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
        if table in ("coil", "discrete"):
            values = [int(b) for b in pdu.bits]
        else:
            values = list(pdu.registers)
        if len(values) < count:
            raise DecodeError(
                f"{ctx}: asked for {count} {table} values at {address}, got {len(values)}"
            )
        return values[:count]

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
        """Close the connection now. The next request reconnects (subject to backoff)."""
        self._drop()

    def attach(self) -> None:
        """Register one more device using this gateway (see :meth:`release`)."""
        self._users += 1

    async def release(self) -> None:
        """A device stops using the gateway; the last one out closes the connection."""
        self._users = max(0, self._users - 1)
        if self._users == 0:
            await self.close()

    # ------------------------------------------------------------------------ internals

    def _context(self, unit_id: int) -> str:
        return f"modbus {self.label} unit {unit_id}"

    async def _request(self, ctx: str, call: _Request) -> ModbusPDU:
        async with self._slots:
            link = await self._connected_link()
            try:
                with map_exceptions(ctx):
                    response = await self._answer_or_loss(link, call)
            except DeviceTimeout:
                self._silent_requests += 1
                if self._silent_requests >= _MAX_SILENT_REQUESTS:
                    _log.info(
                        "%s: %d requests in a row unanswered, reconnecting",
                        self.label,
                        self._silent_requests,
                    )
                    self._drop()
                raise
            except DeviceOffline as exc:
                self._lost(str(exc))
                raise
            self._answered()
            if isinstance(response, PduExceptionResponse):
                raise ExceptionResponse(response.exception_code, ctx)
            if response.isError():
                raise DecodeError(f"{ctx}: error response {response}")
            return response

    async def _answer_or_loss(self, link: _Link, call: _Request) -> ModbusPDU:
        """The response, or ``DeviceOffline`` as soon as the connection drops under the request.

        pymodbus does not fail a pending request when the peer closes the connection (it waits
        for the timeout), so we race the request against the connection's loss.
        """
        request = asyncio.ensure_future(call(link.client))
        lost = asyncio.ensure_future(link.lost.wait())
        try:
            # pymodbus enforces timeout_s itself; this guard only catches a hang inside it
            async with asyncio.timeout(2 * self.timeout_s + 1.0):
                await asyncio.wait({request, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not request.done():
                request.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await request
        if request.done() and not request.cancelled():
            return request.result()
        raise DeviceOffline(f"modbus {self.label}: connection lost during the request")

    async def _connected_link(self) -> _Link:
        if self._link is not None and self._link.client.connected:
            return self._link
        async with self._connect_lock:
            if self._link is not None and self._link.client.connected:
                return self._link
            if not self._backoff.ready():
                raise DeviceOffline(
                    f"modbus {self.label}: offline after {self._backoff.failures} failed"
                    f" attempt(s), next attempt in {self._backoff.remaining_s():.1f} s"
                )
            self._drop()
            lost = asyncio.Event()

            def on_connect(connected: bool) -> None:
                if not connected:
                    lost.set()

            client = AsyncModbusTcpClient(
                self.host,
                port=self.port,
                name=self.label,
                timeout=self.timeout_s,
                retries=0,
                reconnect_delay=0,  # reconnects are ours, not a pymodbus background task
                trace_connect=on_connect,
            )
            # silence is handled by _request (_MAX_SILENT_REQUESTS), not by pymodbus
            client.set_max_no_responses(1_000_000)
            try:
                with map_exceptions(f"modbus {self.label}"):
                    ok = await client.connect()
            except DriverError as exc:
                client.close()
                self._lost(str(exc))
                raise
            if not ok:
                client.close()
                msg = f"modbus {self.label}: connect refused or timed out"
                self._lost(msg)
                raise DeviceOffline(msg)
            self._link = _Link(client, lost)
            self._silent_requests = 0
            return self._link

    def _drop(self) -> None:
        if self._link is not None:
            self._link.client.close()
            self._link = None
        self._silent_requests = 0

    def _lost(self, reason: str) -> None:
        self._drop()
        delay_s = self._backoff.failure()
        if self._up is not False:
            _log.warning("%s is offline (%s); retrying in %.1f s", self.label, reason, delay_s)
        self._up = False

    def _answered(self) -> None:
        self._silent_requests = 0
        self._backoff.success()
        if self._up is False:
            _log.info("%s recovered", self.label)
        self._up = True


class ModbusDevice:
    """One Modbus unit behind a :class:`ModbusGateway`, read and written by its profile.

    Parameters
    ----------
    device : the site's device entry (its endpoint must be a :class:`ModbusEndpoint`)
    profile : its profile (protocol ``modbus``)
    gateway : the shared gateway for ``device.endpoint.host:port``
    max_gap : registers read through between two points (see :func:`plan_reads`)
    """

    def __init__(
        self, device: Device, profile: DeviceProfile, gateway: ModbusGateway, *, max_gap: int = 8
    ) -> None:
        if not isinstance(device.endpoint, ModbusEndpoint):
            raise TypeError(f"device {device.id!r} has no Modbus endpoint")
        if profile.protocol != "modbus":
            raise TypeError(f"device {device.id!r}: profile protocol is {profile.protocol!r}")
        ep = device.endpoint
        if (ep.host, ep.port) != (gateway.host, gateway.port):
            raise ValueError(
                f"device {device.id!r} is at {ep.host}:{ep.port}, not at gateway {gateway.label}"
            )
        self._device = device
        self._profile = profile
        self._gateway = gateway
        self.unit_id: int = ep.unit_id
        self._plan = plan_reads(profile.points, max_gap=max_gap)
        self._plan_without_gaps = plan_reads(profile.points, max_gap=0)
        self._attached = False
        self._attach()

    @property
    def device_id(self) -> str:
        """The device's id in the site configuration."""
        return str(self._device.id)

    @property
    def gateway(self) -> ModbusGateway:
        """The (shared) gateway this device is reached through."""
        return self._gateway

    @property
    def plan(self) -> list[ReadBlock]:
        """The read requests one :meth:`read` sends."""
        return list(self._plan)

    async def read(self, now: datetime) -> dict[str, PointReading]:
        """Read every point; see :meth:`laterne.drivers.base.DeviceClient.read`."""
        require_utc(now)
        self._attach()
        try:
            return await self._read_plan(self._plan, now)
        except ExceptionResponse as exc:
            if exc.code != _ILLEGAL_DATA_ADDRESS or self._plan == self._plan_without_gaps:
                raise
            _log.info(
                "%s refuses reads through gaps; reading without gaps from now on", self.device_id
            )
            self._plan = self._plan_without_gaps
            return await self._read_plan(self._plan, now)

    async def write(self, point: str, value: float) -> float:
        """Write one point and read it back; see :meth:`laterne.drivers.base.DeviceClient.write`."""
        spec = check_command(self.device_id, self._profile.points, point, value)
        raw = encode(value, spec)
        assert spec.table is not None and spec.address is not None  # the profile guarantees it
        self._attach()
        if spec.table == "coil":
            await self._gateway.write_coil(self.unit_id, spec.address, bool(raw[0]))
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

    async def _read_plan(self, plan: list[ReadBlock], now: datetime) -> dict[str, PointReading]:
        points = self._profile.points
        readings: dict[str, PointReading] = {}
        for block in plan:
            values = await self._gateway.read(self.unit_id, block.table, block.address, block.count)
            for name in block.points:
                spec = points[name]
                try:
                    value = decode(extract(values, block, spec), spec)
                except DecodeError as exc:
                    readings[name] = faulty_reading(self.device_id, name, now, str(exc))
                else:
                    readings[name] = reading_from_value(self.device_id, name, spec, value, now)
        return {name: readings[name] for name in points}  # profile order
