"""Benchmark: a simulated year in process, beside a bare numpy floor. Prints JSON.

Two sites: the demo site and a generated district (by default 20,000 luminaires in 2,000
segments, 500 two-lane counters, 500 buildings of 2 zones), each for ``--days`` days at
``--step-s`` steps (a year at 15 minutes: 35,040 steps) with the site's traffic policy through
:func:`laterne.simulations.runner.run` — the whole decision (policy, safety filter,
post-condition) every step, the plant's arithmetic, the devices' encodings. ``decide_s`` is the
time inside :func:`~laterne.controller.cycle.decide` (measured by wrapping it), the rest is the
runner's own. With ``--baselines`` the demo site runs all five lighting scenarios of ``laterne
simulate`` (:func:`laterne.simulations.scenarios.iter_scenarios`: adaptive, full_power,
half_night, best_static, oracle) and prints each one's time (``scenario_s``; best_static's
includes building its timetable from the adaptive run's traffic); ``--district-baselines``
does the same for the district (memory: several (steps × segments) arrays at once).

The floor is the same number of steps as bare array arithmetic: the runner's precomputation
(ephemeris, traffic, Poisson counts, weather, occupancy) and then, chunk by chunk, every
per-step quantity of the plant and of the policy — rates from the counts, a smoothing blend,
the sum into segments, the band lookup, daylight, the bounds, the controllers' 0.1 % grid, the
LED power, the setpoints, the zones' Euler sub-steps, the heating per building — as operations
on (steps × elements) arrays, each once per chunk, with no Python per step and no decision
logic (no hysteresis, no safety precedence, no state): what the numbers alone cost. The ratio
``runner_s / floor_s`` is the price of deciding step by step through the same code as the live
shell.

Usage: python bench/simulate_year.py [--days 365] [--step-s 900] [--district-days 365]
                                     [--segments 2000] [--luminaires 20000] [--counters 500]
                                     [--buildings 500] [--zones 2] [--seed 1] [--baselines]
                                     [--district-baselines]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from laterne.controller import cycle
from laterne.controller.policy import Policy
from laterne.controller.sun import sun_elevation_series
from laterne.models.layout import SiteLayout
from laterne.models.site import SiteConfig, load_site
from laterne.simulations import runner as runner_module
from laterne.simulations.generate import generate_district
from laterne.simulations.kpis import kpis
from laterne.simulations.plant import make_params, segment_power_w
from laterne.simulations.runner import params_for_step, run
from laterne.simulations.scenarios import iter_scenarios
from laterne.simulations.weather import utc64

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 1, 1, tzinfo=UTC)


class _DecideTimer:
    """Wraps ``decide`` in the runner's namespace and adds up the time spent in it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._inner = cycle.decide

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def _timed_run(
    site: SiteConfig, layout: SiteLayout, policy: Any, days: float, step_s: float, seed: int
) -> tuple[float, float, Any]:
    timer = _DecideTimer()
    runner_module.decide = timer  # type: ignore[assignment]
    try:
        gc.collect()
        t0 = time.perf_counter()
        result = run(
            site, policy, start=START, end=START + timedelta(days=days), step_s=step_s,
            seed=seed, layout=layout,
        )  # fmt: skip
        elapsed = time.perf_counter() - t0
    finally:
        runner_module.decide = timer._inner
    return elapsed, timer.seconds, result


