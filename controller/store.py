"""What the runtime needs of a history store, as Protocols: it never names a concrete store.

Rule: the runtime, its read model and its compaction depend on :class:`HistoryStore` only; the
embedded SQLite history (``laterne.drivers.history.sqlite_store.SqliteHistory``) implements it,
and so may a test double. Writes reach a store only through the write-behind
:class:`~laterne.controller.recorder.Recorder` (its ``record_*``/``save_policy_state`` calls run
in a worker thread); the queries (``readings``, ``recent_commands``, …) are what the read model
passes through to the API and run in the API's threads. A store that fails raises its own typed
error (``HistoryError`` for the SQLite history) and never returns ``None`` for a failure.

Rows the store hands back (a saved policy state, an aggregate bucket, a compaction's report) are
Protocols of read-only properties, so any frozen dataclass with those fields fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from laterne.models.snapshot import CommandRecord, DriftRecord, MirrorStatus, OverrideRecord
from laterne.models.values import DeviceState, OverrideRequest, PointReading

from .recorder import DriftSink, HistorySink, StateSink

__all__ = [
    "AggregateRow",
    "CompactionReport",
    "HistoryMirror",
    "HistoryStore",
    "SavedPolicyState",
]


class SavedPolicyState(Protocol):
    """The policy state a cycle saved: when, for which layout (its fingerprint), what (JSON)."""

    @property
    def ts(self) -> datetime: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def payload(self) -> str: ...


class AggregateRow(Protocol):
    """One point's statistics over one bucket ``[start, end)``; NaN where nothing was good."""

    @property
    def start(self) -> datetime: ...

    @property
    def end(self) -> datetime: ...

    @property
    def count(self) -> int: ...

    @property
    def good_count(self) -> int: ...

    @property
    def mean(self) -> float: ...

    @property
    def min(self) -> float: ...

    @property
    def max(self) -> float: ...

    @property
    def last(self) -> float: ...


class CompactionReport(Protocol):
    """What one compaction did."""

    @property
    def rows_aggregated(self) -> int: ...

    @property
    def aggregates_deleted(self) -> int: ...


class HistoryStore(HistorySink, DriftSink, StateSink, Protocol):
    """The embedded history: takes every record, answers the read model's queries, compacts,
    keeps the policy state for a restart, and the operators' overrides (written synchronously,
    not through the recorder: an operator waits for the id)."""

    @property
    def path(self) -> Path:
        """Where the store lives (shown by ``/api/history``)."""
        ...

    def file_size_bytes(self) -> int:
        """Bytes the store takes on disk."""
        ...

    def saved_policy_state(self) -> SavedPolicyState | None:
        """The policy state saved last; None when none was ever saved here."""
        ...

    def recent_commands(
        self, limit: int = 100, device_id: str | None = None
    ) -> list[CommandRecord]:
        """The ``limit`` most recent commands, newest first, optionally of one device."""
        ...

    def readings(
        self,
        device_id: str,
        point: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[PointReading]:
        """Readings of one point within ``[since, until)``, oldest first (or newest first)."""
        ...

    def device_state_history(
        self, device_id: str | None = None, limit: int = 100
    ) -> list[DeviceState]:
        """Recorded device states, newest first, optionally of one device."""
        ...

    def aggregates(
        self,
        device_id: str,
        point: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 10_000,
    ) -> Sequence[AggregateRow]:
        """Aggregate buckets of one point starting within ``[since, until)``, oldest first."""
        ...

    def drift_events(self, device_id: str | None = None, limit: int = 100) -> list[DriftRecord]:
        """Drift events, newest first, optionally of one device."""
        ...

    def compact(
        self,
        now: datetime,
        raw_retention_days: float,
        aggregate_minutes: int = 15,
        aggregate_retention_days: float = 3650,
    ) -> CompactionReport:
        """Fold raw readings older than the retention into aggregates; drop old aggregates."""
        ...

    def add_override(self, request: OverrideRequest, created_at: datetime) -> OverrideRecord:
        """Store an operator's override (already checked against the site); its record."""
        ...

    def overrides(
        self, at: datetime | None = None, *, upcoming: bool = False, limit: int = 1000
    ) -> list[OverrideRecord]:
        """Stored overrides, oldest start first: all (``at`` None), those in force at ``at``,
        or with ``upcoming`` every one not yet ended at ``at``."""
        ...

    def cancel_override(self, override_id: int, now: datetime) -> OverrideRecord:
        """End an override at ``now``; its record as it is now. Unknown id or already ended:
        the store's typed error."""
        ...


class HistoryMirror(HistorySink, Protocol):
    """A second history that receives a copy of everything (e.g. InfluxDB through an outbox).
    Its record calls must not block on a network: they only queue."""

    def status(self) -> MirrorStatus: ...
