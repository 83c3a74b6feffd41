"""Write-behind history: control never waits on a store that cannot take writes.

Rule: the runtime hands every reading, command record, device state, drift event and saved
policy state to a :class:`Recorder` and goes on. Each store (the SQLite history, every mirror) has
its own FIFO, drained *in order* by its own task through a worker thread. A store that fails
(locked by a DB browser or a backup tool, disk full) keeps its queue and is retried with backoff;
that is logged once when it starts and once when it ends, never per attempt.

The queue is bounded: readings beyond ``max_readings`` are dropped oldest first (counted, logged
once per episode, shown in the status); command records, device states and drift events are the
audit trail and are kept up to ``max_records`` (far more than an outage of hours produces).
Everything queued reaches the store in the order it was queued once the store is writable again.

:meth:`Recorder.settle` lets the cycle wait a bounded time for what it just queued, so a healthy
store is current at the end of every cycle (tests and the API read it right away), while a
failing one costs the cycle nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from laterne.models.snapshot import (
    CommandRecord,
    ComplianceIntervalView,
    DriftRecord,
    QueueStatus,
)
from laterne.models.values import DeviceState, PointReading

__all__ = [
    "DriftSink",
    "HistorySink",
    "Recorder",
    "StateSink",
    "StoreQueue",
]

log = logging.getLogger("laterne.history")

#: readings written per store call at most (a batch is one transaction)
_BATCH_READINGS = 50_000
#: retry delays of a failing store [s of real time: this is I/O, not control timing]
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 5.0


class HistorySink(Protocol):
    """Anything that records what the runtime saw and did."""

    def record_readings(self, readings: Sequence[PointReading]) -> None: ...

    def record_commands(self, records: Sequence[CommandRecord]) -> None: ...

    def record_device_state(self, state: DeviceState) -> None: ...


class DriftSink(Protocol):
    def record_drifts(self, drifts: Sequence[DriftRecord]) -> None: ...


class StateSink(Protocol):
    def save_policy_state(self, ts: datetime, fingerprint: str, payload: str) -> None: ...


Kind = Literal["readings", "commands", "state", "drifts", "compliance", "policy", "call"]


@dataclass
class _Entry:
    kind: Kind
    items: list[object] = field(default_factory=list)


class StoreQueue:
    """The FIFO of one store and the task that drains it.

    Parameters
    ----------
    name : how logs and the status name the store ("sqlite", "influxdb ...")
    sink : the store; its ``record_*`` calls run in a worker thread
    max_readings, max_records : the queue's bounds (see the module docstring)
    sleep : waits between retries of a failing store; real time by default
    """

    def __init__(
        self,
        name: str,
        sink: HistorySink,
        *,
        max_readings: int = 1_000_000,
        max_records: int = 1_000_000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self._sink = sink
        self._max_readings = max_readings
        self._max_records = max_records
        self._sleep = sleep
        self._queue: deque[_Entry] = deque()
        self._inflight: list[_Entry] = []
        self._readings = 0  # queued + in flight
        self._records = 0
        self._dropped = 0
        self._dropping = False  # an episode of dropping, logged once
        self._failing_since: float | None = None  # time.monotonic() of the first failure
        self._last_error = ""
        self._written = 0  # entries written, for settle()
        self._queued = 0  # entries ever queued
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -------------------------------------------------------------------- queueing (loop)

    def put(self, kind: Kind, items: Sequence[object]) -> None:
        if not items:
            return
        if kind == "policy":  # only the newest saved state matters: replace a queued one
            for e in self._queue:
                if e.kind == "policy":
                    e.items = list(items)
                    self._wake.set()
                    return
        self._queue.append(_Entry(kind, list(items)))
        self._queued += 1
        if kind == "readings":
            self._readings += len(items)
        else:
            self._records += len(items)
        self._enforce_bounds()
        self._wake.set()
        self._ensure_task()

    def _inflight_readings(self) -> int:
        return sum(len(e.items) for e in self._inflight if e.kind == "readings")

    def _enforce_bounds(self) -> None:
        """Drop the oldest *queued* readings beyond the bound (a batch being written is not
        touched; if its write fails it is queued again and the bound applies to it too)."""
        while self._readings - self._inflight_readings() > self._max_readings:
            idx = next((i for i, e in enumerate(self._queue) if e.kind == "readings"), None)
            if idx is None:
                break
            entry = self._queue[idx]
            del self._queue[idx]
            self._readings -= len(entry.items)
            self._dropped += len(entry.items)
            self._written += 1  # it will never be written: do not let settle() wait for it
            if not self._dropping:
                self._dropping = True
                log.error(
                    "history %s: queue full (%d readings waiting); dropping the oldest readings "
                    "until the store takes writes again (commands and states are kept)",
                    self.name,
                    self._max_readings,
                )
        while self._records > self._max_records:
            idx = next((i for i, e in enumerate(self._queue) if e.kind != "readings"), None)
            if idx is None:
                break
            entry = self._queue[idx]
            del self._queue[idx]
            self._records -= len(entry.items)
            self._dropped += len(entry.items)
            self._written += 1

    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # queued before the loop runs: the first settle() starts it
                return
            self._task = loop.create_task(self._drain())

    # ------------------------------------------------------------------------ status

    @property
    def writable(self) -> bool:
        return self._failing_since is None

    def status(self) -> QueueStatus:
        return QueueStatus(
            store=self.name,
            writable=self.writable,
            queued_readings=self._readings,
            queued_records=self._records,
            max_readings=self._max_readings,
            dropped_readings=self._dropped,
            last_error=self._last_error,
        )

    @property
    def empty(self) -> bool:
        return not self._queue and not self._inflight

    async def settle(self, budget_s: float) -> bool:
        """Wait up to ``budget_s`` (real time) until everything queued so far is written.

        Returns at once while the store is failing. True when everything was written.
        """
        target = self._queued
        self._ensure_task()
        deadline = time.monotonic() + budget_s
        while self._written < target and self.writable:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), left)
            except TimeoutError:
                return False
        return self._written >= target

    async def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until the queue is empty, retrying a failing store."""
        deadline = time.monotonic() + timeout_s
        while not self.empty:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._ensure_task()
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), min(left, 0.25))
            except TimeoutError:
                pass
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._inflight:  # put back what a cancelled write may not have stored
            self._queue.extendleft(reversed(self._inflight))
            self._inflight = []

    def lost_on_close(self) -> int:
        """Entries still queued (not written) after :meth:`close`."""
        return sum(len(e.items) for e in self._queue)

    # ------------------------------------------------------------------------ draining

    async def _drain(self) -> None:
        delay_s = _RETRY_FIRST_S
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take()
            try:
                await asyncio.to_thread(self._write, batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store failure of any kind: keep the batch, retry
                self._queue.extendleft(reversed(batch))
                self._inflight = []
                self._enforce_bounds()
                self._failed(exc)
                self._progress.set()
                await self._sleep(delay_s)
                delay_s = min(delay_s * 2, _RETRY_MAX_S)
                continue
            self._inflight = []
            for e in batch:
                if e.kind == "readings":
                    self._readings -= len(e.items)
                else:
                    self._records -= len(e.items)
            self._written += len(batch)
            delay_s = _RETRY_FIRST_S
            self._recovered()
            self._progress.set()

    def _take(self) -> list[_Entry]:
        batch: list[_Entry] = []
        readings = 0
        while self._queue and readings < _BATCH_READINGS:
            e = self._queue.popleft()
            batch.append(e)
            if e.kind == "readings":
                readings += len(e.items)
        self._inflight = batch
        return batch

    def _write(self, batch: Sequence[_Entry]) -> None:
        """Runs in a worker thread: consecutive entries of one kind go in one call, in order."""
        i = 0
        while i < len(batch):
            kind = batch[i].kind
            j = i
            items: list[object] = []
            while j < len(batch) and batch[j].kind == kind and kind not in ("policy", "call"):
                items += batch[j].items
                j += 1
            if kind in ("policy", "call"):
                items, j = batch[i].items, i + 1
            self._write_kind(kind, items)
            i = j

    def _write_kind(self, kind: Kind, items: list[object]) -> None:
        sink = self._sink
        if kind == "readings":
            sink.record_readings(items)  # type: ignore[arg-type]
        elif kind == "commands":
            sink.record_commands(items)  # type: ignore[arg-type]
        elif kind == "state":
            for st in items:
                sink.record_device_state(st)  # type: ignore[arg-type]
        elif kind == "drifts":
            record = getattr(sink, "record_drifts", None)
            if record is not None:
                record(items)
        elif kind == "compliance":
            keep = getattr(sink, "record_compliance", None)
            if keep is not None:
                keep(items)
        elif kind == "policy":
            save = getattr(sink, "save_policy_state", None)
            if save is not None:
                ts, fingerprint, payload = items
                save(ts, fingerprint, payload)
        elif kind == "call":  # maintenance (compaction): done once or skipped, never retried
            (job,) = items
            try:
                job()  # type: ignore[operator]
            except Exception as exc:
                log.warning("history %s: %s failed, skipped until next time: %s",
                            self.name, getattr(job, "__name__", "maintenance"), exc)

    def _failed(self, exc: Exception) -> None:
        self._last_error = str(exc) or type(exc).__name__
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.error(
                "history %s cannot take writes (%s); control goes on, %d readings and %d records "
                "queued in memory",
                self.name,
                self._last_error,
                self._readings,
                self._records,
            )

    def _recovered(self) -> None:
        if self._failing_since is not None and not self._queue:
            outage_s = time.monotonic() - self._failing_since
            self._failing_since = None
            log.warning(
                "history %s takes writes again after %.1f s; the queue is written%s",
                self.name,
                outage_s,
                f" ({self._dropped} readings were dropped)" if self._dropped else "",
            )
        if self._dropping and self._readings < self._max_readings:
            self._dropping = False


class Recorder:
    """One :class:`StoreQueue` per store; the runtime's only way to write history."""

    def __init__(self, queues: Sequence[StoreQueue]) -> None:
        self.queues = tuple(queues)

    def readings(self, readings: Sequence[PointReading]) -> None:
        for q in self.queues:
            q.put("readings", readings)

    def commands(self, records: Sequence[CommandRecord]) -> None:
        for q in self.queues:
            q.put("commands", records)

    def device_state(self, state: DeviceState) -> None:
        for q in self.queues:
            q.put("state", [state])

    def drifts(self, drifts: Sequence[DriftRecord]) -> None:
        self.queues[0].put("drifts", drifts)  # the embedded history keeps them

    def compliance(self, records: Sequence[ComplianceIntervalView]) -> None:
        self.queues[0].put("compliance", records)  # the embedded history keeps them

    def policy_state(self, ts: datetime, fingerprint: str, payload: str) -> None:
        self.queues[0].put("policy", [ts, fingerprint, payload])

    def maintenance(self, job: Callable[[], object]) -> None:
        """Run ``job`` in the embedded history's worker, in order with the writes queued so far;
        a failure is logged and the job skipped (it runs again when next asked for)."""
        self.queues[0].put("call", [job])

    async def settle(self, budget_s: float) -> None:
        await asyncio.gather(*(q.settle(budget_s) for q in self.queues))

    async def flush(self, timeout_s: float) -> bool:
        done = await asyncio.gather(*(q.flush(timeout_s) for q in self.queues))
        return all(done)

    async def close(self, timeout_s: float) -> None:
        """Flush for up to ``timeout_s``, then stop; say loudly what could not be written."""
        await self.flush(timeout_s)
        for q in self.queues:
            await q.close()
            lost = q.lost_on_close()
            if lost:
                log.error(
                    "history %s: %d queued items could not be written before exit", q.name, lost
                )

    def status(self) -> list[QueueStatus]:
        return [q.status() for q in self.queues]
