"""The lighting rules around the bands, table-driven: curfews, switching offsets, and — through
the whole decision (policy + safety) — stale counters, overrides and the ramp; then hypothesis
properties over arbitrary input sequences: never below the class the flow estimate requires,
never outside the bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from laterne.controller.cycle import decide
from laterne.controller.policy import Policy, segment_dark
from laterne.controller.safety import within_bounds
from laterne.controller.sun import sun_elevation_deg
from laterne.models.layout import SiteLayout
from laterne.models.site import Curfew, SiteConfig
from laterne.models.values import Commands, Observation, Override, Reason

# demo channels: 0 north.lane1, 1 north.lane2, 2 east.lane1, 3 east.lane2
# segments: 0 bahnhofstr (ch 0+1, M1 design), 1 elberfelder (ch 2), 2 lindenweg (ch 3, P1 design:
# P5 at 20 %, P4 at 40 % (needs 33.4), P3 at 70 % (needs 50))
WED_0100 = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)  # Wednesday 01:00 local (CET)
PLAIN = {"flow_margin_z": 0.0, "flow_trend_horizon_s": 0.0, "flow_profile_weight": 0.0}


def obs(layout: SiteLayout, now: datetime, counts: list[float], ok: bool = True) -> Observation:
    c = np.array(counts, dtype=float)
    okk = np.full(len(counts), ok)
    return Observation(
        ts=now,
        counter_veh=np.where(okk, c, np.nan),
        counter_ok=okk,
        zone_temp_c=np.array([20.0, 18.0]),
        zone_ok=np.ones(2, dtype=bool),
        segment_ok=np.ones(layout.n_segments, dtype=bool),
    )


def with_segment(site: SiteConfig, index: int, **update: object) -> SiteConfig:
    segs = list(site.segments)
    segs[index] = segs[index].model_copy(update=update)
    return site.model_copy(
        update={"segments": segs, "policy": site.policy.model_copy(update=PLAIN)}
    )


def two_steps(
    policy: Policy, layout: SiteLayout, at: datetime, rates_veh_h: list[float]
) -> Commands:
    """The wish at ``at`` after ten minutes of counts at the given per-channel rates."""
    t0 = at - timedelta(minutes=10)
    s, _ = policy.step(policy.initial_state(), obs(layout, t0, [0.0] * 4), t0)
    counts = [r / 6 for r in rates_veh_h]
    return policy.step(s, obs(layout, at, counts), at)[1]


# -- curfews ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("curfew", "local_hour", "weekday_shift_days", "rate", "expected_pct", "reason"),
    [
        # 01:00-05:00 capped at P6 (13.3 %): a busy hour needs P3 (50 %), not the plan's 70 %
        (Curfew(start="01:00", end="05:00", lighting_class="P6"), 2, 0, 300, 50.0, Reason.CURFEW),
        # a quiet hour: P5 at 20 % is what the class needs, the curfew cannot go lower
        (Curfew(start="01:00", end="05:00", lighting_class="P6"), 2, 0, 10, 20.0, Reason.TRAFFIC),
        # before the window: the plan's level
        (Curfew(start="01:00", end="05:00", lighting_class="P6"), 0, 0, 300, 70.0, Reason.TRAFFIC),
        # a cap above the class's need: the cap
        (Curfew(start="01:00", end="05:00", max_dim_pct=60), 3, 0, 300, 60.0, Reason.CURFEW),
        # past midnight the window belongs to the day it started: Tuesday 23:00 to 05:00 holds
        # on Wednesday 02:00, a Wednesday-only window does not
        (
            Curfew(start="23:00", end="05:00", days=["tue"], max_dim_pct=50),
            2, 0, 300, 50.0, Reason.CURFEW,
        ),
        (
            Curfew(start="23:00", end="05:00", days=["wed"], max_dim_pct=50),
            2, 0, 300, 70.0, Reason.TRAFFIC,
        ),
        (
            Curfew(start="23:00", end="05:00", days=["wed"], max_dim_pct=50),
            23, 0, 300, 50.0, Reason.CURFEW,
        ),
    ],
)  # fmt: skip
def test_a_curfew_caps_the_level_but_never_below_the_class(
    demo_site: SiteConfig,
    curfew: Curfew,
    local_hour: int,
    weekday_shift_days: int,
    rate: float,
    expected_pct: float,
    reason: Reason,
) -> None:
    site = with_segment(demo_site, 2, curfews=[curfew])
    layout = SiteLayout.from_config(site)
    policy = Policy(layout, site.policy)
    # Wednesday local_hour:30 (CET = UTC+1)
    at = datetime(2026, 11, 25, tzinfo=UTC) + timedelta(
        days=weekday_shift_days, hours=local_hour - 1, minutes=30
    )
    wish = two_steps(policy, layout, at, [0, 0, 0, rate])
    assert wish.dim_pct[2] == pytest.approx(expected_pct, abs=0.01)
    assert wish.dim_reason[2] == reason
    assert wish.dim_reason[0] == Reason.TRAFFIC  # the other segments have no curfew


# -- switching by the sun, with offsets --------------------------------------------------------


def _crossing(layout: SiteLayout, limit_deg: float, start: datetime, down: bool) -> datetime:
    """The first minute from ``start`` at which the sun crosses ``limit_deg`` (down or up)."""
    t = start
    while (sun_elevation_deg(layout, t) <= limit_deg) != down:
        t += timedelta(minutes=1)
    return t


@pytest.mark.parametrize(
    ("minutes_after", "expected"),
    [(-5, [False, False, False]), (5, [True, False, True]), (35, [True, True, True])],
)
def test_the_on_offset_delays_the_evening_switch_on(
    demo_site: SiteConfig, minutes_after: int, expected: list[bool]
) -> None:
    site = with_segment(demo_site, 1, on_offset_min=30)
    layout = SiteLayout.from_config(site)
    limit = site.policy.daylight_elevation_deg
    dusk = _crossing(layout, limit, datetime(2026, 11, 25, 14, tzinfo=UTC), down=True)
    now = dusk + timedelta(minutes=minutes_after)
    dark = segment_dark(layout, site.policy, now, sun_elevation_deg(layout, now))
    assert dark.tolist() == expected


@pytest.mark.parametrize(
    ("minutes_after", "expected"),
    [(-25, [True, True, True]), (-15, [True, True, False]), (5, [False, False, False])],
)
def test_a_negative_off_offset_switches_off_before_dawn(
    demo_site: SiteConfig, minutes_after: int, expected: list[bool]
) -> None:
    site = with_segment(demo_site, 2, off_offset_min=-20)
    layout = SiteLayout.from_config(site)
    limit = site.policy.daylight_elevation_deg
    dawn = _crossing(layout, limit, datetime(2026, 11, 26, 4, tzinfo=UTC), down=False)
    now = dawn + timedelta(minutes=minutes_after)
    dark = segment_dark(layout, site.policy, now, sun_elevation_deg(layout, now))
    assert dark.tolist() == expected


def test_offsets_reach_the_commands(demo_site: SiteConfig) -> None:
    site = with_segment(demo_site, 1, on_offset_min=30)
    layout = SiteLayout.from_config(site)
    policy = Policy(layout, site.policy)
    dusk = _crossing(
        layout, site.policy.daylight_elevation_deg, datetime(2026, 11, 25, 14, tzinfo=UTC), True
    )
    wish = two_steps(policy, layout, dusk + timedelta(minutes=10), [100, 100, 100, 100])
    assert wish.dim_pct[1] == 0 and wish.dim_reason[1] == Reason.DAYLIGHT
    assert wish.dim_pct[0] > 0 and wish.dim_reason[0] == Reason.TRAFFIC


# -- the whole decision: stale counters, overrides, the ramp -----------------------------------


def _decide_sequence(
    site: SiteConfig,
    steps: list[tuple[float, list[float], bool]],
    overrides: tuple[Override, ...] = (),
) -> list[Commands]:
    """Decisions at WED_0100 + minutes, each with (minute, per-channel rates, counters ok)."""
    layout = SiteLayout.from_config(site)
    policy = Policy(layout, site.policy)
    state = policy.initial_state()
    counts = np.zeros(4)
    last: Commands | None = None
    t_prev = WED_0100
    out = []
    for minute, rates, ok in steps:
        now = WED_0100 + timedelta(minutes=minute)
        counts = counts + np.array(rates) * (now - t_prev).total_seconds() / 3600
        t_prev = now
        d = decide(
            policy, layout, site.policy, state, obs(layout, now, list(counts), ok), now,
            overrides=overrides, last_written=last,
        )  # fmt: skip
        state, last = d.state, d.commands
        out.append(d.commands)
    return out


def test_a_stale_counter_gives_the_failsafe_level_and_fresh_counts_bring_the_band_back(
    demo_site: SiteConfig,
) -> None:
    site = demo_site.model_copy(update={"policy": demo_site.policy.model_copy(update=PLAIN)})
    stale = site.policy.stale_after_s / 60
    quiet = [10.0, 10.0, 10.0, 10.0]
    steps = [(0.0, quiet, True), (10.0, quiet, True), (10 + stale + 1, quiet, False),
             (10 + stale + 2, quiet, True), (10 + stale + 12, quiet, True)]  # fmt: skip
    cmds = _decide_sequence(site, steps)
    assert cmds[1].dim_pct.tolist() == [30, 30, 20]
    assert cmds[2].dim_pct.tolist() == [s.failsafe_dim_pct for s in site.segments]
    assert (cmds[2].dim_reason == Reason.FAILSAFE).all()
    assert (cmds[-1].dim_reason != Reason.FAILSAFE).all()


def test_an_override_holds_from_its_start_to_its_end_then_the_policy_resumes(
    demo_site: SiteConfig,
) -> None:
    site = demo_site.model_copy(update={"policy": demo_site.policy.model_copy(update=PLAIN)})
    o = Override("segment", "lindenweg", 90.0, WED_0100 + timedelta(minutes=20),
                 WED_0100 + timedelta(minutes=40), "street festival", "ops")  # fmt: skip
    quiet = [10.0, 10.0, 10.0, 10.0]
    cmds = _decide_sequence(site, [(m, quiet, True) for m in (0, 10, 20, 30, 40, 50)], (o,))
    levels = [float(c.dim_pct[2]) for c in cmds]
    reasons = [int(c.dim_reason[2]) for c in cmds]
    assert levels[1:] == [20, 90, 90, 20, 20]  # the first step has no rate yet: fail-safe
    assert reasons[2:4] == [Reason.OVERRIDE, Reason.OVERRIDE]
    assert reasons[4] == Reason.TRAFFIC  # expired at its end: the policy's level again


def test_the_ramp_lets_a_rush_up_at_once_and_brings_the_light_down_slowly(
    demo_site: SiteConfig,
) -> None:
    params = demo_site.policy.model_copy(
        update={**PLAIN, "max_dim_step_pct": 10, "flow_window_s": 1, "min_band_hold_s": 0}
    )
    site = demo_site.model_copy(update={"policy": params})
    quiet, rush = [5.0, 5.0, 5.0, 5.0], [450.0, 450.0, 5.0, 5.0]
    steps = [(float(m), rush if m == 3 else quiet, True) for m in range(6)]
    cmds = _decide_sequence(site, steps)
    levels = [float(c.dim_pct[0]) for c in cmds]
    # from the fail-safe 100 % of the first step (no rate yet) down 10 points a cycle; the rush
    # (900 veh/h: M2 at 100 %) at once; then down slowly again
    assert levels == [100, 90, 80, 100, 90, 80]
    r, t = Reason.RAMPED, Reason.TRAFFIC
    assert [int(c.dim_reason[0]) for c in cmds[1:]] == [r, r, t, r, r]


# -- properties ---------------------------------------------------------------------------------

# per channel any rate, or one traffic level for all channels (so quiet spells and rushes occur)
_rates = st.lists(st.floats(0, 2000), min_size=4, max_size=4) | st.sampled_from(
    [0.0, 10.0, 100.0, 300.0, 1000.0]
).map(lambda r: [r] * 4)
_dt_s = st.sampled_from([10.0, 60.0, 300.0, 900.0]) | st.floats(5, 900)
_step = st.tuples(_dt_s, _rates, st.booleans() | st.just(True))


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(_step, min_size=2, max_size=40),
    margin_z=st.sampled_from([0.0, 3.0]),
    ramp_pct=st.sampled_from([10.0, 30.0, 100.0]),
    start_h=st.floats(0, 24 * 7),
)
def test_no_sequence_lights_below_the_class_of_the_estimate_or_outside_the_bounds(
    demo_site: SiteConfig,
    steps: list[tuple[float, list[float], bool]],
    margin_z: float,
    ramp_pct: float,
    start_h: float,
) -> None:
    """Whatever the counts, gaps and outages: every command lies within its bounds, and at night
    a segment whose flow is known is lit at least at the level its estimate's class needs."""
    params = demo_site.policy.model_copy(
        update={"flow_margin_z": margin_z, "max_dim_step_pct": ramp_pct}
    )
    layout = SiteLayout.from_config(demo_site)
    policy = Policy(layout, params)
    state = policy.initial_state()
    now = datetime(2026, 1, 5, tzinfo=UTC) + timedelta(hours=start_h)
    counts = np.zeros(4)
    last: Commands | None = None
    seg = layout.segments
    for dt_s, rates, ok in steps:
        now += timedelta(seconds=dt_s)
        counts = (counts + np.array(rates) * dt_s / 3600) % 65536  # counters wrap
        d = decide(policy, layout, params, state, obs(layout, now, list(counts), ok), now,
                   last_written=last)  # fmt: skip
        state, last = d.state, d.commands
        assert within_bounds(layout, d.commands)
        dark = d.commands.dim_reason != Reason.DAYLIGHT
        flow = state.segment_flow_veh_h
        known = np.isfinite(flow)
        reached = seg.band_min_flow_veh_h <= np.nan_to_num(flow)[:, None]
        required = np.maximum(reached.sum(axis=1) - 1, 0)
        need = seg.band_need_pct[np.arange(layout.n_segments), required]
        lit = d.commands.dim_pct
        assert (lit[dark & known] >= need[dark & known] - 1e-9).all()
        # without flow a dark segment is at its fail-safe level
        unknown = dark & ~known
        assert (lit[unknown] == seg.failsafe_dim_pct[unknown]).all()


