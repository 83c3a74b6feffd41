"""The baselines' decisions, through the same decide() as the traffic policy (pure, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from laterne.controller.baselines import (
    LIT_REASON,
    FixedSchedule,
    Foresight,
    FullPower,
    NotInTimetable,
    SlotTimetable,
)
from laterne.controller.cycle import ControlPolicy, decide
from laterne.controller.policy import Policy, PolicyState
from laterne.controller.snapshot import build_snapshot
from laterne.controller.sun import sun_elevation_deg
from laterne.models.layout import SiteLayout
from laterne.models.site import SiteConfig
from laterne.models.values import Commands, Observation, Reason

BERLIN = ZoneInfo("Europe/Berlin")


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN).astimezone(UTC)  # type: ignore[misc]


def observe(
    layout: SiteLayout, now: datetime, *, zone_ok: bool = True, with_sun: bool = True
) -> Observation:
    return Observation(
        ts=now,
        counter_veh=np.full(layout.n_channels, np.nan),  # no traffic at all: baselines ignore it
        counter_ok=np.zeros(layout.n_channels, dtype=bool),
        zone_temp_c=np.full(layout.n_zones, 19.0 if zone_ok else np.nan),
        zone_ok=np.full(layout.n_zones, zone_ok),
        segment_ok=np.ones(layout.n_segments, dtype=bool),
        sun_elevation_deg=sun_elevation_deg(layout, now) if with_sun else float("nan"),
    )


def decided(
    policy: ControlPolicy[PolicyState],
    site: SiteConfig,
    layout: SiteLayout,
    now: datetime,
    **kw: bool,
) -> Commands:
    d = decide(policy, layout, site.policy, policy.initial_state(), observe(layout, now, **kw), now)
    return d.commands


@pytest.fixture
def full(demo_site: SiteConfig, demo_layout: SiteLayout) -> FullPower:
    return FullPower(demo_layout, demo_site.policy)


@pytest.fixture
def fixed(demo_site: SiteConfig, demo_layout: SiteLayout) -> FixedSchedule:
    return FixedSchedule(demo_layout, demo_site.policy)


def test_full_power_lights_everything_from_dusk_to_dawn_and_never_sets_back(
    full: FullPower, demo_site: SiteConfig, demo_layout: SiteLayout
) -> None:
    for night in (local(2026, 11, 25, 18), local(2026, 11, 29, 3)):  # Wednesday, Sunday
        c = decided(full, demo_site, demo_layout, night)
        assert c.dim_pct.tolist() == [100.0, 100.0, 100.0]
        assert (c.dim_reason == LIT_REASON).all()
        # no setback: the occupied setpoints at 03:00 on a Sunday, too
        assert c.setpoint_c.tolist() == [21.0, 18.0]
        assert (c.setpoint_reason == Reason.OCCUPIED).all()
    day = decided(full, demo_site, demo_layout, local(2026, 11, 25, 12))
    assert day.dim_pct.tolist() == [0.0, 0.0, 0.0]
    assert (day.dim_reason == Reason.DAYLIGHT).all()


def test_full_power_is_clamped_like_any_policy(
    demo_site: SiteConfig, demo_layout: SiteLayout
) -> None:
    c = decided(
        FullPower(demo_layout, demo_site.policy, level_pct=5.0),
        demo_site,
        demo_layout,
        local(2026, 11, 25, 20),
    )
    np.testing.assert_array_equal(c.dim_pct, demo_layout.segments.min_dim_pct)  # 20, 20, 10
    assert (c.dim_reason == Reason.CLAMPED).all()


@pytest.mark.parametrize(
    ("when", "dim"),
    [
        (local(2026, 11, 25, 17, 30), 100.0),  # dusk to 22:00: full
        (local(2026, 11, 25, 21, 59), 100.0),
        (local(2026, 11, 25, 22, 0), 50.0),  # 22:00 to 05:00: reduced
        (local(2026, 11, 26, 0, 30), 50.0),
        (local(2026, 11, 26, 4, 59), 50.0),
        (local(2026, 11, 26, 5, 0), 100.0),  # 05:00 to dawn: full
        (local(2026, 11, 26, 7, 15), 100.0),
        (local(2026, 11, 26, 12, 0), 0.0),  # day: off
    ],
)
def test_fixed_schedule_is_a_halbnachtschaltung_in_local_time(
    fixed: FixedSchedule, demo_site: SiteConfig, demo_layout: SiteLayout, when: datetime, dim: float
) -> None:
    c = decided(fixed, demo_site, demo_layout, when)
    assert c.dim_pct.tolist() == [dim] * 3
    assert (c.dim_reason == (Reason.DAYLIGHT if dim == 0 else LIT_REASON)).all()


def test_the_reduced_hours_follow_local_time_across_daylight_saving(fixed: FixedSchedule) -> None:
    # 20:30 UTC is 21:30 in winter (full) but 22:30 in summer (reduced)
    assert not fixed.reduced(datetime(2026, 1, 14, 20, 30, tzinfo=UTC))
    assert fixed.reduced(datetime(2026, 7, 14, 20, 30, tzinfo=UTC))
    assert FixedSchedule(
        fixed.layout, fixed.params, reduce_from=fixed.reduce_until, reduce_until=fixed.reduce_from
    ).reduced(local(2026, 7, 14, 12))


def test_fixed_schedule_heats_by_the_weekly_schedule(
    fixed: FixedSchedule, demo_site: SiteConfig, demo_layout: SiteLayout
) -> None:
    school_day = decided(fixed, demo_site, demo_layout, local(2026, 11, 25, 10))  # Wednesday
    assert school_day.setpoint_c.tolist() == [21.0, 18.0]
    night = decided(fixed, demo_site, demo_layout, local(2026, 11, 25, 23))
    assert night.setpoint_c.tolist() == [16.0, 14.0]
    assert (night.setpoint_reason == Reason.SETBACK).all()
    # the traffic policy heats the same way
    policy = Policy(demo_layout, demo_site.policy)
    same = decided(policy, demo_site, demo_layout, local(2026, 11, 25, 23))
    assert same.setpoint_c.tolist() == night.setpoint_c.tolist()


@pytest.mark.parametrize("make", [FullPower, FixedSchedule])
def test_an_unknown_zone_temperature_gets_the_default_setpoint(
    make: type[FullPower] | type[FixedSchedule], demo_site: SiteConfig, demo_layout: SiteLayout
) -> None:
    c = decided(
        make(demo_layout, demo_site.policy),
        demo_site,
        demo_layout,
        local(2026, 11, 25, 10),
        zone_ok=False,
    )
    assert c.setpoint_c.tolist() == demo_layout.zones.default_c.tolist()
    assert (c.setpoint_reason == Reason.FAILSAFE).all()


@pytest.mark.parametrize("make", [FullPower, FixedSchedule])
def test_baselines_are_pure_and_keep_the_policy_state_type(
    make: type[FullPower] | type[FixedSchedule], demo_site: SiteConfig, demo_layout: SiteLayout
) -> None:
    policy = make(demo_layout, demo_site.policy)
    now = local(2026, 11, 25, 23)
    state = policy.initial_state()
    assert isinstance(state, PolicyState)
    o = observe(demo_layout, now)
    before = (o.zone_temp_c.copy(), state.flow_veh_h.copy(), state.zone_occupied.copy())
    s1, c1 = policy.step(state, o, now)
    _, c2 = policy.step(state, o, now)
    assert np.array_equal(c1.dim_pct, c2.dim_pct) and np.array_equal(c1.setpoint_c, c2.setpoint_c)
    assert np.array_equal(o.zone_temp_c, before[0])
    assert np.array_equal(state.flow_veh_h, before[1], equal_nan=True)
    assert np.array_equal(state.zone_occupied, before[2])
    assert s1.sun_elevation_deg == o.sun_elevation_deg < 0
    # the sun is computed when the observation has none
    s3, c3 = policy.step(state, observe(demo_layout, now, with_sun=False), now)
    assert s3.sun_elevation_deg == s1.sun_elevation_deg
    assert np.array_equal(c3.dim_pct, c1.dim_pct)
    # the runtime's snapshot takes the baseline's state
    snap = build_snapshot(
        demo_site,
        demo_layout,
        now,
        1,
        s1,
        c1,
        {},
        {d.id: _offline(d.id, now) for d in demo_site.devices},
    )
    assert [s.dim_pct for s in snap.segments] == c1.dim_pct.tolist()
    with pytest.raises(ValueError, match="timezone-aware"):
        policy.step(state, o, now.replace(tzinfo=None))


def _offline(device_id: str, now: datetime):  # type: ignore[no-untyped-def]
    from laterne.controller.health import initial_device_state

    return initial_device_state(device_id, now)


def test_a_slot_timetable_lights_each_segment_at_its_local_slot_level(
    demo_site: SiteConfig, demo_layout: SiteLayout
) -> None:
    table = np.full((3, 96), 60.0)
    table[:, 88] = [30.0, 40.0, 25.0]  # 22:00-22:15 local
    policy = SlotTimetable(demo_layout, demo_site.policy, table)
    assert decided(
        policy, demo_site, demo_layout, local(2026, 11, 25, 22, 10)
    ).dim_pct.tolist() == [
        30.0,
        40.0,
        25.0,
    ]
    assert (
        decided(policy, demo_site, demo_layout, local(2026, 11, 25, 22, 15)).dim_pct.tolist()
        == [60.0] * 3
    )
    day = decided(policy, demo_site, demo_layout, local(2026, 11, 25, 12))
    assert day.dim_pct.tolist() == [0.0] * 3 and (day.dim_reason == Reason.DAYLIGHT).all()
    with pytest.raises(ValueError, match="level_pct must be"):
        SlotTimetable(demo_layout, demo_site.policy, np.zeros((3, 95)))


def test_foresight_commands_the_level_given_for_the_step(
    demo_site: SiteConfig, demo_layout: SiteLayout
) -> None:
    t0, t1 = local(2026, 11, 25, 20), local(2026, 11, 25, 20, 15)
    levels = np.array([[25.0, 37.5, 33.4], [75.0, 50.0, 20.0]])
    policy = Foresight(
        demo_layout, demo_site.policy, np.array([t0.timestamp(), t1.timestamp()]), levels
    )
    assert decided(policy, demo_site, demo_layout, t1).dim_pct.tolist() == [75.0, 50.0, 20.0]
    assert decided(policy, demo_site, demo_layout, t0).dim_pct.tolist() == [25.0, 37.5, 33.4]
    with pytest.raises(NotInTimetable):
        decided(policy, demo_site, demo_layout, local(2026, 11, 25, 20, 5))
