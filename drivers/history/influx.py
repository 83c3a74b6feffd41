"""History mirrored to InfluxDB (v2 write API, line protocol) through a durable outbox.

Theory of operation
-------------------
``record_*`` only turn values into line protocol and append them to the :class:`Outbox` (one
local SQLite transaction): they never touch the network, so an InfluxDB outage never slows a
control cycle. :meth:`InfluxHistory.run` is the one sender. It takes the oldest ``batch_size``
lines, POSTs them to ``/api/v2/write`` with influxdb-client's synchronous ``WriteApi`` (in a worker
thread), and acknowledges them — deletes them from the outbox — only after a 2xx answer. So
lines arrive in sequence order, and a crash anywhere loses nothing: at worst a batch whose answer
was lost is sent again.

What each answer means:

====================================  =========================================================
connection refused/reset, timeout,    **outage**: keep the batch, back off exponentially with
5xx, 408, 429                         jitter (``backoff_initial_s`` doubling up to
                                      ``backoff_cap_s``, 30 s by default), retry the same batch.
401, 403, 404                         **misconfiguration** (token, org, bucket): the data is fine,
                                      so treated as an outage — retried with backoff, never
                                      dropped; ``last_error`` says what the server said.
400, 413, 422 and other 4xx           **refused batch**: retrying it as is would fail forever
                                      and block everything behind it. The batch is split in
                                      halves, each sent on its own (first half first, so order
                                      holds), recursively; a *single* line that is still refused
                                      is moved to the outbox's ``dead_letters`` table with the
                                      server's message and logged. Everything else is delivered.
====================================  =========================================================

The outage is logged once when it starts (WARNING, with the error) and once when it ends (INFO,
with its duration and the backlog size), never per retry. ``pending`` and ``last_error`` are
there for the API.

Delivery is *at least once*. A batch can be sent twice when the server stored it but its answer
was lost (timeout, connection reset mid-response), or when InfluxDB stored the valid lines of a
batch it answered 400 (a "partial write") before the halves are retried. InfluxDB keeps one point
per series and timestamp, so a repeat overwrites itself; VictoriaMetrics keeps both unless run with
``-dedup.minScrapeInterval``.

Line protocol
-------------
Measurements and their tags (tag keys sorted, as InfluxDB prefers; an empty tag value is left
out, as line protocol has no empty tags) and fields:

- ``reading``: tags ``device``, ``point``, ``quality``; fields ``value`` (float, left out when
  NaN or infinite) and ``error`` (string, only when not empty — or when there is no ``value``,
  because a line needs at least one field). Time: the reading's ``ts``.
- ``command``: tags ``device``, ``ok`` (``true``/``false``), ``point``, ``reason``, ``source``;
  fields ``value`` (as above) and ``error`` (same rule). Time: the command's ``ts``.
- ``device_state``: tags ``device``, ``quality``; fields ``quality_code`` (integer: 0 good,
  1 stale, 2 faulty, 3 offline), ``last_good_at`` (integer, UTC epoch ns, left out when the device
  never answered) and ``last_error`` (string, only when not empty). Time: ``since``.

Timestamps are UTC epoch nanoseconds (a datetime has microseconds, so the last three digits are
0); a naive datetime raises :class:`ValueError`. Escaping follows the line-protocol reference:
``,`` and space in measurements; ``,``, ``=`` and space in tag keys, tag values and field keys;
``"`` and ``\\`` in string field values. A backslash in a tag or field key or tag value is
doubled too: left single, one before an escaped character or at the end of a value would eat the
separator after it and corrupt the line. (VictoriaMetrics turns ``\\\\`` back into one backslash;
InfluxDB 2 keeps both. Device ids and points with backslashes are best avoided.) Newlines,
carriage returns and tabs cannot appear raw in a line: they are written as the two characters
``\\n``, ``\\r``, ``\\t`` (readable, though not turned back into control characters).

VictoriaMetrics (the test server) stores each numeric field as a series named
``{measurement}_{field}`` with the tags as labels, e.g. ``reading_value{device=…, point=…,
quality=…}``; it keeps only millisecond precision and stores string fields as the value 0. It
skips a malformed line inside a batch with a log message and still answers 204 (only a batch it
cannot read at all gets a 400), so against it the dead-letter path rarely fires.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from laterne.drivers.backoff import Backoff
from laterne.drivers.history.outbox import Outbox
from laterne.models.site import InfluxConfig
from laterne.models.snapshot import CommandRecord, MirrorStatus
from laterne.models.values import DeviceState, PointReading, Quality

__all__ = [
    "InfluxHistory",
    "InfluxWriteError",
    "command_line",
    "device_state_line",
    "reading_line",
]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

#: quality → integer field, so a dashboard can plot a device's state over time
QUALITY_CODE: dict[Quality, int] = {q: i for i, q in enumerate(Quality)}

_CONTROL = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPE_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ ", **_CONTROL})
_ESCAPE_KEY = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\\": "\\\\", **_CONTROL})
_ESCAPE_STRING = str.maketrans({'"': '\\"', "\\": "\\\\", **_CONTROL})

# ------------------------------------------------------------------------------ line protocol


def _key(text: str) -> str:
    """Escape a tag key, tag value or field key."""
    return text.translate(_ESCAPE_KEY)


def _string(text: str) -> str:
    return '"' + text.translate(_ESCAPE_STRING) + '"'


def _float(value: float) -> str:
    return repr(float(value))


def _epoch_ns(ts: datetime) -> int:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"naive datetime {ts.isoformat()} refused: line protocol times are UTC")
    return (ts - _EPOCH) // _ONE_US * 1000


def _line(
    measurement: str, tags: dict[str, str], fields: list[tuple[str, str]], ts: datetime
) -> str:
    tag_part = "".join(f",{_key(k)}={_key(v)}" for k, v in sorted(tags.items()) if v)
    field_part = ",".join(f"{_key(k)}={v}" for k, v in fields)
    return f"{measurement.translate(_ESCAPE_MEASUREMENT)}{tag_part} {field_part} {_epoch_ns(ts)}"


def _value_and_error(value: float, error: str) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    if math.isfinite(value):
        fields.append(("value", _float(value)))
    if error or not fields:
        fields.append(("error", _string(error)))
    return fields


def reading_line(r: PointReading) -> str:
    """One reading as a ``reading`` line (see the module docstring)."""
    return _line(
        "reading",
        {"device": r.device_id, "point": r.point, "quality": r.quality.value},
        _value_and_error(r.value, r.error),
        r.ts,
    )


def command_line(c: CommandRecord) -> str:
    """One command record as a ``command`` line."""
    return _line(
        "command",
        {
            "device": c.device_id,
            "point": c.point,
            "reason": c.reason,
            "source": c.source,
            "ok": "true" if c.ok else "false",
        },
        _value_and_error(c.value, c.error),
        c.ts,
    )


def device_state_line(s: DeviceState) -> str:
    """One device state as a ``device_state`` line, timed by ``since``."""
    fields = [("quality_code", f"{QUALITY_CODE[s.quality]}i")]
    if s.last_good_at is not None:
        fields.append(("last_good_at", f"{_epoch_ns(s.last_good_at)}i"))
    if s.last_error:
        fields.append(("last_error", _string(s.last_error)))
    return _line(
        "device_state", {"device": s.device_id, "quality": s.quality.value}, fields, s.since
    )


# ------------------------------------------------------------------------------------ errors


class InfluxWriteError(Exception):
    """A write to the InfluxDB server failed.

    ``status`` is the HTTP status, or ``None`` when no answer came (connection refused or reset,
    timeout). ``retryable`` says whether the same batch may succeed later.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        s = self.status
        return s is None or s >= 500 or s in (401, 403, 404, 408, 429)


