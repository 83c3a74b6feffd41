"""The read side of a running site: what the API may ask, and the one object that answers it.

Rule: the API depends on the :class:`SiteReadModel` Protocol only — queries, no commands, never
a driver or the runtime's internals. :class:`ReadModel` implements it for a running site: the
*snapshot* (the whole site as of the last completed cycle, built on demand by
:func:`~laterne.controller.snapshot.build_snapshot` from the frozen :class:`CycleResult` the
runtime publishes, at most once per cycle, so serving it costs the cycle nothing), and
pass-throughs to the history store, the recorder's queues and the loop monitor. Tests may
implement the Protocol with plain data.

Every answer is a model of :mod:`laterne.models.snapshot`; NaN never leaves this module (an
unknown number is ``None``). The methods run in the API's worker threads: they only read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from laterne.models.layout import SiteLayout
from laterne.models.site import SiteConfig
from laterne.models.snapshot import (
    AggregateRecord,
    CommandRecord,
    ComplianceIntervalView,
    ComplianceView,
    DeviceStateRecord,
    DriftRecord,
    HistoryStatus,
    LoopStatus,
    QueueStatus,
    SegmentComplianceView,
    SiteSnapshot,
)
from laterne.models.values import Commands, DeviceState, PointReading

from .compliance_record import ComplianceTally
from .faults import FaultState
from .observe import ReadingKey
from .policy import PolicyState
from .snapshot import build_snapshot, interval_view
from .store import HistoryMirror, HistoryStore

__all__ = ["CycleResult", "ReadModel", "SiteReadModel"]


class SiteReadModel(Protocol):
    """What the API may ask of a running site (read only)."""

    def snapshot(self) -> SiteSnapshot:
        """The site as of the last completed control cycle."""
        ...

    def compliance(
        self, segment: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> ComplianceView:
        """The compliance record: counts per segment and the last closed intervals, newest
        first (of one segment; ending after ``since``; at most ``limit`` records)."""
        ...

    def recent_commands(
        self, limit: int = 100, device_id: str | None = None
    ) -> list[CommandRecord]:
        """Most recent commands first, optionally of one device."""
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
        """Recorded readings of one point within [since, until), oldest first (or newest)."""
        ...

    def drift_events(self, device_id: str | None = None, limit: int = 100) -> list[DriftRecord]:
        """Commanded points found not holding their command, newest first."""
        ...

    def loop_status(self) -> LoopStatus:
        """Is the control loop alive: last successful cycle, failures in a row, last error."""
        ...

    def device_state_changes(
        self, device_id: str | None = None, limit: int = 100
    ) -> list[DeviceStateRecord]:
        """Quality changes of devices, newest first, optionally of one device."""
        ...

    def history_status(self) -> HistoryStatus:
        """Size of the embedded history and the state of every mirror (nothing lost?)."""
        ...

    def aggregates(
        self,
        device_id: str,
        point: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 10_000,
    ) -> list[AggregateRecord]:
        """Aggregated buckets of one point (readings past raw retention), oldest first."""
        ...


@dataclass(frozen=True, eq=False)
class CycleResult:
    """What one completed cycle leaves for the read side, frozen (copies of the runtime's
    tables): the snapshot is built from it. ``ts`` is None (and ``cycle`` 0) before the first."""

    ts: datetime | None
    cycle: int
    state: PolicyState
    commands: Commands | None
    latest: Mapping[ReadingKey, PointReading]
    devices: Mapping[str, DeviceState]
    faults: FaultState | None = None  # lamp and driver faults, burning hours
    compliance: ComplianceTally | None = None  # the compliance record so far


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


class ReadModel:
    """Answers :class:`SiteReadModel` for a running site.

    Parameters
    ----------
    site, layout : the site the snapshot describes
    store : the embedded history the queries read
    mirrors : the other histories (their status only)
    queues : the recorder's queue in front of each store, now
    loop_status : the control loop's account of itself, now
    initial : what the read side shows before the first cycle
    """

    def __init__(
        self,
        site: SiteConfig,
        layout: SiteLayout,
        store: HistoryStore,
        mirrors: Sequence[HistoryMirror],
        queues: Callable[[], list[QueueStatus]],
        loop_status: Callable[[], LoopStatus],
        initial: CycleResult,
    ) -> None:
        self._site = site
        self._layout = layout
        self._store = store
        self._mirrors = tuple(mirrors)
        self._queues = queues
        self._loop_status = loop_status
        self._published = initial
        self._cached: tuple[CycleResult, SiteSnapshot] | None = None

    def publish(self, result: CycleResult) -> None:
        """A cycle completed: the next :meth:`snapshot` shows ``result``."""
        self._published = result

    @property
    def published(self) -> CycleResult:
        return self._published

    # -------------------------------------------------------------------- SiteReadModel

    def snapshot(self) -> SiteSnapshot:
        published, cached = self._published, self._cached
        if cached is not None and cached[0] is published:
            return cached[1]
        p = published
        snap = build_snapshot(
            self._site,
            self._layout,
            p.ts,
            p.cycle,
            p.state,
            p.commands,
            p.latest,
            p.devices,
            faults=p.faults,
            tally=p.compliance,
        )
        self._cached = (published, snap)
        return snap

    def compliance(
        self, segment: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> ComplianceView:
        interval_s = self._site.policy.compliance_interval_s
        stored = getattr(self._store, "compliance_intervals", None)
        counted = getattr(self._store, "compliance_counts", None)
        if stored is not None and counted is not None:  # the history's record: survives restarts
            counts: dict[str, tuple[int, int]] = counted()
            return ComplianceView(
                interval_s=interval_s,
                segments={
                    sid: SegmentComplianceView(
                        lit_intervals=counts.get(sid, (0, 0))[0],
                        violation_intervals=counts.get(sid, (0, 0))[1],
                    )
                    for sid in self._layout.segments.ids
                    if segment is None or sid == segment
                },
                intervals=stored(segment=segment, since=since, limit=limit),
            )
        tally = self._published.compliance
        if tally is None:
            tally = ComplianceTally.empty(self._layout)
        views: list[ComplianceIntervalView] = []
        for interval in reversed(tally.intervals):
            if since is not None and interval[0].end <= since:
                break
            for r in interval:
                if segment is None or r.segment_id == segment:
                    v = interval_view(r)
                    assert v is not None
                    views.append(v)
            if len(views) >= limit:
                break
        return ComplianceView(
            interval_s=interval_s,
            segments={
                sid: SegmentComplianceView(
                    lit_intervals=int(tally.lit_intervals[i]),
                    violation_intervals=int(tally.violation_intervals[i]),
                )
                for i, sid in enumerate(tally.segment_ids)
                if segment is None or sid == segment
            },
            intervals=views[:limit],
        )

    def recent_commands(
        self, limit: int = 100, device_id: str | None = None
    ) -> list[CommandRecord]:
        return self._store.recent_commands(limit=limit, device_id=device_id)

    def readings(
        self,
        device_id: str,
        point: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[PointReading]:
        return self._store.readings(
            device_id, point, since=since, until=until, limit=limit, newest_first=newest_first
        )

    def device_state_changes(
        self, device_id: str | None = None, limit: int = 100
    ) -> list[DeviceStateRecord]:
        return [
            DeviceStateRecord(
                device_id=s.device_id,
                quality=s.quality,
                since=s.since,
                last_good_at=s.last_good_at,
                last_error=s.last_error,
            )
            for s in self._store.device_state_history(device_id=device_id, limit=limit)
        ]

    def aggregates(
        self,
        device_id: str,
        point: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 10_000,
    ) -> list[AggregateRecord]:
        return [
            AggregateRecord(
                start=a.start,
                end=a.end,
                count=a.count,
                good_count=a.good_count,
                mean=_num(a.mean),
                min=_num(a.min),
                max=_num(a.max),
                last=_num(a.last),
            )
            for a in self._store.aggregates(device_id, point, since=since, until=until, limit=limit)
        ]

    def history_status(self) -> HistoryStatus:
        cfg = self._site.history
        return HistoryStatus(
            sqlite_path=str(self._store.path),
            sqlite_bytes=self._store.file_size_bytes(),
            raw_retention_days=cfg.raw_retention_days,
            aggregate_minutes=cfg.aggregate_minutes,
            mirrors=[m.status() for m in self._mirrors],
            queues=self._queues(),
        )

    def drift_events(self, device_id: str | None = None, limit: int = 100) -> list[DriftRecord]:
        return self._store.drift_events(device_id=device_id, limit=limit)

    def loop_status(self) -> LoopStatus:
        return self._loop_status()
