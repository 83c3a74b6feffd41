"""The five lighting scenarios of ``laterne simulate``, over one simulated plant and traffic.

Rule: the scenarios are runs of :func:`~laterne.simulations.runner.run` with the same site,
span, step and seed, so they share the traffic (the plant's random counts do not depend on the
commands); the two that need the traffic in advance are built from the first run's recorded
per-step segment flow. Pure apart from the runs; the requirement a level is held to is
``controller.compliance``'s (:func:`~laterne.controller.compliance.required_level_pct`).

* ``adaptive`` — the site's traffic policy (what Laterne does);
* ``full_power`` — 100 % from dusk to dawn;
* ``half_night`` — 50 % from 22:00 to 06:00 local time, else 100 % while dark;
* ``best_static`` — per segment the lowest fixed nightly timetable in 15-minute slots of local
  time that never under-lights on the simulated traffic (:func:`best_static_levels`);
* ``oracle`` — perfect foresight: each step the level the step's counted traffic needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, time
from typing import Any, Final

import numpy as np

from laterne.controller.baselines import FixedSchedule, Foresight, FullPower, SlotTimetable
from laterne.controller.compliance import required_level_pct
from laterne.controller.policy import Policy
from laterne.models.layout import SiteLayout
from laterne.models.site import PolicyParams, SiteConfig
from laterne.models.values import FloatArray

from .runner import SimulationError, SimulationResult, run

__all__ = [
    "HALF_NIGHT_FROM",
    "HALF_NIGHT_UNTIL",
    "SCENARIOS",
    "SLOT_MIN",
    "best_static_levels",
    "iter_scenarios",
    "oracle_levels",
    "run_scenarios",
]

#: the scenario names, in the order they run and print
SCENARIOS: Final = ("adaptive", "full_power", "half_night", "best_static", "oracle")
#: the policy name each scenario's run carries (the ``runs`` of ``laterne simulate --json``)
RUN_NAMES: Final = {
    "adaptive": "Laterne",
    "full_power": "FullPower",
    "half_night": "FixedSchedule",
    "best_static": "BestStatic",
    "oracle": "Oracle",
}
#: the common German "Halbnachtschaltung": 50 % in these local hours
HALF_NIGHT_FROM: Final = time(22, 0)
HALF_NIGHT_UNTIL: Final = time(6, 0)
#: length of a ``best_static`` timetable slot [min]
SLOT_MIN: Final = 15


def _needed(result: SimulationResult[Any]) -> FloatArray:
    """(K, S) the level each step's counted traffic needed (0 by day)."""
    dark = (result.sun_elevation_deg <= result.params.daylight_elevation_deg)[:, None]
    return required_level_pct(result.layout, result.segment_flow_veh_h, dark)


def oracle_levels(result: SimulationResult[Any]) -> FloatArray:
    """(K, S) perfect foresight: the level each step of ``result``'s traffic needed."""
    return _needed(result)


def best_static_levels(
    layout: SiteLayout, ts_s: FloatArray, needed_pct: FloatArray, slot_min: int = SLOT_MIN
) -> FloatArray:
    """(S, 24·60 / slot_min): per segment and local slot the highest level any step whose
    decision time ``ts_s`` falls in the slot needed (``needed_pct``: (K, S)); a slot no step
    fell in gets the segment's highest need (a timetable must say something)."""
    n_slots = 24 * 60 // slot_min
    local = np.array(
        [datetime.fromtimestamp(t, layout.timezone) for t in ts_s.tolist()], dtype=object
    )
    slot = np.fromiter(((d.hour * 60 + d.minute) // slot_min for d in local), np.intp, ts_s.size)
    out = np.full((layout.n_segments, n_slots), -np.inf)
    np.maximum.at(out.T, slot, needed_pct)
    top = needed_pct.max(axis=0) if needed_pct.size else np.zeros(layout.n_segments)
    filled: FloatArray = np.where(np.isfinite(out), out, top[:, None])
    return filled


def iter_scenarios(
    site: SiteConfig,
    layout: SiteLayout,
    params: PolicyParams,
    *,
    start: datetime,
    end: datetime,
    step_s: float,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[str, SimulationResult[Any]]]:
    """The five scenarios' runs, one at a time in :data:`SCENARIOS` order (a caller may time
    each between two of them).

    Raises
    ------
    SimulationError
        as :func:`run`, or when a run saw other traffic than the first (a bug).
    """

    def go(scenario: str, policy: Any) -> SimulationResult[Any]:
        return run(
            site,
            policy,
            start=start,
            end=end,
            step_s=step_s,
            seed=seed,
            params=params,
            layout=layout,
            name=RUN_NAMES[scenario],
            progress=progress,
        )

    first = go("adaptive", Policy(layout, params))
    yield "adaptive", first
    half = FixedSchedule(layout, params, reduce_from=HALF_NIGHT_FROM, reduce_until=HALF_NIGHT_UNTIL)
    needed = oracle_levels(first)
    rest: list[tuple[str, Any]] = [
        ("full_power", FullPower(layout, params)),
        ("half_night", half),
        (
            "best_static",
            SlotTimetable(layout, params, best_static_levels(layout, first.ts_s, needed)),
        ),
        ("oracle", Foresight(layout, params, first.ts_s, needed)),
    ]
    for scenario, policy in rest:
        r = go(scenario, policy)
        if not np.array_equal(r.segment_flow_veh_h, first.segment_flow_veh_h, equal_nan=True):
            raise SimulationError(f"{scenario} saw other traffic than adaptive")
        yield scenario, r


def run_scenarios(
    site: SiteConfig,
    layout: SiteLayout,
    params: PolicyParams,
    *,
    start: datetime,
    end: datetime,
    step_s: float,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, SimulationResult[Any]]:
    """The five scenarios' runs by name (see :func:`iter_scenarios`)."""
    return dict(
        iter_scenarios(
            site, layout, params, start=start, end=end, step_s=step_s, seed=seed, progress=progress
        )
    )