def numpy_floor(
    site: SiteConfig, layout: SiteLayout, days: float, step_s: float, seed: int
) -> tuple[float, float]:
    """(precompute seconds, total seconds) of the bare array pass (see the module's rule)."""
    t0 = time.perf_counter()
    plant = make_params(site, layout)
    readouts = runner_module._Readouts.of(site, layout)
    step_us = round(step_s * 1e6)
    n_steps = int(timedelta(days=days) // timedelta(microseconds=step_us))
    n_sub = max(1, math.ceil(step_s / plant.max_substep_s))
    h_s = step_s / n_sub
    start64 = utc64(START)
    ts_s = (np.arange(n_steps, dtype=np.int64) * step_us + start64.astype(np.int64)) / 1e6
    sun = sun_elevation_series(layout, ts_s)
    rng = np.random.default_rng(seed)
    counter0 = np.full(layout.n_channels, runner_module.EMULATOR_COUNTER_OFFSET_VEH)
    chunks = list(
        runner_module._chunks(
            layout, plant, readouts, start64, step_us, n_steps, n_sub, counter0, rng
        )
    )
    t_pre = time.perf_counter()

    par = params_for_step(site.policy, step_s)
    s_n, n_bld = layout.n_segments, len(layout.buildings.ids)

    def per_row_sum(values: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
        """(n, m) values summed by ``index`` (m,) into (n, size): one bincount."""
        rows = values.shape[0]
        flat = (np.arange(rows)[:, None] * size + index[None, :]).ravel()
        return np.bincount(flat, weights=values.ravel(), minlength=rows * size).reshape(rows, size)

    wrap = np.where(layout.channels.wrap > 0, layout.channels.wrap, np.inf)
    alpha = 1.0 - math.exp(-step_s / par.flow_window_s)
    prev_count = counter0
    prev_flow = np.zeros(layout.n_channels)
    temp0 = layout.zones.default_c
    total_kwh = 0.0
    for ch in chunks:
        n = len(ch.outdoor_temp_c)
        counts = ch.counter_veh
        delta = np.diff(np.vstack([prev_count[None, :], counts]), axis=0)
        rate = np.mod(delta, wrap) / step_s * 3600.0
        blended_prev = np.vstack([prev_flow[None, :], rate[:-1]])
        flow = blended_prev + alpha * (rate - blended_prev)
        chans, segs = layout.channels, layout.segments
        seg_flow = per_row_sum(flow[:, chans.pair_channel], chans.pair_segment, s_n)
        band = (segs.band_min_flow_veh_h[None, :, :] <= seg_flow[:, :, None]).sum(axis=2) - 1
        wish = np.take_along_axis(
            np.broadcast_to(layout.segments.band_dim_pct, (n, *layout.segments.band_dim_pct.shape)),
            np.maximum(band, 0)[:, :, None],
            axis=2,
        )[:, :, 0]
        dim = np.where(sun[ch.k0 : ch.k0 + n, None] > par.daylight_elevation_deg, 0.0, wish)
        dim = np.where(dim > 0, np.clip(dim, segs.min_dim_pct, segs.max_dim_pct), 0.0)
        held = readouts.controllers.held(dim)
        power_w = segment_power_w(layout, held)
        energy_wh = power_w * (step_s / 3600.0)
        sp = np.where(ch.occupied, layout.zones.occupied_c, layout.zones.setback_c)
        sp_held = readouts.setpoints.held(sp)
        temp = np.broadcast_to(temp0, sp.shape).copy()
        heat_j = np.zeros(sp.shape)
        for i in range(n_sub):
            q_w = np.minimum(
                np.maximum(plant.thermostat_gain_w_k * (sp_held - temp), 0.0),
                plant.zone_heating_max_w,
            )
            gain_w = plant.zone_ua_w_k * (ch.t_out_sub_c[:, i : i + 1] - temp) + q_w
            temp = temp + h_s * gain_w / plant.zone_capacity_j_k
            heat_j += q_w * h_s
        heat_kwh = per_row_sum(heat_j, layout.zones.building, n_bld) / 3.6e6
        total_kwh += float(energy_wh.sum()) / 1e3 + float(heat_kwh.sum())
        prev_count, prev_flow = counts[-1], flow[-1]
    t_end = time.perf_counter()
    assert total_kwh > 0
    return t_pre - t0, t_end - t0


def _scenario_timings(
    site: SiteConfig, layout: SiteLayout, params: Any, days: float, step_s: float, seed: int
) -> dict[str, dict[str, Any]]:
    """Each of the five scenarios: its time, the time in ``decide``, its lighting figures."""
    timer = _DecideTimer()
    runner_module.decide = timer  # type: ignore[assignment]
    out: dict[str, dict[str, Any]] = {}
    try:
        gc.collect()
        runs = iter_scenarios(
            site, layout, params, start=START, end=START + timedelta(days=days),
            step_s=step_s, seed=seed,
        )  # fmt: skip
        while True:
            t0, d0 = time.perf_counter(), timer.seconds
            try:
                name, result = next(runs)
            except StopIteration:
                break
            elapsed = time.perf_counter() - t0
            k = kpis(result)
            out[name] = {
                "s": round(elapsed, 2),
                "decide_s": round(timer.seconds - d0, 2),
                "lighting_kwh": round(k.lighting_kwh, 1),
                "violation_intervals": int(k.segment_violation_intervals.sum()),
            }
            del result, k
    finally:
        runner_module.decide = timer._inner
    return out


def _site_figures(
    label: str, site: SiteConfig, days: float, step_s: float, seed: int, baselines: bool
) -> dict[str, Any]:
    t0 = time.perf_counter()
    layout = SiteLayout.from_config(site)
    layout_s = time.perf_counter() - t0
    params = params_for_step(site.policy, step_s)
    elapsed, decide_s, result = _timed_run(site, layout, Policy(layout, params), days, step_s, seed)
    k = kpis(result)
    n = result.n_steps
    out: dict[str, Any] = {
        "site": label,
        "segments": layout.n_segments,
        "luminaires": int(layout.segments.luminaires.sum()),
        "channels": layout.n_channels,
        "zones": layout.n_zones,
        "buildings": len(layout.buildings.ids),
        "days": days,
        "step_s": step_s,
        "steps": n,
        "layout_s": round(layout_s, 3),
        "runner_s": round(elapsed, 2),
        "runner_steps_per_s": round(n / elapsed),
        "runner_us_per_step": round(elapsed / n * 1e6),
        "decide_s": round(decide_s, 2),
        "runner_rest_s": round(elapsed - decide_s, 2),
        "lighting_kwh": round(k.lighting_kwh, 1),
        "heating_kwh": round(k.heating_kwh, 1),
    }
    del result
    if baselines:
        out["scenarios"] = _scenario_timings(site, layout, params, days, step_s, seed)
        out["scenarios_s"] = round(sum(v["s"] for v in out["scenarios"].values()), 2)
    gc.collect()
    pre_s, floor_s = numpy_floor(site, layout, days, step_s, seed)
    out["floor_precompute_s"] = round(pre_s, 3)
    out["floor_s"] = round(floor_s, 3)
    out["floor_steps_per_s"] = round(n / floor_s)
    out["runner_over_floor"] = round(elapsed / floor_s, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=365.0, help="demo site [days]")
    ap.add_argument("--district-days", type=float, default=365.0)
    ap.add_argument("--step-s", type=float, default=900.0)
    ap.add_argument("--segments", type=int, default=2000)
    ap.add_argument("--luminaires", type=int, default=20_000)
    ap.add_argument("--counters", type=int, default=500)
    ap.add_argument("--buildings", type=int, default=500)
    ap.add_argument("--zones", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--baselines", action="store_true", help="also time the demo's five lighting scenarios"
    )
    ap.add_argument(
        "--district-baselines", action="store_true", help="the five scenarios for the district too"
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    demo = load_site(ROOT / "site-configs" / "demo.yaml")
    district = generate_district(
        n_segments=args.segments,
        luminaires_total=args.luminaires,
        n_counters=args.counters,
        n_buildings=args.buildings,
        zones_per_building=args.zones,
    )
    sites = [
        _site_figures("demo", demo, args.days, args.step_s, args.seed, baselines=args.baselines),
        _site_figures(
            "district",
            district,
            args.district_days,
            args.step_s,
            args.seed,
            baselines=args.district_baselines,
        ),
    ]
    print(
        json.dumps(
            {
                "benchmark": "simulate_year",
                "python": platform.python_version(),
                "numpy": np.__version__,
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "start": START.isoformat(),
                "sites": sites,
                "total_s": round(time.perf_counter() - t0, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
