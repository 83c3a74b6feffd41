"""Key figures of a run, on hand-made arrays and on a simulated week against the baselines."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from laterne.controller.baselines import FixedSchedule, FullPower
from laterne.models.site import SiteConfig, Tariff
from laterne.models.values import Reason
from laterne.simulations.kpis import KpiMismatch, kpis, savings
from laterne.simulations.runner import SimulationResult, params_for_step, run, site_policy

F, T, D = Reason.FAILSAFE, Reason.TRAFFIC, Reason.DAYLIGHT


@pytest.fixture(scope="module")
def four_steps(demo_site: SiteConfig) -> SimulationResult:
    """A real run of four 30-minute steps, whose arrays the tests then replace."""
    start = datetime(2026, 11, 25, 21, tzinfo=UTC)
    return run(demo_site, site_policy(demo_site, 1800.0), start=start,
               end=start + timedelta(hours=2), step_s=1800.0)  # fmt: skip


def made(base: SimulationResult) -> SimulationResult:
    # 3 segments (fail-safe 100, 100, 80 %), 2 zones (occupied 21, 18 °C), 1 building
    return replace(
        base,
        dim_pct=np.array([[100, 100, 80], [50, 0, 20], [30, 0, 80], [30, 0, 70.0]]),
        dim_reason=np.array([[F, F, F], [T, D, T], [T, D, F], [T, D, T]], dtype=np.int8),
        segment_power_w=np.array([[1000, 500, 0], [2000, 0, 0], [0, 0, 0], [1000, 0, 100.0]]),
        building_heating_kwh=np.array([[10.0], [20.0], [0.0], [5.0]]),
        zone_temp_c=np.array([[21, 18], [19.9, 16.5], [19.0, 17.5], [15, 10.0]]),
        zone_occupied=np.array([[True, True], [True, True], [False, True], [True, False]]),
    )


def test_energy_cost_co2_and_service_from_the_arrays(four_steps: SimulationResult) -> None:
    k = kpis(made(four_steps), Tariff(energy_price_eur_per_kwh=0.5, co2_kg_per_kwh=0.4))
    assert k.hours == 2.0
    # 30-minute steps: W × 0.5 h
    assert k.segment_energy_kwh.tolist() == [2.0, 0.25, 0.05]
    assert k.building_heating_kwh.tolist() == [35.0]
    assert k.lighting_kwh == pytest.approx(2.3) and k.heating_kwh == 35.0
    assert k.energy_kwh == pytest.approx(37.3)
    assert k.cost_eur == pytest.approx(18.65) and k.co2_kg == pytest.approx(14.92)
    assert k.lighting_cost_eur + k.heating_cost_eur == pytest.approx(k.cost_eur)
    assert k.segment_cost_eur.tolist() == pytest.approx([1.0, 0.125, 0.025])
    assert k.segment_lit_h.tolist() == [2.0, 0.5, 2.0]
    assert k.segment_dimmed_h.tolist() == [1.5, 0.0, 1.0]  # below 100, 100, 80 %
    assert k.segment_failsafe_h.tolist() == [0.5, 0.5, 1.0]
    assert k.segment_mean_lit_dim_pct.tolist() == pytest.approx([52.5, 100.0, 62.5])
    # occupied and more than 1 K below 21 / 18 °C: classrooms at 19.0 (unoccupied) do not count
    assert k.zone_underheated_h.tolist() == [1.0, 0.5]
    d = k.as_dict()
    assert d["segments"]["lindenweg"]["energy_kwh"] == pytest.approx(0.05)
    assert d["buildings"]["school"]["heating_kwh"] == 35.0
    assert d["zones"]["school.gym"]["underheated_h"] == 0.5


def test_a_segment_never_lit_has_no_mean_level(four_steps: SimulationResult) -> None:
    dark = replace(made(four_steps), dim_pct=np.zeros((4, 3)))
    k = kpis(dark)
    assert np.isnan(k.segment_mean_lit_dim_pct).all()
    assert k.as_dict()["segments"]["bahnhofstr"]["mean_lit_dim_pct"] is None
    # priced with the run's own tariff by default: the demo's
    assert k.price_eur_per_kwh == 0.32 and k.co2_kg_per_kwh == 0.38


def test_savings_are_baseline_minus_policy(four_steps: SimulationResult) -> None:
    base = made(four_steps)
    policy = replace(
        base,
        policy_name="Policy",
        segment_power_w=base.segment_power_w / 2,
        building_heating_kwh=base.building_heating_kwh * 0.8,
    )
    s = savings(kpis(policy), kpis(replace(base, policy_name="FullPower")))
    assert (s.policy_name, s.baseline_name) == ("Policy", "FullPower")
    assert s.lighting_kwh == pytest.approx(1.15) and s.lighting_pct == pytest.approx(50.0)
    assert s.heating_kwh == pytest.approx(7.0) and s.heating_pct == pytest.approx(20.0)
    assert s.energy_pct == pytest.approx(100 * 8.15 / 37.3)
    assert s.cost_eur == pytest.approx(8.15 * 0.32) and s.co2_kg == pytest.approx(8.15 * 0.38)
    assert s.segment_pct.tolist() == pytest.approx([50.0, 50.0, 50.0])
    # a baseline that used nothing: no percentage
    nothing = replace(base, segment_power_w=np.zeros((4, 3)), building_heating_kwh=np.zeros((4, 1)))
    s0 = savings(kpis(policy), kpis(nothing))
    assert np.isnan(s0.lighting_pct) and np.isnan(s0.segment_pct).all()
    assert s0.lighting_kwh == pytest.approx(-1.15)
    assert s0.as_dict()["lighting_pct"] is None


def test_only_like_runs_compare(four_steps: SimulationResult) -> None:
    k = kpis(four_steps)
    with pytest.raises(KpiMismatch, match="last"):
        savings(k, replace(k, hours=3.0))
    with pytest.raises(KpiMismatch, match="different sites"):
        savings(k, replace(k, segment_ids=("a", "b", "c")))


def test_a_winter_week_against_both_baselines(demo_site: SiteConfig) -> None:
    start = datetime(2026, 1, 12, tzinfo=ZoneInfo("Europe/Berlin"))  # Monday
    end = start + timedelta(days=7)
    params = params_for_step(demo_site.policy, 900.0)
    policy = run(demo_site, site_policy(demo_site, 900.0), start=start, end=end)
    layout = policy.layout
    full = run(demo_site, FullPower(layout, params), start=start, end=end, layout=layout)
    fixed = run(demo_site, FixedSchedule(layout, params), start=start, end=end, layout=layout)
    kp, kf, ks = kpis(policy), kpis(full), kpis(fixed)
    # the lights: full power > the night-time reduction, and > traffic-adaptive, on every segment
    assert (kf.segment_energy_kwh > ks.segment_energy_kwh).all()
    assert (kf.segment_energy_kwh > kp.segment_energy_kwh).all()
    # the fixed reduction dims the main road at night whatever its traffic and under-lights it;
    # the adaptive policy keeps the main road's class (its margin costs some energy there) and
    # uses less in total
    assert ks.segment_violation_intervals[0] > 0 == kp.segment_violation_intervals[0]
    assert kp.segment_violation_intervals.sum() < ks.segment_violation_intervals.sum()
    assert kp.segment_energy_kwh.sum() < ks.segment_energy_kwh.sum()
    # all three light the same dark hours
    np.testing.assert_array_equal(kp.segment_lit_h, kf.segment_lit_h)
    assert (kf.segment_dimmed_h == 0).all() and (kp.segment_dimmed_h > 0).all()
    # heating: setback saves against a constant comfort setpoint; the schedule heats alike
    assert kp.heating_kwh < kf.heating_kwh
    assert kp.heating_kwh == pytest.approx(ks.heating_kwh, rel=1e-9)
    vs_full = savings(kp, kf)
    assert 20 < vs_full.lighting_pct < 80 and vs_full.heating_pct > 5
    assert vs_full.cost_eur == pytest.approx(vs_full.energy_kwh * 0.32)
    # the school is warm enough whenever occupied, with and without setback, within 1 K... or
    # nearly: the morning warm-up after a setback is the price, and it is counted
    assert (kf.zone_underheated_h <= kp.zone_underheated_h).all()


def test_violations_are_dark_steps_below_the_class_the_counted_traffic_needed(
    four_steps: SimulationResult,
) -> None:
    # bahnhofstr bands 0/150/400/800 veh/h at 30/50/75/100 %; elberfelder 0/100/300 at 30/60/100;
    # lindenweg 0/60/200 at 20/40/70. The last step is in daylight: nothing is required then.
    r = replace(
        made(four_steps),
        segment_flow_veh_h=np.array(
            [[900, 400, 250], [500, 50, 30], [100, 50, 100], [900, 900, 900.0]]
        ),
        sun_elevation_deg=np.array([-20, -20, -20, 10.0]),
    )
    k = kpis(r)
    # judged by the class each band requires (design M2/M3/P3 at 100 %): step 0: 100/100/80 meet
    # M2, M3, P3 → ok; step 1: 50 % delivers M3 (needs 50 %), 0 < 25 % (M5), 20 ok for P5;
    # step 2: 30 ok for M5, 0 < 25 %, 80 ≥ 33.4 % (P4) ok; step 3: daylight
    assert k.segment_violation_intervals.tolist() == [0, 2, 0]
    assert k.segment_lit_intervals.tolist() == [4, 1, 4]
    d = k.as_dict()
    assert (d["violation_intervals"], d["lit_intervals"]) == (2, 9)
    assert d["segments"]["elberfelder"]["violation_intervals"] == 2
