"""The safety filter: fail-safe, ramp and bounds, each rule on its own and its postcondition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from laterne.controller.safety import UnknownOverrideTarget, apply_safety, within_bounds
from laterne.models.layout import SiteLayout
from laterne.models.site import PolicyParams, SiteConfig
from laterne.models.values import Commands, Observation, Override, Reason

NOW = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
NAN = float("nan")


def cmds(dim: list[float], sp: list[float], reason: Reason = Reason.TRAFFIC) -> Commands:
    return Commands(
        dim_pct=np.array(dim, dtype=float),
        dim_reason=np.full(len(dim), reason, dtype=np.int8),
        setpoint_c=np.array(sp, dtype=float),
        setpoint_reason=np.full(len(sp), Reason.OCCUPIED, dtype=np.int8),
    )


def obs(zone_ok: list[bool]) -> Observation:
    return Observation(
        ts=NOW,
        counter_veh=np.zeros(4),
        counter_ok=np.ones(4, dtype=bool),
        zone_temp_c=np.array([20.0, 18.0]),
        zone_ok=np.array(zone_ok),
        segment_ok=np.ones(3, dtype=bool),
    )


# demo bounds: dim [20,100], [20,100], [10,100]; failsafe 100, 100, 80; setpoints [12,24], [12,22]
@pytest.mark.parametrize(
    ("dim", "expected", "reasons"),
    [
        ([50, 50, 50], [50, 50, 50], [Reason.TRAFFIC] * 3),
        ([NAN, 50, NAN], [100, 50, 80], [Reason.FAILSAFE, Reason.TRAFFIC, Reason.FAILSAFE]),
        ([5, 150, -3], [20, 100, 0], [Reason.CLAMPED, Reason.CLAMPED, Reason.CLAMPED]),
        ([0, 0, 0], [0, 0, 0], [Reason.TRAFFIC] * 3),  # off is allowed: controller min is 0
        ([float("inf"), 30, 15], [100, 30, 15], [Reason.FAILSAFE, Reason.TRAFFIC, Reason.TRAFFIC]),
    ],
)
def test_dim_rules(
    demo_layout: SiteLayout,
    demo_site: SiteConfig,
    dim: list[float],
    expected: list[float],
    reasons: list[Reason],
) -> None:
    out = apply_safety(demo_layout, demo_site.policy, cmds(dim, [21, 18]), obs([True, True]), None)
    assert out.dim_pct.tolist() == expected
    assert out.dim_reason.tolist() == [int(r) for r in reasons]
    assert within_bounds(demo_layout, out)


@pytest.mark.parametrize(
    ("sp", "zone_ok", "expected", "reasons"),
    [
        ([21, 18], [True, True], [21, 18], [Reason.OCCUPIED, Reason.OCCUPIED]),
        # a zone whose temperature is unknown: the policy says NaN (see test_policy), and only
        # NaN decides — the filter does not second-guess a finite wish
        ([NAN, 18], [False, True], [19, 18], [Reason.FAILSAFE, Reason.OCCUPIED]),
        ([30, 5], [True, True], [24, 12], [Reason.CLAMPED, Reason.CLAMPED]),
        ([NAN, 18], [True, True], [19, 18], [Reason.FAILSAFE, Reason.OCCUPIED]),
    ],
)
def test_setpoint_rules(
    demo_layout: SiteLayout,
    demo_site: SiteConfig,
    sp: list[float],
    zone_ok: list[bool],
    expected: list[float],
    reasons: list[Reason],
) -> None:
    out = apply_safety(demo_layout, demo_site.policy, cmds([50, 50, 50], sp), obs(zone_ok), None)
    assert out.setpoint_c.tolist() == expected
    assert out.setpoint_reason.tolist() == [int(r) for r in reasons]


TRAFFIC = Reason.TRAFFIC


@pytest.mark.parametrize(
    ("last", "wish", "expected", "reasons"),
    [
        # rising is the class the traffic needs now: at once; fail-safe and off: at once
        ([30, 30, 30], [100, NAN, 0], [100, 100, 0], [TRAFFIC, Reason.FAILSAFE, TRAFFIC]),
        # falling: at most 10 points per cycle
        ([100, 60, 80], [30, 55, 50], [90, 55, 70], [Reason.RAMPED, TRAFFIC, Reason.RAMPED]),
    ],
)
def test_the_ramp_slows_falling_levels_only(
    demo_layout: SiteLayout,
    last: list[float],
    wish: list[float],
    expected: list[float],
    reasons: list[Reason],
) -> None:
    params = PolicyParams(max_dim_step_pct=10)
    out = apply_safety(
        demo_layout, params, cmds(wish, [21, 18]), obs([True, True]), cmds(last, [21, 18])
    )
    assert out.dim_pct.tolist() == expected
    assert out.dim_reason.tolist() == [int(r) for r in reasons]


def test_filter_does_not_mutate_its_input(demo_layout: SiteLayout, demo_site: SiteConfig) -> None:
    wish = cmds([NAN, 150, 50], [30, 18])
    apply_safety(demo_layout, demo_site.policy, wish, obs([True, True]), None)
    assert np.isnan(wish.dim_pct[0]) and wish.dim_pct[1] == 150 and wish.setpoint_c[0] == 30
    assert wish.dim_reason.tolist() == [Reason.TRAFFIC] * 3


def test_within_bounds_detects_violation(demo_layout: SiteLayout) -> None:
    assert not within_bounds(demo_layout, cmds([10, 50, 50], [21, 18]))  # 10 < min 20
    assert not within_bounds(demo_layout, cmds([50, 50, 50], [25, 18]))


# -- overrides ------------------------------------------------------------------------------------


def _override(target: str, id_: str, value: float, start_h: float, end_h: float) -> Override:
    return Override(
        target, id_, value, NOW + timedelta(hours=start_h), NOW + timedelta(hours=end_h),
        reason="street festival", author="energy manager",
    )  # fmt: skip


def test_an_override_beats_policy_and_failsafe_but_not_the_bounds(
    demo_layout: SiteLayout, demo_site: SiteConfig
) -> None:
    overrides = [
        _override("segment", "bahnhofstr", 100.0, -1, 1),  # in force
        _override("segment", "elberfelder", 5.0, -1, 1),  # below min_dim_pct 20: clamped
        _override("segment", "lindenweg", 100.0, 1, 2),  # not yet
        _override("zone", "school.gym", 21.0, -1, 1),  # zone temperature unknown: still 21
    ]
    wish = cmds([NAN, 50, 30], [16, 14])
    out = apply_safety(
        demo_layout, demo_site.policy, wish, obs([True, False]), None, now=NOW, overrides=overrides
    )
    assert out.dim_pct.tolist() == [100, 20, 30]
    assert out.dim_reason.tolist() == [Reason.OVERRIDE, Reason.CLAMPED, Reason.TRAFFIC]
    assert out.setpoint_c.tolist() == [16, 21]
    assert out.setpoint_reason.tolist() == [Reason.OCCUPIED, Reason.OVERRIDE]


def test_an_override_ends_at_its_end_and_the_later_of_two_wins(
    demo_layout: SiteLayout, demo_site: SiteConfig
) -> None:
    overrides = [
        _override("segment", "bahnhofstr", 100.0, -2, 0),  # ended exactly now
        _override("segment", "elberfelder", 80.0, -2, 1),
        _override("segment", "elberfelder", 60.0, -1, 1),  # started later: wins
    ]
    out = apply_safety(
        demo_layout, demo_site.policy, cmds([30, 30, 30], [21, 18]), obs([True, True]), None,
        now=NOW, overrides=overrides,
    )  # fmt: skip
    assert out.dim_pct.tolist() == [30, 60, 30]


def test_an_override_for_an_unknown_segment_is_refused(
    demo_layout: SiteLayout, demo_site: SiteConfig
) -> None:
    with pytest.raises(UnknownOverrideTarget, match="nowhere"):
        apply_safety(
            demo_layout, demo_site.policy, cmds([30, 30, 30], [21, 18]), obs([True, True]), None,
            now=NOW, overrides=[_override("segment", "nowhere", 50, -1, 1)],
        )  # fmt: skip


def test_the_ramp_starts_from_what_was_written_not_from_nothing(
    demo_layout: SiteLayout, demo_site: SiteConfig
) -> None:
    params = demo_site.policy.model_copy(update={"max_dim_step_pct": 10})
    written = cmds([80, NAN, 50], [21, 18])  # elberfelder: never written (a failed write)
    wish = cmds([30, 30, 30], [21, 18])
    out = apply_safety(demo_layout, params, wish, obs([True, True]), written)
    assert out.dim_pct.tolist() == [70, 30, 40]
    assert out.dim_reason.tolist() == [Reason.RAMPED, Reason.TRAFFIC, Reason.RAMPED]
