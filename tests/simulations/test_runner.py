"""The in-process runner: the devices' encodings, the plant's arithmetic, and what a run shows."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from laterne.controller.baselines import FullPower
from laterne.controller.policy import Policy
from laterne.drivers.field.modbus_codec import decode as driver_decode
from laterne.drivers.field.modbus_codec import encode as driver_encode
from laterne.models.layout import SiteLayout, occupied_now
from laterne.models.site import PointSpec, SiteConfig
from laterne.models.values import Override, Reason
from laterne.simulations import runner as runner_module
from laterne.simulations.emulator import (
    SiteEmulator,
    _bindings,
    decode_registers,
    encode_registers,
)
from laterne.simulations.generate import generate_district
from laterne.simulations.plant import initial_state, make_params, plant_step
from laterne.simulations.readout import PointReadout, ReadoutError
from laterne.simulations.runner import (
    EMULATOR_COUNTER_OFFSET_VEH,
    SimulationError,
    params_for_step,
    run,
    site_policy,
)

BERLIN = ZoneInfo("Europe/Berlin")


def spec(type_: str, **kw: object) -> PointSpec:
    return PointSpec.model_validate({"table": "input", "address": 0, "type": type_, **kw})


# ------------------------------------------------------------------ the devices' encodings

READ_SPECS = [
    spec("u32", kind="counter", unit="veh"),
    spec("u16", kind="counter", scale=10.0),
    spec("u32", scale=0.1, word_order="little"),
    spec("i16", scale=0.1, offset=-20.0, unit="degC", min=-10, max=50),
    spec("u16"),
    spec("f32", unit="degC"),
    spec("f64", unit="°C"),
    spec("u16", bit=3),
]


def test_what_a_point_shows_is_the_emulator_encoding_then_the_driver_decoding() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [
            rng.uniform(-30, 60, 300),
            2.0**32 + rng.uniform(-9000, 9000, 100),  # counters across their wrap
            np.array([0.0, 0.05, 0.15, 0.25, 2.5, 3.5, -12.35, 21.45, 65535.4, 70000.0]),
        ]
    )
    for s in READ_SPECS:
        readout = PointReadout.of_specs([s], "temp_c" if s.unit in ("degC", "°C") else "veh")
        seen, ok = readout.seen(values[:, None])
        lo, hi = s.bounds
        for v, got, good in zip(values, seen[:, 0], ok[:, 0], strict=True):
            want = driver_decode(encode_registers(float(v), s), s)
            assert good == (lo <= want <= hi), (s, v)
            if good:
                assert got == want, (s.type, s.scale, v)  # bit for bit
            else:
                assert np.isnan(got)


def test_a_command_is_held_as_the_driver_writes_and_the_emulator_reads_it() -> None:
    dim = spec(
        "u16", table="holding", scale=0.1, unit="%", kind="setpoint", writable=True, min=0, max=100
    )
    sp32 = spec("f32", table="holding", unit="degC", kind="setpoint", writable=True, min=10, max=26)
    sp64 = spec("f64", table="holding", unit="degC", kind="setpoint", writable=True, min=10, max=26)
    for s, values in [
        (dim, np.concatenate([np.arange(0, 100.001, 0.05), [42.35, 42.45, 0.04, 99.96]])),
        (sp32, np.linspace(10, 26, 301)),
        (sp64, np.linspace(10, 26, 301)),
    ]:
        readout = PointReadout.of_specs([s], "pct" if s.unit == "%" else "temp_c")
        held = readout.held(values[:, None])[:, 0]
        lo, hi = s.bounds
        want = [min(max(decode_registers(driver_encode(float(v), s), s), lo), hi) for v in values]
        assert held.tolist() == want
    # a controller in 0.1 % steps holds 42.35 % as 42.4 % (half away from zero)
    assert PointReadout.of_specs([dim], "pct").held(np.array([42.35]))[0] == pytest.approx(42.4)


def test_units_and_missing_points(demo_site: SiteConfig) -> None:
    with pytest.raises(ReadoutError, match="unit 'K'"):
        PointReadout.of_specs([spec("f64", unit="K")], "temp_c", ["b.t"])
    readout = PointReadout.of_specs([None, spec("f64")], "temp_c")
    seen, ok = readout.seen(np.array([20.0, 20.0]))
    assert ok.tolist() == [False, True] and np.isnan(seen[0])


@pytest.mark.parametrize("which", ["demo", "district"])
def test_the_runner_reads_the_points_the_emulator_serves(demo_site: SiteConfig, which: str) -> None:
    site = demo_site if which == "demo" else generate_district(n_segments=20, n_counters=5)
    layout = SiteLayout.from_config(site)
    bindings = _bindings(site, layout)
    for refs, source, quantity in [
        (layout.channels.refs, "counter", "veh"),
        (layout.zones.temperature, "zone_temp", "temp_c"),
        (layout.buildings.outdoor, "outdoor_temp", "temp_c"),
        (layout.segments.controller, "dim", "pct"),
        (layout.zones.setpoint, "setpoint", "temp_c"),
    ]:
        readout = PointReadout.of(site, refs, quantity)
        for i, ref in enumerate(refs):
            assert ref is not None
            b = bindings[(ref.device, ref.point)]
            assert (b.source, b.index, b.factor) == (source, i, readout.factor[i])
    default = inspect.signature(SiteEmulator).parameters["counter_offset_veh"].default
    assert default == EMULATOR_COUNTER_OFFSET_VEH


# ------------------------------------------------------------------ the plant's arithmetic


def _replay(site: SiteConfig, result: runner_module.SimulationResult, seed: int) -> None:
    """Step the plant with plant_step (as the emulator does) through the run's held commands
    and compare every step with the runner's plant, exactly."""
    layout = result.layout
    params = make_params(site, layout)
    dims = PointReadout.of(site, layout.segments.controller, "pct")
    sps = PointReadout.of(site, layout.zones.setpoint, "temp_c")
    state = initial_state(layout, result.start, counter_offset_veh=EMULATOR_COUNTER_OFFSET_VEH)
    rng = np.random.default_rng(seed)
    step = timedelta(seconds=result.step_s)
    for k in range(result.n_steps):
        assert np.array_equal(state.zone_temp_c, result.zone_temp_c[k]), k
        assert state.ts.timestamp() == result.ts_s[k]
        nxt = plant_step(
            layout, params, state, dims.held(result.dim_pct[k]), sps.held(result.setpoint_c[k]),
            state.ts + step, rng,
        )  # fmt: skip
        assert np.array_equal(
            nxt.building_heating_energy_kwh,
            state.building_heating_energy_kwh + result.building_heating_kwh[k],
        )
        assert np.array_equal(
            nxt.segment_energy_wh, state.segment_energy_wh + result.segment_energy_wh[k]
        )
        state = nxt
    final = result.final_plant
    assert final.ts == state.ts
    for field in (
        "counter_veh", "segment_energy_wh", "zone_temp_c", "building_heating_energy_kwh",
        "dim_pct", "setpoint_c",
    ):  # fmt: skip
        assert np.array_equal(getattr(final, field), getattr(state, field)), field


