"""The five lighting scenarios: the best static timetable's slot maximum by hand, the level the
counted traffic requires, and a busy winter week of all five over one simulated traffic."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from laterne.controller.compliance import compliance, required_level_pct
from laterne.models.layout import SiteLayout
from laterne.models.site import SiteConfig
from laterne.simulations.kpis import kpis
from laterne.simulations.runner import SimulationResult, params_for_step
from laterne.simulations.scenarios import (
    SCENARIOS,
    best_static_levels,
    run_scenarios,
)

BERLIN = ZoneInfo("Europe/Berlin")


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


def test_best_static_takes_the_highest_need_of_each_local_slot(demo_layout: SiteLayout) -> None:
    assert demo_layout.n_segments == 3
    times = np.array(
        [
            ts(2025, 1, 6, 22, 0),  # slot 88
            ts(2025, 1, 6, 22, 14),  # slot 88 (22:00-22:15)
            ts(2025, 1, 7, 22, 5),  # slot 88, another night
            ts(2025, 1, 7, 23, 45),  # slot 95
            ts(2025, 7, 7, 0, 15),  # slot 1, in summer time (local, not UTC)
        ]
    )
    needed = np.array(
        [
            [30.0, 10.0, 0.0],
            [50.0, 5.0, 20.0],
            [40.0, 25.0, 10.0],
            [60.0, 0.0, 15.0],
            [20.0, 35.0, 5.0],
        ]
    )
    table = best_static_levels(demo_layout, times, needed)
    assert table.shape == (3, 96)
    assert table[:, 88].tolist() == [50.0, 25.0, 20.0]
    assert table[:, 95].tolist() == [60.0, 0.0, 15.0]
    assert table[:, 1].tolist() == [20.0, 35.0, 5.0]
    # a slot no step fell in: the segment's highest need
    untouched = np.setdiff1d(np.arange(96), [1, 88, 95])
    assert (table[:, untouched] == np.array([[60.0], [35.0], [20.0]])).all()


def test_the_required_level_is_the_least_compliance_accepts(demo_layout: SiteLayout) -> None:
    seg = demo_layout.segments
    b = seg.band_min_flow_veh_h.shape[1]
    # per segment: each band's threshold, just below it, below the first band, unknown
    rows = []
    for j in range(b):
        rows.append(
            np.where(np.isfinite(seg.band_min_flow_veh_h[:, j]), seg.band_min_flow_veh_h[:, j], 0.0)
        )
    flow = np.array([*rows, np.full(3, -1.0), np.full(3, np.nan)])
    dark = np.ones((flow.shape[0], 1), dtype=bool)
    need = required_level_pct(demo_layout, flow, dark)
    for j in range(b):
        real = np.isfinite(seg.band_min_flow_veh_h[:, j])
        assert need[j][real].tolist() == seg.band_need_pct[real, j].tolist()
    assert need[b].tolist() == seg.band_need_pct[:, 0].tolist()  # below the first band
    assert need[b + 1].tolist() == [0.0, 0.0, 0.0]  # unknown flow: nothing required
    assert not compliance(demo_layout, flow, need, dark).violation.any()
    lower = np.maximum(need - 1.0, 0.0)
    assert (compliance(demo_layout, flow, lower, dark).violation == (need[:] >= 1.0)).all()
    assert (required_level_pct(demo_layout, flow, ~dark) == 0.0).all()  # by day


@pytest.fixture(scope="module")
def busy_week(demo_site: SiteConfig) -> dict[str, SimulationResult]:
    layout = SiteLayout.from_config(demo_site)
    return run_scenarios(
        demo_site,
        layout,
        params_for_step(demo_site.policy, 900.0),
        start=datetime(2025, 1, 5, 23, 0, tzinfo=UTC),  # Monday 00:00 in Hagen
        end=datetime(2025, 1, 12, 23, 0, tzinfo=UTC),
        step_s=900.0,
        seed=3,
    )


def test_five_scenarios_share_one_traffic(busy_week: dict[str, SimulationResult]) -> None:
    assert list(busy_week) == list(SCENARIOS)
    first = busy_week["adaptive"].segment_flow_veh_h
    for r in busy_week.values():
        assert np.array_equal(r.segment_flow_veh_h, first, equal_nan=True)


def test_oracle_and_best_static_never_under_light_and_oracle_is_cheapest(
    busy_week: dict[str, SimulationResult],
) -> None:
    k = {name: kpis(r) for name, r in busy_week.items()}
    assert k["oracle"].segment_violation_intervals.sum() == 0
    assert k["best_static"].segment_violation_intervals.sum() == 0
    assert k["full_power"].segment_violation_intervals.sum() == 0
    assert (k["best_static"].segment_energy_kwh >= k["oracle"].segment_energy_kwh - 1e-9).all()
    for name in ("adaptive", "full_power", "half_night", "best_static"):
        assert k[name].lighting_kwh >= k["oracle"].lighting_kwh
    assert k["full_power"].lighting_kwh > k["half_night"].lighting_kwh
    # every scenario switches by the same sun
    lit = {int(x.segment_lit_intervals.sum()) for x in k.values()}
    assert len(lit) == 1


def test_half_night_under_lights_a_busy_week(busy_week: dict[str, SimulationResult]) -> None:
    half = busy_week["half_night"]
    assert kpis(half).segment_violation_intervals.sum() > 0
    hours = [datetime.fromtimestamp(t, BERLIN).hour for t in half.ts_s[half.dim_pct[:, 0] == 50.0]]
    assert hours and all(h >= 22 or h < 6 for h in hours)  # 50 % from 22:00 to 06:00 only
    assert {22, 5} <= set(hours)
