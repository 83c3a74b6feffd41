"""The pure numpy plant: lamps, energy, zones, counters — no clock, no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from laterne.models.layout import SiteLayout
from laterne.models.site import SiteConfig
from laterne.simulations.plant import (
    HEATING_MAX_W_M2,
    PlantParams,
    PlantState,
    building_heating_kw,
    initial_state,
    make_params,
    plant_outdoor_temp_c,
    plant_step,
    segment_power_w,
    zone_heating_w,
)
from laterne.simulations.weather import Weather, load_weather

T0 = datetime(2025, 1, 15, 5, 0, tzinfo=UTC)  # a Wednesday, 06:00 in Hagen


@pytest.fixture
def params(demo_site: SiteConfig, demo_layout: SiteLayout) -> PlantParams:
    return make_params(demo_site, demo_layout, poisson=False)


def constant_weather(temp_c: float) -> Weather:
    w = load_weather()
    return replace(w, dry_bulb_c=np.full_like(w.dry_bulb_c, temp_c))


def run(
    layout: SiteLayout,
    params: PlantParams,
    state: PlantState,
    dim: np.ndarray,
    sp: np.ndarray,
    step_s: float,
    n: int,
    seed: int = 0,
) -> PlantState:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        state = plant_step(
            layout, params, state, dim, sp, state.ts + timedelta(seconds=step_s), rng
        )
    return state


# ---------------------------------------------------------------------------------- lamps


def test_lamp_power_follows_the_led_driver_curve(demo_layout: SiteLayout) -> None:
    segs = demo_layout.segments
    dims = np.array([0.0, 1e-9, 50.0, 100.0, 120.0, -5.0])
    f = [segs.luminaire_power_w(np.full(3, d))[0] / segs.rated_power_w[0] for d in dims]
    np.testing.assert_allclose(f, [0.0, 0.08, 0.54, 1.0, 1.0, 0.0])  # demo: standby_share 0.08


def test_lamps_out_draw_nothing(demo_layout: SiteLayout) -> None:
    full = segment_power_w(demo_layout, np.full(3, 60.0))
    some_out = segment_power_w(demo_layout, np.full(3, 60.0), np.array([21.0, 0.0, 24.0]))
    np.testing.assert_allclose(some_out, full * [0.5, 1.0, 0.0])


def test_segment_power_is_zero_when_off_and_rated_at_full(demo_layout: SiteLayout) -> None:
    rated = demo_layout.segments.luminaires * demo_layout.segments.rated_power_w
    np.testing.assert_array_equal(segment_power_w(demo_layout, np.zeros(3)), 0.0)
    np.testing.assert_allclose(segment_power_w(demo_layout, np.full(3, 100.0)), rated)
    np.testing.assert_allclose(rated, [42 * 90, 30 * 60, 24 * 35])
    p = segment_power_w(demo_layout, np.array([20.0, 40.0, 60.0]))
    np.testing.assert_allclose(p / rated, [0.08 + 0.92 * 0.2, 0.08 + 0.92 * 0.4, 0.08 + 0.92 * 0.6])


def test_energy_integrates_power_exactly(demo_layout: SiteLayout, params: PlantParams) -> None:
    dim = np.array([60.0, 30.0, 0.0])
    sp = demo_layout.zones.default_c
    s0 = initial_state(demo_layout, T0)
    one = plant_step(
        demo_layout, params, s0, dim, sp, T0 + timedelta(hours=2.5), np.random.default_rng(0)
    )
    many = run(demo_layout, params, s0, dim, sp, step_s=90.0, n=100)
    expected_wh = segment_power_w(demo_layout, dim) * 2.5
    np.testing.assert_allclose(one.segment_energy_wh, expected_wh, rtol=1e-12)
    np.testing.assert_allclose(many.segment_energy_wh, expected_wh, rtol=1e-12)
    assert one.segment_energy_wh[2] == 0.0
    np.testing.assert_array_equal(one.dim_pct, dim)


# ---------------------------------------------------------------------------------- zones


def test_zone_warms_towards_setpoint(demo_site: SiteConfig, demo_layout: SiteLayout) -> None:
    params = make_params(demo_site, demo_layout, weather=constant_weather(0.0), poisson=False)
    cold = initial_state(demo_layout, T0, zone_temp_c=np.array([12.0, 12.0]))
    sp = np.array([21.0, 18.0])
    # heating starts at full power: 100 W/m² × area
    np.testing.assert_allclose(
        zone_heating_w(params, cold.zone_temp_c, sp), HEATING_MAX_W_M2 * demo_layout.zones.area_m2
    )
    # full power warms 12 °C by ~1.7 K/h, then the thermostat settles (C / K ≈ 25 min)
    warm = run(demo_layout, params, cold, np.zeros(3), sp, step_s=600.0, n=72)  # 12 h
    assert np.all(warm.zone_temp_c > sp - 1.0)
    assert np.all(warm.zone_temp_c < sp)  # a proportional thermostat keeps a small droop
    # steady state: UA (T - T_out) = K (sp - T)  ->  droop = 2.5 (T - 0) / 100
    droop = 2.5 * warm.zone_temp_c / 100.0
    np.testing.assert_allclose(sp - warm.zone_temp_c, droop, atol=0.02)
    assert warm.building_heating_energy_kwh[0] > 0
    kw = building_heating_kw(demo_layout, params, warm)
    expected_kw = (2.5 * demo_layout.zones.area_m2 * warm.zone_temp_c).sum() / 1e3
    assert kw[0] == pytest.approx(expected_kw, rel=0.02)


def test_zone_cools_towards_outdoor_when_setpoint_is_low(
    demo_site: SiteConfig, demo_layout: SiteLayout
) -> None:
    params = make_params(demo_site, demo_layout, weather=constant_weather(10.0), poisson=False)
    s0 = initial_state(demo_layout, T0, zone_temp_c=np.array([20.0, 20.0]))
    sp = np.array([8.0, 8.0])
    s1 = run(demo_layout, params, s0, np.zeros(3), sp, step_s=3600.0, n=24)
    # no heating at all; exponential decay with tau = C / UA = 150e3 / 2.5 s
    assert s1.building_heating_energy_kwh[0] == 0.0
    tau_s = 150e3 / 2.5
    expected = 10.0 + 10.0 * np.exp(-24 * 3600 / tau_s)
    np.testing.assert_allclose(s1.zone_temp_c, expected, atol=0.02)
    assert building_heating_kw(demo_layout, params, s1)[0] == 0.0


def test_large_steps_are_stable_and_agree_with_small_steps(
    demo_layout: SiteLayout, params: PlantParams
) -> None:
    s0 = initial_state(demo_layout, T0, zone_temp_c=np.array([10.0, 25.0]))
    sp = np.array([21.0, 16.0])
    hourly = run(demo_layout, params, s0, np.full(3, 50.0), sp, step_s=3600.0, n=48)
    minutely = run(demo_layout, params, s0, np.full(3, 50.0), sp, step_s=60.0, n=48 * 60)
    daily = run(demo_layout, params, s0, np.full(3, 50.0), sp, step_s=86_400.0, n=2)
    for s in (hourly, daily):
        assert hourly.ts == minutely.ts == daily.ts
        np.testing.assert_allclose(s.zone_temp_c, minutely.zone_temp_c, atol=1e-6)
        np.testing.assert_allclose(
            s.building_heating_energy_kwh, minutely.building_heating_energy_kwh, rtol=1e-6
        )
        np.testing.assert_allclose(s.segment_energy_wh, minutely.segment_energy_wh, rtol=1e-9)
        np.testing.assert_allclose(s.counter_veh, minutely.counter_veh, rtol=1e-9)
    assert np.all((hourly.zone_temp_c > 0) & (hourly.zone_temp_c < 30))


def test_outdoor_temperature_readout_comes_from_the_weather_year(
    demo_layout: SiteLayout, params: PlantParams
) -> None:
    s = initial_state(demo_layout, datetime(2025, 1, 1, 0, tzinfo=UTC))  # 01:00 standard time
    assert plant_outdoor_temp_c(params, s) == params.weather.dry_bulb_c[0]


# ------------------------------------------------------------------------------- counters


def test_channel_peak_follows_the_road_type_it_feeds(params: PlantParams) -> None:
    # counter-north feeds the main road, east.lane1 the collector, east.lane2 the residential
    np.testing.assert_array_equal(params.channel_peak_flow_veh_h, [1200.0, 1200.0, 500.0, 120.0])


def test_channel_feeding_two_roads_takes_the_larger_peak(demo_site: SiteConfig) -> None:
    segs = list(demo_site.segments)
    both = [segs[1].counters[0], segs[2].counters[0]]  # east.lane1 and east.lane2
    segs[1] = segs[1].model_copy(update={"counters": both})  # collector now counts lane2 too
    site = demo_site.model_copy(update={"segments": segs})
    layout = SiteLayout.from_config(site)
    peaks = make_params(site, layout).channel_peak_flow_veh_h
    np.testing.assert_array_equal(peaks, [1200.0, 1200.0, 500.0, 500.0])


def test_counters_are_cumulative_floats_that_never_wrap(
    demo_site: SiteConfig, demo_layout: SiteLayout
) -> None:
    params = make_params(demo_site, demo_layout, poisson=True)
    offset = 2.0**32 - 100  # the residential lane adds ~150 vehicles in the 3 h
    s0 = initial_state(demo_layout, T0, counter_offset_veh=offset)
    sp, dim = demo_layout.zones.default_c, np.full(3, 100.0)
    rng = np.random.default_rng(7)
    s = s0
    history = [s.counter_veh]
    for _ in range(12):  # 06:00 to 09:00 local in 15-minute steps
        s = plant_step(demo_layout, params, s, dim, sp, s.ts + timedelta(minutes=15), rng)
        history.append(s.counter_veh)
    counts = np.array(history)
    assert np.all(np.diff(counts, axis=0) >= 0)
    assert np.all(counts[-1] > 2.0**32)  # passed 2^32 without wrapping
    assert np.all(counts == np.round(counts))  # Poisson draws are whole vehicles
    # morning rush on a main road: on the order of a thousand vehicles per lane in 3 h
    added = counts[-1] - offset
    assert 1500 < added[0] < 3500
    assert added[2] < added[0]


def test_poisson_counts_average_to_the_expectation(
    demo_site: SiteConfig, demo_layout: SiteLayout
) -> None:
    s0 = initial_state(demo_layout, T0)
    sp, dim = demo_layout.zones.default_c, np.full(3, 100.0)
    expect = make_params(demo_site, demo_layout, poisson=False)
    drawn = make_params(demo_site, demo_layout, poisson=True)
    e = run(demo_layout, expect, s0, dim, sp, step_s=60.0, n=600)
    d = run(demo_layout, drawn, s0, dim, sp, step_s=60.0, n=600, seed=3)
    np.testing.assert_allclose(d.counter_veh, e.counter_veh, rtol=0.1)
    again = run(demo_layout, drawn, s0, dim, sp, step_s=60.0, n=600, seed=3)
    np.testing.assert_array_equal(again.counter_veh, d.counter_veh)  # seeded: reproducible


def test_night_traffic_is_far_below_day_traffic(
    demo_layout: SiteLayout, params: PlantParams
) -> None:
    sp, dim = demo_layout.zones.default_c, np.full(3, 100.0)
    night = initial_state(demo_layout, datetime(2025, 1, 15, 2, tzinfo=UTC))  # 03:00 local
    day = initial_state(demo_layout, datetime(2025, 1, 15, 7, tzinfo=UTC))  # 08:00 local
    n1 = run(demo_layout, params, night, dim, sp, step_s=3600.0, n=1).counter_veh
    d1 = run(demo_layout, params, day, dim, sp, step_s=3600.0, n=1).counter_veh
    assert np.all(n1 < 0.2 * d1)


# ---------------------------------------------------------------------------------- input


def test_bad_input_raises_and_changes_nothing(demo_layout: SiteLayout, params: PlantParams) -> None:
    s0 = initial_state(demo_layout, T0)
    rng = np.random.default_rng(0)
    sp, dim = demo_layout.zones.default_c, np.full(3, 100.0)
    with pytest.raises(ValueError, match="before"):
        plant_step(demo_layout, params, s0, dim, sp, T0 - timedelta(seconds=1), rng)
    with pytest.raises(ValueError, match="shape"):
        plant_step(demo_layout, params, s0, np.ones(2), sp, T0 + timedelta(seconds=1), rng)
    with pytest.raises(ValueError, match="finite"):
        plant_step(demo_layout, params, s0, dim, np.array([np.nan, 1.0]), T0, rng)
    with pytest.raises(ValueError, match="aware"):
        plant_step(demo_layout, params, s0, dim, sp, datetime(2025, 1, 1), rng)
    assert s0.ts == T0 and np.all(s0.dim_pct == demo_layout.segments.failsafe_dim_pct)


def test_initial_state_starts_at_failsafe_and_default(demo_layout: SiteLayout) -> None:
    s = initial_state(demo_layout, T0, counter_offset_veh=42.0)
    np.testing.assert_array_equal(s.dim_pct, [100.0, 100.0, 80.0])
    np.testing.assert_array_equal(s.setpoint_c, [19.0, 17.0])
    np.testing.assert_array_equal(s.counter_veh, 42.0)
    assert s.segment_energy_wh.shape == (3,) and s.building_heating_energy_kwh.shape == (1,)


def test_zero_length_step_only_records_the_commands(
    demo_layout: SiteLayout, params: PlantParams
) -> None:
    s0 = initial_state(demo_layout, T0)
    s1 = plant_step(
        demo_layout, params, s0, np.zeros(3), np.array([20.0, 20.0]), T0, np.random.default_rng(0)
    )
    assert s1.ts == T0
    np.testing.assert_array_equal(s1.counter_veh, s0.counter_veh)
    np.testing.assert_array_equal(s1.dim_pct, 0.0)


def test_a_step_across_the_daylight_saving_change_matches_small_steps(
    demo_layout: SiteLayout, params: PlantParams
) -> None:
    # clocks in Hagen jump from 02:00 to 03:00 local at 2025-03-30 01:00 UTC
    s0 = initial_state(demo_layout, datetime(2025, 3, 29, 22, 0, tzinfo=UTC))
    sp, dim = demo_layout.zones.default_c, np.full(3, 100.0)
    big = run(demo_layout, params, s0, dim, sp, step_s=6 * 3600.0, n=1)
    small = run(demo_layout, params, s0, dim, sp, step_s=600.0, n=36)
    np.testing.assert_allclose(big.counter_veh, small.counter_veh, rtol=1e-9)
    np.testing.assert_allclose(big.zone_temp_c, small.zone_temp_c, atol=1e-9)
