"""The live compliance record: per segment and interval of ``compliance_interval_s`` (15 min by
default), the class the interval's *measured* traffic required and the class the commanded
level delivered; an interval lit below what was required is a violation.

Rule: pure and independent of the policy — it counts the vehicles itself from the observations
(:func:`~.policy.counted_rate`, the same wrap and reset rules) and judges with
:func:`~.compliance.compliance`, so no policy can grade itself by its own smoothing. A cycle's
vehicles belong to the interval its observation falls in. An interval whose counts cover less
than half of it has no known flow (nothing is required of it); an interval is dark when any of
its cycles was (its command was not the daylight switch-off), and its delivered level is the
*lowest* level commanded while dark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from laterne.models.layout import SiteLayout
from laterne.models.values import BoolArray, Commands, FloatArray, Observation, Reason

from .compliance import compliance
from .policy import counted_rate, sum_to_segments

__all__ = [
    "KEEP_INTERVALS",
    "ComplianceTally",
    "IntervalRecord",
    "RecordState",
    "initial_record",
    "record_step",
]


@dataclass(frozen=True)
class IntervalRecord:
    """One closed interval of one segment."""

    segment_id: str
    start: datetime
    end: datetime
    flow_veh_h: float | None  # measured; None where the counts covered too little
    lit: bool  # dark at some time of the interval and the flow known: light was required
    required_class: str  # "" where nothing was required
    delivered_class: str  # class of the lowest level commanded while dark; "" below all
    min_dim_pct: float | None  # the lowest level commanded while dark [%]
    violation: bool


@dataclass(frozen=True)
class RecordState:
    """What the open interval has gathered so far."""

    interval_id: float  # floor(t / interval); NaN before the first observation
    last_count_veh: FloatArray  # (C,)
    last_count_s: FloatArray  # (C,)
    veh: FloatArray  # (C,) vehicles counted in the open interval
    covered_s: FloatArray  # (C,) the time they cover [s]
    min_dim_pct: FloatArray  # (S,) +inf while no dark cycle
    dark: BoolArray  # (S,)


def initial_record(layout: SiteLayout) -> RecordState:
    c, s = layout.n_channels, layout.n_segments
    return RecordState(
        interval_id=math.nan,
        last_count_veh=np.full(c, np.nan),
        last_count_s=np.full(c, np.nan),
        veh=np.zeros(c),
        covered_s=np.zeros(c),
        min_dim_pct=np.full(s, np.inf),
        dark=np.zeros(s, dtype=bool),
    )


def _close(
    layout: SiteLayout, state: RecordState, interval_s: float
) -> list[IntervalRecord]:
    enough = state.covered_s >= 0.5 * interval_s
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(enough, state.veh / state.covered_s * 3600.0, 0.0)
    missing = sum_to_segments(layout, (~enough).astype(float))
    known = layout.segments.has_counter & (missing == 0)
    flow = np.where(known, sum_to_segments(layout, rate), np.nan)
    level = np.where(state.dark, state.min_dim_pct, 0.0)
    judged = compliance(layout, flow, level, state.dark)
    required = judged.class_names(layout, judged.required_band)
    delivered = judged.class_names(layout, judged.delivered_band)
    start = datetime.fromtimestamp(state.interval_id * interval_s, UTC)
    end = datetime.fromtimestamp((state.interval_id + 1) * interval_s, UTC)
    return [
        IntervalRecord(
            segment_id=sid,
            start=start,
            end=end,
            flow_veh_h=float(flow[i]) if known[i] else None,
            lit=bool(state.dark[i] and known[i]),
            required_class=required[i],
            delivered_class=delivered[i] if state.dark[i] else "",
            min_dim_pct=float(state.min_dim_pct[i]) if state.dark[i] else None,
            violation=bool(judged.violation[i]),
        )
        for i, sid in enumerate(layout.segments.ids)
    ]


def record_step(
    layout: SiteLayout,
    interval_s: float,
    state: RecordState,
    obs: Observation,
    commands: Commands,
    now: datetime,
) -> tuple[RecordState, list[IntervalRecord]]:
    """Add one cycle (its observation and the commands sent); returns the new state and the
    records of the interval that closed before ``now`` (empty while it is still open; the first
    interval, seen only in part, is recorded too)."""
    t_s = now.timestamp()
    rate, dt_s, ok = counted_rate(
        layout, state.last_count_veh, state.last_count_s, obs.counter_veh, obs.counter_ok, t_s
    )
    good = obs.counter_ok & np.isfinite(obs.counter_veh)
    counted = replace(
        state,
        last_count_veh=np.where(good, obs.counter_veh, state.last_count_veh),
        last_count_s=np.where(good, t_s, state.last_count_s),
    )
    interval_id = float(math.floor(t_s / interval_s))
    closed: list[IntervalRecord] = []
    if math.isfinite(state.interval_id) and interval_id != state.interval_id:
        closed = _close(layout, state, interval_s)
        counted = replace(
            counted,
            veh=np.zeros_like(state.veh),
            covered_s=np.zeros_like(state.covered_s),
            min_dim_pct=np.full_like(state.min_dim_pct, np.inf),
            dark=np.zeros_like(state.dark),
        )
    dark_now = commands.dim_reason != Reason.DAYLIGHT
    new = replace(
        counted,
        interval_id=interval_id,
        veh=counted.veh + np.where(ok, rate * np.where(ok, dt_s, 0.0) / 3600.0, 0.0),
        covered_s=counted.covered_s + np.where(ok, dt_s, 0.0),
        min_dim_pct=np.where(
            dark_now, np.minimum(counted.min_dim_pct, commands.dim_pct), counted.min_dim_pct
        ),
        dark=counted.dark | dark_now,
    )
    return new, closed


#: closed intervals kept for the read side: a week of quarter hours
KEEP_INTERVALS = 7 * 96


@dataclass(frozen=True, eq=False)
class ComplianceTally:
    """Since the controller started: per segment the intervals lit and lit below the required
    class, and the records of the last ``KEEP_INTERVALS`` closed intervals (oldest first, each
    one record per segment). Immutable: :meth:`add` returns a new tally."""

    segment_ids: tuple[str, ...]
    lit_intervals: npt.NDArray[np.int64]
    violation_intervals: npt.NDArray[np.int64]
    intervals: tuple[tuple[IntervalRecord, ...], ...] = ()

    @classmethod
    def empty(cls, layout: SiteLayout) -> ComplianceTally:
        n = layout.n_segments
        return cls(layout.segments.ids, np.zeros(n, np.int64), np.zeros(n, np.int64))

    def add(self, closed: Sequence[IntervalRecord]) -> ComplianceTally:
        if not closed:
            return self
        lit = np.array([r.lit for r in closed], dtype=np.int64)
        bad = np.array([r.violation for r in closed], dtype=np.int64)
        return ComplianceTally(
            self.segment_ids,
            self.lit_intervals + lit,
            self.violation_intervals + bad,
            (*self.intervals, tuple(closed))[-KEEP_INTERVALS:],
        )

    def last(self, segment_index: int) -> IntervalRecord | None:
        return self.intervals[-1][segment_index] if self.intervals else None
