"""The policy's decisions on table-driven cases (pure: no I/O, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from laterne.controller.policy import Policy, PolicyState
from laterne.models.layout import SiteLayout
from laterne.models.site import SiteConfig
from laterne.models.values import Observation, Reason

# demo channels: 0 north.lane1, 1 north.lane2, 2 east.lane1, 3 east.lane2
# segments: 0 bahnhofstr (ch 0+1), 1 elberfelder (ch 2), 2 lindenweg (ch 3)
NIGHT = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)  # Wednesday, 00:00 local
NOON = datetime(2026, 11, 25, 11, 0, tzinfo=UTC)  # 12:00 local


def obs(
    layout: SiteLayout,
    now: datetime,
    counts: list[float],
    ok: list[bool] | None = None,
    temps: tuple[float, float] = (20.0, 18.0),
) -> Observation:
    c = np.array(counts, dtype=float)
    okk = np.array(ok if ok is not None else [True] * len(counts))
    return Observation(
        ts=now,
        counter_veh=np.where(okk, c, np.nan),
        counter_ok=okk,
        zone_temp_c=np.array(temps),
        zone_ok=np.ones(2, dtype=bool),
        segment_ok=np.ones(layout.n_segments, dtype=bool),
    )


def run(
    policy: Policy,
    layout: SiteLayout,
    start: datetime,
    dt_s: float,
    counts0: list[float],
    rates_veh_h: list[float],
) -> tuple[PolicyState, object]:
    """Two observations ``dt_s`` apart whose counts grow at the given per-channel rates."""
    s = policy.initial_state()
    s, _ = policy.step(s, obs(layout, start, counts0), start)
    later = start + timedelta(seconds=dt_s)
    counts1 = [c + r * dt_s / 3600 for c, r in zip(counts0, rates_veh_h, strict=True)]
    return policy.step(s, obs(layout, later, counts1), later)


#: the band from the plain flow estimate: no counting-noise margin, trend or learnt profile
PLAIN = {"flow_margin_z": 0.0, "flow_trend_horizon_s": 0.0, "flow_profile_weight": 0.0}


@pytest.fixture
def policy(demo_site: SiteConfig, demo_layout: SiteLayout) -> Policy:
    return Policy(demo_layout, demo_site.policy)


@pytest.mark.parametrize(
    ("rates", "expected_dim", "expected_class"),
    [
        # busy main road, quiet side streets
        ([500, 500, 20, 10], [100, 30, 20], ["M2", "M5", "P5"]),
        # medium main road (150..400 -> M4), collector 100..300 -> M4, residential 60..200 -> P4
        ([100, 100, 150, 100], [50, 60, 40], ["M4", "M4", "P4"]),
        # everything empty: lowest bands
        ([0, 0, 0, 0], [30, 30, 20], ["M5", "M5", "P5"]),
        # heavy everywhere
        ([600, 600, 400, 400], [100, 100, 70], ["M2", "M3", "P3"]),
    ],
)
def test_night_dimming_follows_traffic_band(
    policy: Policy,
    demo_layout: SiteLayout,
    rates: list[float],
    expected_dim: list[float],
    expected_class: list[str],
) -> None:
    state, cmds = run(policy, demo_layout, NIGHT, 600, [1000.0] * 4, rates)
    assert cmds.dim_pct.tolist() == expected_dim  # type: ignore[attr-defined]
    assert all(r == Reason.TRAFFIC for r in cmds.dim_reason)  # type: ignore[attr-defined]
    classes = [demo_layout.segments.band_class[i][b] for i, b in enumerate(state.segment_band)]
    assert classes == expected_class
    np.testing.assert_allclose(
        state.segment_flow_veh_h,
        [rates[0] + rates[1], rates[2], rates[3]],
    )


def test_lights_off_in_daylight_whatever_the_traffic(
    policy: Policy, demo_layout: SiteLayout
) -> None:
    state, cmds = run(policy, demo_layout, NOON, 600, [0.0] * 4, [900, 900, 900, 900])
    assert cmds.dim_pct.tolist() == [0, 0, 0]  # type: ignore[attr-defined]
    assert all(r == Reason.DAYLIGHT for r in cmds.dim_reason)  # type: ignore[attr-defined]
    assert state.sun_elevation_deg > 10


def test_counter_wrap_is_not_a_spike(policy: Policy, demo_layout: SiteLayout) -> None:
    near_wrap = 2.0**32 - 100
    s = policy.initial_state()
    s, _ = policy.step(s, obs(demo_layout, NIGHT, [near_wrap] * 4), NIGHT)
    later = NIGHT + timedelta(hours=1)
    s, _ = policy.step(s, obs(demo_layout, later, [50.0] * 4), later)  # wrapped: +150 each
    np.testing.assert_allclose(s.flow_veh_h, [150.0] * 4)


def test_counter_reset_is_ignored_not_taken_as_traffic(
    policy: Policy, demo_layout: SiteLayout
) -> None:
    s, _ = run(policy, demo_layout, NIGHT, 600, [1_000_000.0] * 4, [100] * 4)
    later = NIGHT + timedelta(seconds=630)
    s2, _ = policy.step(s, obs(demo_layout, later, [0.0] * 4), later)  # device reset to 0
    np.testing.assert_allclose(s2.flow_veh_h, s.flow_veh_h)
    assert (s2.last_count_veh == 0).all()  # counting goes on from the new value


def test_missing_traffic_gives_nan_wish_only_at_night(
    policy: Policy, demo_layout: SiteLayout
) -> None:
    s = policy.initial_state()
    bad = obs(demo_layout, NIGHT, [0.0] * 4, ok=[False] * 4)
    _, cmds = policy.step(s, bad, NIGHT)
    assert np.isnan(cmds.dim_pct).all()
    _, cmds_day = policy.step(s, obs(demo_layout, NOON, [0.0] * 4, ok=[False] * 4), NOON)
    assert cmds_day.dim_pct.tolist() == [0, 0, 0]


def test_flow_goes_stale_after_limit(
    policy: Policy, demo_layout: SiteLayout, demo_site: SiteConfig
) -> None:
    s, cmds = run(policy, demo_layout, NIGHT, 60, [0.0] * 4, [600, 600, 10, 10])
    assert np.isfinite(cmds.dim_pct).all()  # type: ignore[attr-defined]
    # the east counter stops answering; the north one keeps counting at 1200 veh/h in total
    dt_s = 60 + demo_site.policy.stale_after_s + 1
    stale_at = NIGHT + timedelta(seconds=dt_s)
    north = 600 * dt_s / 3600
    lost = obs(demo_layout, stale_at, [north, north, 0.0, 0.0], ok=[True, True, False, False])
    _, cmds2 = policy.step(s, lost, stale_at)
    assert cmds2.dim_pct[0] == 100  # still decided by traffic
    assert np.isnan(cmds2.dim_pct[1]) and np.isnan(cmds2.dim_pct[2])  # left to the safety filter


@pytest.mark.parametrize(
    ("local", "expected_sp", "expected_reason"),
    [
        ("2026-11-25T10:00", [21, 18], [Reason.OCCUPIED, Reason.OCCUPIED]),  # Wednesday
        ("2026-11-25T06:29", [16, 14], [Reason.SETBACK, Reason.SETBACK]),
        ("2026-11-25T06:30", [21, 14], [Reason.OCCUPIED, Reason.SETBACK]),
        ("2026-11-25T20:00", [16, 18], [Reason.SETBACK, Reason.OCCUPIED]),
        ("2026-11-25T23:30", [16, 14], [Reason.SETBACK, Reason.SETBACK]),
        ("2026-11-28T10:00", [16, 18], [Reason.SETBACK, Reason.OCCUPIED]),  # Saturday
        ("2026-11-29T10:00", [16, 14], [Reason.SETBACK, Reason.SETBACK]),  # Sunday
        ("2026-07-01T10:00", [21, 18], [Reason.OCCUPIED, Reason.OCCUPIED]),  # summer time
    ],
)
def test_heating_setpoints_follow_local_schedule(
    policy: Policy,
    demo_layout: SiteLayout,
    local: str,
    expected_sp: list[float],
    expected_reason: list[Reason],
) -> None:
    now = datetime.fromisoformat(local).replace(tzinfo=demo_layout.timezone).astimezone(UTC)
    _, cmds = policy.step(policy.initial_state(), obs(demo_layout, now, [0.0] * 4), now)
    assert cmds.setpoint_c.tolist() == expected_sp
    assert cmds.setpoint_reason.tolist() == [int(r) for r in expected_reason]


def test_step_is_pure(policy: Policy, demo_layout: SiteLayout) -> None:
    s0 = policy.initial_state()
    o = obs(demo_layout, NIGHT, [10.0, 20.0, 30.0, 40.0])
    before = (o.counter_veh.copy(), s0.last_count_veh.copy())
    a_state, a = policy.step(s0, o, NIGHT)
    b_state, b = policy.step(s0, o, NIGHT)
    np.testing.assert_array_equal(o.counter_veh, before[0])
    np.testing.assert_array_equal(s0.last_count_veh, before[1])
    np.testing.assert_array_equal(a_state.last_count_veh, b_state.last_count_veh)
    np.testing.assert_array_equal(a.setpoint_c, b.setpoint_c)


def test_naive_time_is_refused(policy: Policy, demo_layout: SiteLayout) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        policy.step(
            policy.initial_state(), obs(demo_layout, NIGHT, [0.0] * 4), NIGHT.replace(tzinfo=None)
        )


def test_warm_up_is_the_mean_of_everything_seen(policy: Policy, demo_layout: SiteLayout) -> None:
    """Right after a start, one short interval must not set the flow: until the estimate covers
    flow_window_s it is the plain mean of all intervals (here 10 s at 3600 veh/h, then 290 s at
    0 veh/h: 120 veh/h, not the 3600 an exponential average seeded with the first would hold)."""
    s = policy.initial_state()
    s, _ = policy.step(s, obs(demo_layout, NIGHT, [0.0] * 4), NIGHT)
    t1 = NIGHT + timedelta(seconds=10)
    s, _ = policy.step(s, obs(demo_layout, t1, [10.0] * 4), t1)
    np.testing.assert_allclose(s.flow_veh_h, 3600.0)
    for k in range(1, 30):  # 29 more intervals of 10 s without a vehicle
        t = t1 + timedelta(seconds=10 * k)
        s, _ = policy.step(s, obs(demo_layout, t, [10.0] * 4), t)
    np.testing.assert_allclose(s.flow_veh_h, 120.0)


def test_estimate_starts_over_after_an_outage(
    policy: Policy, demo_layout: SiteLayout, demo_site: SiteConfig
) -> None:
    s, _ = run(policy, demo_layout, NIGHT, 600, [0.0] * 4, [1000.0] * 4)
    gap_s = demo_site.policy.stale_after_s + 600
    t = NIGHT + timedelta(seconds=600 + gap_s)
    counts = 1000.0 * 600 / 3600 + 10.0 * gap_s / 3600  # 10 veh/h during the gap
    s, _ = policy.step(s, obs(demo_layout, t, [counts] * 4), t)
    np.testing.assert_allclose(s.flow_veh_h, 10.0)  # not blended with the old 1000 veh/h


def _flows(policy: Policy, layout: SiteLayout, flows_veh_h: list[float], dt_s: float = 60.0):  # type: ignore[no-untyped-def]
    """Feed bahnhofstr (channels 0+1) the given flows, one interval each; return its dim levels."""
    s = policy.initial_state()
    counts = np.zeros(4)
    t = NIGHT
    s, _ = policy.step(s, obs(layout, t, list(counts)), t)
    dims = []
    for f in flows_veh_h:
        counts = counts + np.array([f / 2, f / 2, 0, 0]) * dt_s / 3600
        t = t + timedelta(seconds=dt_s)
        s, c = policy.step(s, obs(layout, t, list(counts)), t)
        dims.append(float(c.dim_pct[0]))
    return dims


@pytest.mark.parametrize(
    ("params", "flows", "expected"),
    [
        # bahnhofstr bands: 0 -> 30 %, 150 -> 50 %, 400 -> 75 %, 800 -> 100 %
        # up is immediate
        ({"flow_window_s": 1}, [100, 160], [30, 50]),
        # hovering around 400: once up at 75 %, a dip to 390 (within 15 %) does not drop it
        ({"flow_window_s": 1}, [420, 390, 410, 380, 395], [75, 75, 75, 75, 75]),
        # far enough below (< 340) but held for less than min_band_hold_s: stays
        ({"flow_window_s": 1, "min_band_hold_s": 600}, [420, 300, 300], [75, 75, 75]),
        # far enough below and held long enough: drops to the band the flow is in
        ({"flow_window_s": 1, "min_band_hold_s": 120}, [420, 300, 300, 300], [75, 75, 50, 50]),
        # without hysteresis and hold the old behaviour: every crossing switches
        (
            {"flow_window_s": 1, "band_hysteresis_pct": 0, "min_band_hold_s": 0},
            [420, 390, 410, 380],
            [75, 50, 75, 50],
        ),
    ],
)
def test_band_hysteresis(
    demo_site: SiteConfig,
    demo_layout: SiteLayout,
    params: dict[str, float],
    flows: list[float],
    expected: list[float],
) -> None:
    policy = Policy(demo_layout, demo_site.policy.model_copy(update={**PLAIN, **params}))
    assert _flows(policy, demo_layout, flows) == expected


def test_a_zone_without_a_good_temperature_gets_no_wish(
    policy: Policy, demo_layout: SiteLayout
) -> None:
    """The one fail-safe pattern: the policy says NaN, the safety filter sets the default."""
    o = obs(demo_layout, NIGHT, [0, 0, 0, 0])
    o = Observation(**{**o.__dict__, "zone_ok": np.array([False, True])})
    _, wish = policy.step(policy.initial_state(), o, NIGHT)
    assert np.isnan(wish.setpoint_c[0]) and np.isfinite(wish.setpoint_c[1])


def test_a_forecast_raises_the_band_but_never_lowers_it(
    policy: Policy, demo_layout: SiteLayout
) -> None:
    from laterne.controller.policy import Forecast

    s = policy.initial_state()
    s, _ = policy.step(s, obs(demo_layout, NIGHT, [0, 0, 0, 0]), NIGHT)
    later = NIGHT + timedelta(seconds=300)
    o = obs(demo_layout, later, [5, 5, 5, 5])  # 60 veh/h per channel
    plain = policy.step(s, o, later)[1].dim_pct
    busy = Forecast(np.array([900.0, np.nan, 0.0]))
    ahead = policy.step(s, o, later, forecast=busy)[1].dim_pct
    assert ahead[0] == 100.0 and plain[0] < 100.0  # forecast 900 veh/h: the top band
    assert ahead[1] == plain[1] and ahead[2] == plain[2]  # none, or below the measurement


def test_a_leading_scenario_axis_broadcasts(policy: Policy, demo_layout: SiteLayout) -> None:
    """Two scenarios' counts in one array give each scenario's own single-run flows."""
    from laterne.controller.policy import estimate_flow

    par = policy.params
    s0 = policy.initial_state()
    c0 = np.zeros(4)
    ok = np.ones(4, dtype=bool)
    s1 = estimate_flow(demo_layout, par, s0, c0, ok, NIGHT.timestamp())
    state1 = PolicyState(
        last_count_veh=s1.last_count_veh, last_count_s=s1.last_count_s,
        flow_veh_h=s1.flow_veh_h, flow_s=s1.flow_s, flow_span_s=s1.flow_span_s,
        segment_flow_veh_h=s1.segment_flow_veh_h, segment_band=s0.segment_band,
        band_since_s=s0.band_since_s, zone_occupied=s0.zone_occupied,
    )  # fmt: skip
    counts = np.array([[10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0]])
    t = NIGHT.timestamp() + 3600
    both = estimate_flow(demo_layout, par, state1, counts, np.ones((2, 4), bool), t)
    for k in range(2):
        one = estimate_flow(demo_layout, par, state1, counts[k], ok, t)
        assert both.segment_flow_veh_h[k].tolist() == one.segment_flow_veh_h.tolist()