# -- a light sensor instead of the sun ---------------------------------------------------------


def test_a_light_sensor_switches_with_hysteresis_and_the_sun_takes_over_without_it(
    demo_site: SiteConfig, demo_layout: SiteLayout
) -> None:
    """Lindenweg's sensor (on below 30 lx, off above 60 lx by default); the others have none."""
    policy = Policy(demo_layout, demo_site.policy.model_copy(update=PLAIN))
    at = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # 16:00 local: the sun is still up
    assert sun_elevation_deg(demo_layout, at) > demo_site.policy.daylight_elevation_deg
    state = policy.initial_state()
    lit = []
    for k, lux in enumerate([100.0, 45.0, 25.0, 45.0, 59.0, 70.0, float("nan")]):
        now = at + timedelta(minutes=k)
        o = obs(demo_layout, now, [k * 1.0] * 4)
        o = Observation(**{**o.__dict__, "segment_lux": np.array([np.nan, np.nan, lux])})
        state, wish = policy.step(state, o, now)
        lit.append(bool(wish.dim_reason[2] != Reason.DAYLIGHT))
        assert wish.dim_reason[0] == Reason.DAYLIGHT  # no sensor: the sun, which is up
    # bright, in the gap (stays off), dark, in the gap (stays on), still in it, bright, sensor lost
    assert lit == [False, False, True, True, True, False, False]