def test_the_runners_plant_is_plant_step_to_the_bit_across_a_daylight_saving_change(
    demo_site: SiteConfig, demo_layout: SiteLayout
) -> None:
    start = datetime(2026, 3, 28, 12, tzinfo=UTC)  # Europe/Berlin springs forward on the 29th
    result = run(
        demo_site, site_policy(demo_site, 900.0), start=start, end=start + timedelta(days=2),
        seed=3,
    )  # fmt: skip
    assert result.n_steps == 192
    _replay(demo_site, result, seed=3)
    # the recorded occupancy is the schedule's, in local time, on both sides of the change
    for k, t in enumerate(result.ts_s):
        now = datetime.fromtimestamp(t, UTC)
        assert np.array_equal(result.zone_occupied[k], occupied_now(demo_layout, now)), now


def test_chunking_changes_nothing(demo_site: SiteConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    start = datetime(2026, 10, 24, 15, tzinfo=UTC)  # and back across the autumn change
    kw = {"start": start, "end": start + timedelta(days=2), "step_s": 600.0, "seed": 9}
    whole = run(demo_site, site_policy(demo_site, 600.0), **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(runner_module, "_CHUNK_ELEMENTS", 7 * 10 * 4)  # 7 steps per chunk
    pieces = run(demo_site, site_policy(demo_site, 600.0), **kw)  # type: ignore[arg-type]
    for name in (
        "dim_pct",
        "setpoint_c",
        "zone_temp_c",
        "segment_power_w",
        "building_heating_kwh",
        "outdoor_temp_c",
        "zone_occupied",
    ):
        assert np.array_equal(getattr(whole, name), getattr(pieces, name)), name
    assert np.array_equal(whole.final_plant.counter_veh, pieces.final_plant.counter_veh)
    _replay(demo_site, pieces, seed=9)


# ------------------------------------------------------------------ what a run shows


@pytest.fixture(scope="module")
def winter_week(demo_site: SiteConfig) -> runner_module.SimulationResult:
    start = datetime(2026, 11, 23, tzinfo=BERLIN)  # Monday
    return run(demo_site, site_policy(demo_site, 900.0), start=start, end=start + timedelta(days=7))


def test_a_winter_week_of_the_traffic_policy(winter_week: runner_module.SimulationResult) -> None:
    r = winter_week
    lay = r.layout
    assert r.n_steps == 7 * 96 and r.policy_name == "Policy"
    dark = r.sun_elevation_deg < r.params.daylight_elevation_deg
    day = ~dark
    assert (r.dim_pct[day] == 0).all() and (r.dim_reason[day] == Reason.DAYLIGHT).all()
    assert (r.dim_pct[dark] > 0).all()
    # traffic decides at night, never the fail-safe (the counters wrap early in the run), but
    # for the first step, which has no rate yet
    assert (r.dim_reason[0] == Reason.FAILSAFE).all()
    # (or the residential street's curfew, 01:00-05:00, that lowers it to its class's level)
    decided = r.dim_reason[1:][dark[1:]]
    assert np.isin(decided, [Reason.TRAFFIC, Reason.CURFEW]).all()
    assert (decided[:, :2] == Reason.TRAFFIC).all() and (decided[:, 2] == Reason.CURFEW).any()
    # the busy main road brighter than the residential street; dimmer at 03:00 than at 18:00
    assert r.dim_pct[dark, 0].mean() > r.dim_pct[dark, 2].mean() + 10
    hours = np.array([datetime.fromtimestamp(t, BERLIN).hour for t in r.ts_s])
    assert r.dim_pct[hours == 3, 0].mean() < r.dim_pct[hours == 18, 0].mean()
    # power is the controller's held level through the LED curve; energy is power × time
    lit = r.dim_pct[:, 0] > 0
    assert (r.segment_power_w[~lit, 0] == 0).all()
    expected = 42 * 90 * (0.08 + 0.92 * r.dim_pct[lit, 0] / 100)
    np.testing.assert_allclose(r.segment_power_w[lit, 0], expected, rtol=1e-3)
    np.testing.assert_allclose(r.segment_energy_wh.sum(axis=0), r.final_plant.segment_energy_wh)
    # heating: setback at night, comfort in school hours, the building follows and heats
    assert set(np.unique(r.setpoint_reason)) == {Reason.OCCUPIED, Reason.SETBACK}
    assert (
        r.setpoint_c[r.zone_occupied]
        == np.tile(lay.zones.occupied_c, (r.n_steps, 1))[r.zone_occupied]
    ).all()
    assert r.zone_temp_c[hours == 5, 0].mean() < r.zone_temp_c[hours == 12, 0].mean()
    assert r.building_heating_kwh.sum() > 0 and (r.building_heating_kwh >= 0).all()
    assert r.hours == 168.0 and r.end == r.start + timedelta(days=7)


def test_the_baseline_uses_more_light_on_the_same_plant(
    demo_site: SiteConfig, winter_week: runner_module.SimulationResult
) -> None:
    params = params_for_step(demo_site.policy, 900.0)
    layout = winter_week.layout
    full = run(demo_site, FullPower(layout, params), start=winter_week.start,
               end=winter_week.end, layout=layout)  # fmt: skip
    # the same weather and sun, the same instants
    assert np.array_equal(full.ts_s, winter_week.ts_s)
    assert np.array_equal(full.outdoor_temp_c, winter_week.outdoor_temp_c)
    assert full.segment_energy_wh.sum() > 1.3 * winter_week.segment_energy_wh.sum()
    assert full.building_heating_kwh.sum() > winter_week.building_heating_kwh.sum()


def test_overrides_apply_while_in_force(demo_site: SiteConfig) -> None:
    start = datetime(2026, 11, 25, 20, tzinfo=BERLIN)
    o = Override("segment", "lindenweg", 100.0, start + timedelta(hours=1),
                 start + timedelta(hours=2), reason="event")  # fmt: skip
    r = run(demo_site, site_policy(demo_site, 300.0), start=start,
            end=start + timedelta(hours=3), step_s=300.0, overrides=[o])  # fmt: skip
    inside = (r.ts_s >= o.start.timestamp()) & (r.ts_s < o.end.timestamp())
    assert inside.sum() == 12
    assert (r.dim_pct[inside, 2] == 100).all() and (
        r.dim_reason[inside, 2] == Reason.OVERRIDE
    ).all()
    assert (r.dim_pct[~inside, 2] < 100).all()


def test_params_for_a_step() -> None:
    from laterne.models.site import PolicyParams

    p = params_for_step(PolicyParams(cycle_s=10, stale_after_s=60, max_dim_step_pct=2), 300)
    assert (p.cycle_s, p.stale_after_s, p.max_dim_step_pct) == (300, 600, 60)
    q = params_for_step(PolicyParams(stale_after_s=3600), 300)
    assert q.stale_after_s == 3600 and q.max_dim_step_pct == 100


def test_a_run_from_a_layout_alone_has_ideal_sensors(
    demo_site: SiteConfig, demo_layout: SiteLayout
) -> None:
    start = datetime(2026, 11, 25, 21, tzinfo=UTC)
    params = params_for_step(demo_site.policy, 900.0)
    plant = make_params(demo_site, demo_layout)
    r = run(demo_layout, Policy(demo_layout, params), start=start, end=start + timedelta(hours=4),
            params=params, plant=plant, counter_offset_veh=0.0)  # fmt: skip
    assert r.n_steps == 16 and (r.dim_reason[1:] == Reason.TRAFFIC).all()
    with pytest.raises(SimulationError, match="plant and params"):
        run(demo_layout, Policy(demo_layout, params), start=start, end=start + timedelta(hours=1))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"start": datetime(2026, 1, 1), "end": datetime(2026, 1, 2)}, "timezone-aware"),
        ({"end": datetime(2026, 1, 1, 0, 10, tzinfo=UTC)}, "no whole step"),
        ({"step_s": 0.0}, "positive"),
        ({"step_s": 1e-7}, "microseconds"),
    ],
)
def test_runs_that_cannot_be_made(demo_site: SiteConfig, kw: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "start": datetime(2026, 1, 1, tzinfo=UTC),
        "end": datetime(2026, 1, 2, tzinfo=UTC),
        **kw,
    }
    with pytest.raises(SimulationError, match=match):
        run(demo_site, site_policy(demo_site, 900.0), **args)  # type: ignore[arg-type]