class _ClientWriter:
    """Sends one body of lines with influxdb-client's synchronous WriteApi; maps its errors."""

    def __init__(self, cfg: InfluxConfig, token: str | None, timeout_s: float) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        # retries=False: the client must not retry behind our back; the outbox does.
        self._client = InfluxDBClient(
            url=cfg.url,
            token=token or "",
            org=cfg.org,
            timeout=round(timeout_s * 1000),
            retries=False,
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        self._cfg = cfg

    def write(self, body: str) -> None:
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self._api.write(
                bucket=self._cfg.bucket,
                org=self._cfg.org,
                record=body,  # write_precision defaults to ns, as our lines are
            )
        except ApiException as exc:
            detail = exc.body.strip()[:500] if isinstance(exc.body, str) else ""
            raise InfluxWriteError(
                f"HTTP {exc.status} {exc.reason or ''} from {self._cfg.url}: {detail}".strip(),
                exc.status,
            ) from exc
        except (HTTPError, OSError) as exc:
            raise InfluxWriteError(f"{self._cfg.url}: {exc}") from exc
        except Exception as exc:  # the client failed in a way we do not know: keep the data
            raise InfluxWriteError(
                f"{self._cfg.url}: unexpected {type(exc).__name__}: {exc}"
            ) from exc

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]


