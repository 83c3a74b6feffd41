"""The compliance record on hand-made observations: counting per interval, the lowest level
while dark, too little coverage, daylight, and the tally."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from laterne.controller.compliance_record import (
    ComplianceTally,
    IntervalRecord,
    initial_record,
    record_step,
)
from laterne.models.layout import SiteLayout
from laterne.models.values import Commands, Observation, Reason

T0 = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)  # 00:00 local, an interval boundary


def obs(layout: SiteLayout, now: datetime, counts: list[float], ok: bool = True) -> Observation:
    return Observation(
        ts=now,
        counter_veh=np.array(counts, dtype=float),
        counter_ok=np.full(4, ok),
        zone_temp_c=np.array([20.0, 18.0]),
        zone_ok=np.ones(2, dtype=bool),
        segment_ok=np.ones(layout.n_segments, dtype=bool),
    )


def cmds(dim: list[float], reason: Reason = Reason.TRAFFIC) -> Commands:
    return Commands(
        dim_pct=np.array(dim, dtype=float),
        dim_reason=np.full(3, reason, dtype=np.int8),
        setpoint_c=np.array([21.0, 18.0]),
        setpoint_reason=np.zeros(2, dtype=np.int8),
    )


Step = tuple[float, list[float], list[float], Reason, bool]


def feed(layout: SiteLayout, steps: list[Step]) -> list[list[IntervalRecord]]:
    """Each step (minute, counts, commanded levels, their reason, counters ok); the records
    each step closed."""
    state, closed = initial_record(layout), []
    for minute, counts, dim, reason, ok in steps:
        now = T0 + timedelta(minutes=minute)
        o, c = obs(layout, now, counts, ok), cmds(dim, reason)
        state, out = record_step(layout, 900.0, state, o, c, now)
        closed.append(out)
    return closed


def test_an_interval_is_judged_by_its_counts_and_its_lowest_dark_level(
    demo_layout: SiteLayout,
) -> None:
    # bahnhofstr (ch 0+1): 25 + 25 vehicles per 5 minutes -> 600 veh/h -> M3 (needs 50 % with
    # design M1); commanded 75, then 40 for one cycle: delivered M4 (37.5 %) < M3
    t = T0
    steps = [
        (0.0, [0, 0, 0, 0], [75, 30, 20], Reason.TRAFFIC, True),
        (5.0, [25, 25, 5, 1], [75, 30, 20], Reason.TRAFFIC, True),
        (10.0, [50, 50, 10, 2], [40, 30, 20], Reason.TRAFFIC, True),
        (15.0, [75, 75, 15, 3], [75, 30, 20], Reason.TRAFFIC, True),  # closes 00:00-00:15
    ]
    closed = feed(demo_layout, steps)
    assert closed[:3] == [[], [], []]
    bahn, elb, lin = closed[3]
    assert (bahn.start, bahn.end) == (t, t + timedelta(minutes=15))
    assert bahn.flow_veh_h == 600.0 and bahn.required_class == "M3"
    assert bahn.min_dim_pct == 40.0 and bahn.delivered_class == "M4" and bahn.violation
    assert elb.flow_veh_h == 60.0 and elb.required_class == "M5" and not elb.violation
    assert lin.flow_veh_h == 12.0 and lin.required_class == "P5" and not lin.violation
    assert bahn.lit and elb.lit and lin.lit


def test_too_little_coverage_or_daylight_requires_nothing(demo_layout: SiteLayout) -> None:
    steps = [
        (0.0, [0, 0, 0, 0], [0, 0, 0], Reason.DAYLIGHT, True),
        (5.0, [50, 50, 50, 50], [0, 0, 0], Reason.DAYLIGHT, True),
        (10.0, [100, 100, 100, 100], [0, 0, 0], Reason.DAYLIGHT, True),
        (15.0, [0, 0, 0, 0], [30, 30, 20], Reason.TRAFFIC, False),  # closes: daylight
        (20.0, [0, 0, 0, 0], [30, 30, 20], Reason.TRAFFIC, False),
        (30.0, [10, 10, 10, 10], [30, 30, 20], Reason.TRAFFIC, True),  # closes: no counts
    ]
    closed = feed(demo_layout, steps)
    day = closed[3]
    assert all(r.flow_veh_h is not None and not r.lit and r.required_class == "" for r in day)
    assert all(not r.violation and r.min_dim_pct is None for r in day)
    dark = closed[5]
    assert all(r.flow_veh_h is None and not r.lit and not r.violation for r in dark)
    assert [r.min_dim_pct for r in dark] == [30, 30, 20]


def test_the_tally_counts_and_keeps_the_last_intervals(demo_layout: SiteLayout) -> None:
    steps = [(float(m), [m * 5.0] * 4, [100, 100, 100], Reason.TRAFFIC, True)
             for m in range(0, 50, 5)]  # fmt: skip
    closed = feed(demo_layout, steps)
    tally = ComplianceTally.empty(demo_layout)
    for c in closed:
        tally = tally.add(c)
    assert len(tally.intervals) == 3  # 00:00, 00:15, 00:30 closed; 00:45 open
    assert tally.lit_intervals.tolist() == [3, 3, 3]
    assert tally.violation_intervals.tolist() == [0, 0, 0]
    last = tally.last(0)
    assert last is not None and last.start == T0 + timedelta(minutes=30)
