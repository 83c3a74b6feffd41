"""Lamp and driver faults from expected vs measured power, and burning hours (pure, no clock).

The "field" here is hand-written: segment 0 of the demo site (Bahnhofstraße, 42 × 90 W LED,
standby share 0.08) draws ``working × (7.2 + 82.8 · level/100)`` W at the level its drivers
actually hold; the other segments are healthy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from laterne.controller.faults import (
    FaultKind,
    FaultParams,
    FaultState,
    evaluate_faults,
    initial_fault_state,
)
from laterne.models.layout import SiteLayout
from laterne.models.site import SiteConfig

T0 = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
STEP_S = 60.0


def lamp_w(level_pct: float) -> float:
    return 0.0 if level_pct <= 0 else 7.2 + 82.8 * level_pct / 100


@dataclass(frozen=True)
class Step:
    """Segment 0 over one interval: commanded level, lamps out, driver stuck at, reading ok."""

    dim_pct: float
    out: int = 0
    stuck_pct: float | None = None
    reading: bool = True


Run = tuple[FaultState, list[tuple[int, FaultKind]], list[tuple[int, FaultKind]]]
PARAMS = FaultParams()


def run(layout: SiteLayout, steps: list[Step], params: FaultParams = PARAMS) -> Run:
    """Feed the steps; each evaluation sees the power of the level commanded one step earlier."""
    state = initial_fault_state(layout)
    raised: list[tuple[int, FaultKind]] = []
    cleared: list[tuple[int, FaultKind]] = []
    other = np.array([40.0, 40.0])
    other_w = layout.segments.luminaires[1:] * np.array(
        [0.08 * 60 + 0.92 * 60 * 0.4, 0.08 * 35 + 0.92 * 35 * 0.4]
    )
    held = Step(0.0)
    for k, step in enumerate(steps):
        level = held.dim_pct if held.stuck_pct is None else held.stuck_pct
        seg0_w = (42 - held.out) * lamp_w(level) if held.reading else np.nan
        power = np.concatenate([[seg0_w], other_w if k > 0 else [np.nan, np.nan]])
        out = evaluate_faults(
            layout,
            params,
            state,
            power,
            np.concatenate([[step.dim_pct], other]),
            T0 + timedelta(seconds=k * STEP_S),
        )
        state = out.state
        raised += [(k, f.kind) for f in out.raised if f.segment_id == "bahnhofstr"]
        cleared += [(k, f.kind) for f in out.cleared if f.segment_id == "bahnhofstr"]
        assert not [f for f in out.raised if f.segment_id != "bahnhofstr" and k > 3], out.raised
        held = step
    return state, raised, cleared


def kinds(state: FaultState) -> set[FaultKind]:
    return {f.kind for f in state.by_segment.get("bahnhofstr", ())}


LAMPS, STUCK, NOREAD = FaultKind.LAMPS_OUT, FaultKind.STUCK_DIMMING, FaultKind.NO_POWER_READING


@pytest.mark.parametrize(
    ("name", "steps", "open_at_end", "first_raised"),
    [
        ("healthy at one level", [Step(50)] * 10, set(), None),
        (
            "healthy through level changes",
            [Step(d) for d in (30, 30, 75, 75, 50, 50) * 3],
            set(),
            None,
        ),
        ("two of 42 out stays within 85 %", [Step(50, out=2)] * 10, set(), None),
        # the level commanded at step 0 has been held the 60 s of settling at step 1, when the
        # first reading is judged: three low readings in a row raise the fault at step 3
        ("ten out at 50 %", [Step(50, out=10)] * 10, {LAMPS}, (3, LAMPS)),
        ("ten out, seen only twice", [Step(50, out=10)] * 2 + [Step(50)] * 5, set(), None),
        ("off by day says nothing", [Step(0, out=42)] * 10, set(), None),
        (
            "stuck at full while dimmed",
            # level changes judged at steps 3 and 5 (each 60 s after it was commanded)
            [Step(d, stuck_pct=100) for d in (100, 100, 30, 30, 75, 75, 50, 50, 30, 30)],
            {STUCK},
            (5, STUCK),
        ),
        (
            "stuck low: not taken for lamps out",
            [Step(d, stuck_pct=30) for d in (30, 30, 100, 100, 60, 60, 100, 100, 100, 100)],
            {STUCK},
            (5, STUCK),
        ),
        ("no reading three times", [Step(50, reading=False)] * 4, {NOREAD}, (3, NOREAD)),
        ("no reading twice", [Step(50, reading=False)] * 2 + [Step(50)] * 3, set(), None),
    ],
)
def test_faults(
    demo_layout: SiteLayout,
    name: str,
    steps: list[Step],
    open_at_end: set[FaultKind],
    first_raised: tuple[int, FaultKind] | None,
) -> None:
    state, raised, _ = run(demo_layout, steps)
    assert kinds(state) == open_at_end, name
    assert (raised[0] if raised else None) == first_raised, name


def test_lamps_out_estimate_and_repair(demo_layout: SiteLayout) -> None:
    broken = [Step(60, out=10)] * 6
    state, raised, cleared = run(demo_layout, broken + [Step(60)] * 6)
    assert raised == [(3, LAMPS)] and cleared == [(9, LAMPS)]  # 3 good readings after repair
    assert not state.faults
    state, _, _ = run(demo_layout, broken)
    (fault,) = state.faults
    assert fault.lamps_out == 10
    assert fault.expected_power_w == pytest.approx(42 * lamp_w(60))
    assert fault.measured_power_w == pytest.approx(32 * lamp_w(60))
    assert fault.since == T0 + timedelta(seconds=3 * STEP_S)
    assert fault.last_seen == T0 + timedelta(seconds=5 * STEP_S)


def test_a_stuck_segment_recovers_when_the_power_follows_again(demo_layout: SiteLayout) -> None:
    stuck = [Step(d, stuck_pct=100) for d in (100, 100, 30, 30, 75, 75, 50, 50)]
    free = [Step(d) for d in (30, 30, 100, 100)]
    state, raised, cleared = run(demo_layout, stuck + free)
    assert raised == [(5, STUCK)]
    assert cleared and cleared[0][1] is STUCK
    assert kinds(state) == set()


def test_burning_hours_count_lit_time_and_weight_it_by_level(demo_layout: SiteLayout) -> None:
    # 2 h at 50 %, then 1 h off, then 1 h at 100 % (the first level is in force from step 0)
    steps = [Step(50)] * 120 + [Step(0)] * 60 + [Step(100)] * 60 + [Step(100)]
    state, _, _ = run(demo_layout, steps)
    assert state.burning_h[0] == pytest.approx(3.0)
    assert state.full_power_h[0] == pytest.approx(2 * 0.5 + 1.0)
    assert state.burning_h[1] == pytest.approx(4.0)  # the others held 40 % throughout
    assert state.full_power_h[1] == pytest.approx(4.0 * 0.4)


def test_a_long_gap_counts_at_most_max_gap(demo_layout: SiteLayout) -> None:
    params = FaultParams(max_gap_s=600)
    s = initial_fault_state(demo_layout)
    s = evaluate_faults(demo_layout, params, s, np.full(3, np.nan), np.full(3, 100.0), T0).state
    later = T0 + timedelta(hours=5)
    s = evaluate_faults(demo_layout, params, s, np.full(3, np.nan), np.full(3, 100.0), later).state
    np.testing.assert_allclose(s.burning_h, 600 / 3600)


def test_clo_drivers_draw_less_when_new_and_are_not_lamps_out(demo_site: SiteConfig) -> None:
    segs = [
        s.model_copy(update={"constant_light_output": True, "clo_start_share": 0.8})
        for s in demo_site.segments
    ]
    layout = SiteLayout.from_config(demo_site.model_copy(update={"segments": segs}))
    new_clo_w = layout.segments.power_w(np.full(3, 100.0), 0.0)
    np.testing.assert_allclose(new_clo_w[0], 42 * (7.2 + 82.8 * 0.8))
    s = initial_fault_state(layout)
    for k in range(8):
        now = T0 + timedelta(seconds=k * STEP_S)
        s = evaluate_faults(layout, FaultParams(), s, new_clo_w, np.full(3, 100.0), now).state
    assert not s.faults


@pytest.mark.parametrize(
    "bad",
    [
        {"lamps_out_ratio": 1.0},
        {"confirm_checks": 0},
        {"settle_s": -1},
        {"stuck_follow_share": 0},
    ],
)
def test_bad_params_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FaultParams(**bad)  # type: ignore[arg-type]


def test_time_going_back_or_wrong_shapes_are_refused(demo_layout: SiteLayout) -> None:
    s = initial_fault_state(demo_layout)
    s = evaluate_faults(demo_layout, FaultParams(), s, np.zeros(3), np.zeros(3), T0).state
    with pytest.raises(ValueError, match="before"):
        evaluate_faults(demo_layout, FaultParams(), s, np.zeros(3), np.zeros(3), T0 - timedelta(1))
    with pytest.raises(ValueError, match="shape"):
        evaluate_faults(demo_layout, FaultParams(), s, np.zeros(2), np.zeros(3), T0)