# ------------------------------------------------------------------------------------ sender


class InfluxHistory:
    """Records into an outbox and sends it to InfluxDB in order; see the module docstring.

    Parameters
    ----------
    cfg : server, org, bucket, batch size and flush interval from the site config
    token : API token (read by the caller from ``cfg.token_env``); ``None`` sends none
    outbox : the durable queue; owned by the caller, not closed here
    timeout_s : per-request timeout [s]
    backoff_initial_s, backoff_cap_s : retry delays after a failed send [s]
    monotonic : clock for backoff and outage duration [s]
    sleep : awaitable sleep [s]; tests inject one that advances a fake ``monotonic``
    clock : wall clock for dead-letter times (aware UTC)
    rng : random source for the backoff jitter
    """

    def __init__(
        self,
        cfg: InfluxConfig,
        token: str | None,
        outbox: Outbox,
        *,
        timeout_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self._writer = _ClientWriter(cfg, token, timeout_s)
        self._backoff = Backoff(
            initial_s=backoff_initial_s,
            cap_s=backoff_cap_s,
            monotonic=monotonic,
            rng=rng,
        )
        self._monotonic = monotonic
        self._sleep = sleep
        self._clock = clock
        self._send_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._last_error = ""
        self._outage_since: float | None = None
        self._last_sent_seq = 0
        self.attempts = 0  # POSTs made, successful or not (for tests and figures)

    # -- status for the API -----------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Lines waiting in the outbox."""
        return self.outbox.pending()

    @property
    def last_error(self) -> str:
        """The last failure's message; empty once a send succeeded again."""
        return self._last_error

    @property
    def in_outage(self) -> bool:
        return self._outage_since is not None

    def status(self) -> MirrorStatus:
        """What the API shows: is anything waiting, is the server down, was anything refused."""
        return MirrorStatus(
            target=f"influxdb {self.cfg.url} bucket {self.cfg.bucket}",
            pending_lines=self.pending,
            in_outage=self.in_outage,
            last_error=self.last_error,
            dead_letters=self.outbox.dead_letter_count(),
        )

    @property
    def last_sent_seq(self) -> int:
        """Sequence number of the last line acknowledged by the server (0: none yet)."""
        return self._last_sent_seq

    # -- recording (never touches the network) ------------------------------------------------

    def record_readings(self, readings: Sequence[PointReading]) -> None:
        self._append(reading_line(r) for r in readings)

    def record_commands(self, records: Sequence[CommandRecord]) -> None:
        self._append(command_line(c) for c in records)

    def record_device_state(self, state: DeviceState) -> None:
        self._append([device_state_line(state)])

    def _append(self, lines: Iterable[str]) -> None:
        # Build every line first: a naive datetime refuses the whole call before anything is queued.
        self.outbox.append(list(lines))

    # -- sending ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Send the outbox until ``stop`` is set.

        A batch goes out as soon as ``batch_size`` lines wait, otherwise at the latest
        ``flush_interval_s`` after the previous send. On failure the same batch is retried after
        the backoff delay. When ``stop`` is set, one last attempt is made to send what is pending
        (unless the server is down); what remains stays in the outbox for the next start.
        """
        last_flush = self._monotonic()
        stop_waiter = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                delay = self._backoff.remaining_s()
                if delay > 0:
                    await self._pause(delay, stop_waiter, wakeable=False)
                    continue
                pending = await asyncio.to_thread(self.outbox.pending)
                due = self._monotonic() - last_flush >= self.cfg.flush_interval_s
                if pending == 0 or (pending < self.cfg.batch_size and not due):
                    wait_s = self.cfg.flush_interval_s
                    if pending:
                        wait_s -= self._monotonic() - last_flush
                    await self._pause(max(wait_s, 0.0), stop_waiter, wakeable=True)
                    continue
                try:
                    await self._send_once()
                except InfluxWriteError:
                    continue  # backoff already armed in _send_once
                last_flush = self._monotonic()
            if not self.in_outage:
                try:
                    await self.flush()
                except InfluxWriteError:
                    pass  # stays in the outbox; already logged
        finally:
            stop_waiter.cancel()

    def wake(self) -> None:
        """Ask the sender to look at the outbox now (call from the event loop's thread)."""
        self._wake.set()

    async def _pause(
        self, seconds: float, stop_waiter: asyncio.Future[Any], wakeable: bool
    ) -> None:
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waits: set[asyncio.Future[Any]] = {sleeper, stop_waiter}
        waker: asyncio.Future[Any] | None = None
        if wakeable:
            waker = asyncio.ensure_future(self._wake.wait())
            waits.add(waker)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            if waker is not None:
                waker.cancel()
            self._wake.clear()

    async def flush(self) -> int:
        """Send everything pending now, batch after batch, without waiting for backoff.

        Returns the number of lines delivered (dead letters not counted). Raises
        :class:`InfluxWriteError` at the first retryable failure; what was not sent stays queued.
        """
        delivered = 0
        while True:
            n = await self._send_once()
            if n < 0:
                return delivered
            delivered += n

    async def _send_once(self) -> int:
        """Send the oldest batch. Returns lines delivered, -1 when the outbox was empty."""
        async with self._send_lock:
            batch = await asyncio.to_thread(self.outbox.peek, self.cfg.batch_size)
            if not batch:
                return -1
            try:
                delivered = await self._deliver(batch)
            except InfluxWriteError as exc:
                self._failed(exc)
                raise
            self._succeeded()
            return delivered

    async def _deliver(self, batch: list[tuple[int, str]]) -> int:
        """Send ``batch`` (split on refusal); ack what the server took. Returns lines taken."""
        body = "\n".join(line for _, line in batch)
        self.attempts += 1
        try:
            await asyncio.to_thread(self._writer.write, body)
        except InfluxWriteError as exc:
            if exc.retryable:
                raise
            if len(batch) > 1:
                half = len(batch) // 2
                return await self._deliver(batch[:half]) + await self._deliver(batch[half:])
            seq, line = batch[0]
            await asyncio.to_thread(self.outbox.dead_letter, seq, str(exc), self._clock())
            logger.error(
                "InfluxDB %s refused line %d, moved to the dead letters of %s: %s | %s",
                self.cfg.url,
                seq,
                self.outbox.path,
                exc,
                line[:200],
            )
            return 0
        await asyncio.to_thread(self.outbox.ack, batch[-1][0])
        self._last_sent_seq = batch[-1][0]
        return len(batch)

    def _failed(self, exc: InfluxWriteError) -> None:
        self._last_error = str(exc)
        delay = self._backoff.failure()
        if self._outage_since is None:
            self._outage_since = self._monotonic()
            logger.warning(
                "InfluxDB %s unavailable (%s); keeping %d lines in the outbox, retrying in %.1f s",
                self.cfg.url,
                exc,
                self.outbox.pending(),
                delay,
            )

    def _succeeded(self) -> None:
        self._backoff.success()
        self._last_error = ""
        if self._outage_since is not None:
            lasted_s = self._monotonic() - self._outage_since
            self._outage_since = None
            logger.info(
                "InfluxDB %s available again after %.1f s; backlog %d lines",
                self.cfg.url,
                lasted_s,
                self.outbox.pending(),
            )

    def close(self) -> None:
        """Release the HTTP client. The outbox belongs to the caller."""
        self._writer.close()
