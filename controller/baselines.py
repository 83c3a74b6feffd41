"""Baseline policies: what a city does without Laterne, for the simulator to measure against.

Rule: each baseline is a :class:`~laterne.controller.cycle.ControlPolicy` with the traffic
policy's state type, :class:`~laterne.controller.policy.PolicyState` (its flow fields stay as
they started; the sun and the occupancy are kept up to date), so the runtime's snapshot, the
saved state and the API work with a baseline unchanged. Pure: time is the ``now`` argument, the
work is numpy over the layout's arrays, inputs are never mutated. Baselines ignore traffic; they
go through the same safety filter as the traffic policy (bounds, ramp, a zone whose temperature
is unknown gets its default setpoint).

* :class:`FullPower` — every segment at ``level_pct`` (100 %) whenever the sun is at or below
  ``daylight_elevation_deg``, off by day; every zone at its occupied setpoint all the time, no
  setback. An astronomical switch and a constant thermostat.
* :class:`FixedSchedule` — the typical German "Halbnachtschaltung": full light from dusk to
  ``reduce_from`` (22:00) and from ``reduce_until`` (05:00) to dawn, ``reduced_pct`` (50 %) in
  between, local time of the site; heating by each zone's weekly schedule with setback, as the
  traffic policy heats.

* :class:`SlotTimetable` — a fixed nightly timetable per segment: from dusk to dawn each segment
  at its level for the 15-minute slot (``slot_min``) of local time; heating by the weekly
  schedule. The simulator's ``best_static`` fills it from a run's traffic.
* :class:`Foresight` — a level per segment for each decision time of a run, given in advance
  (perfect foresight: the simulator's ``oracle``), lit only while the sun is down; a time not
  in its table raises :class:`NotInTimetable`. Heating by the weekly schedule.

Reason codes: off by day is ``daylight``, the heating ``occupied``/``setback``. A lit baseline
level is recorded as ``schedule`` (:data:`LIT_REASON`): a fixed rule, no traffic measured.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, time
from typing import Final

import numpy as np

from laterne.models.layout import SiteLayout, occupied_now
from laterne.models.site import PolicyParams
from laterne.models.values import Commands, FloatArray, IntArray, Observation, Reason

from .policy import Policy, PolicyState, scheduled_heating
from .sun import sun_elevation_deg

__all__ = [
    "LIT_REASON",
    "FixedSchedule",
    "Foresight",
    "FullPower",
    "NotInTimetable",
    "SlotTimetable",
    "slot_of",
]

#: the reason recorded for a baseline's lit level (no schedule code in :class:`Reason` yet)
LIT_REASON: Final = Reason.SCHEDULE


class NotInTimetable(ValueError):
    """A :class:`Foresight` asked for a time its table does not hold."""


def slot_of(layout: SiteLayout, now: datetime, slot_min: int) -> int:
    """The slot of the local day (``slot_min`` minutes each) that ``now`` falls in."""
    local = now.astimezone(layout.timezone)
    return (local.hour * 60 + local.minute) // slot_min


def _sun(layout: SiteLayout, obs: Observation, now: datetime) -> float:
    """The observation's sun, or the site's at ``now`` when the observation has none."""
    sun_deg = obs.sun_elevation_deg
    return float(sun_deg) if np.isfinite(sun_deg) else sun_elevation_deg(layout, now)


def _lit(
    layout: SiteLayout, params: PolicyParams, sun_deg: float, level_pct: FloatArray | float
) -> tuple[FloatArray, IntArray]:
    """``level_pct`` per segment, or off (0 %) while the sun is above the daylight elevation."""
    n = layout.n_segments
    if sun_deg > params.daylight_elevation_deg:
        return np.zeros(n), np.full(n, Reason.DAYLIGHT, dtype=np.int8)
    return np.broadcast_to(np.asarray(level_pct, dtype=float), (n,)).copy(), np.full(
        n, LIT_REASON, dtype=np.int8
    )


@dataclass(frozen=True, eq=False)
class FullPower:
    """Lights at ``level_pct`` from dusk to dawn, zones at their occupied setpoint always."""

    layout: SiteLayout
    params: PolicyParams
    level_pct: float = 100.0

    def initial_state(self) -> PolicyState:
        return Policy(self.layout, self.params).initial_state()

    def step(
        self, state: PolicyState, obs: Observation, now: datetime
    ) -> tuple[PolicyState, Commands]:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        lay = self.layout
        sun_deg = _sun(lay, obs, now)
        dim, dim_reason = _lit(lay, self.params, sun_deg, self.level_pct)
        setpoint = np.where(obs.zone_ok, lay.zones.occupied_c, np.nan)
        new_state = replace(state, sun_elevation_deg=sun_deg, zone_occupied=occupied_now(lay, now))
        return new_state, Commands(
            dim_pct=dim,
            dim_reason=dim_reason,
            setpoint_c=setpoint.astype(float),
            setpoint_reason=np.full(lay.n_zones, Reason.OCCUPIED, dtype=np.int8),
        )


@dataclass(frozen=True, eq=False)
class FixedSchedule:
    """Full light at dusk and before dawn, reduced in the middle of the night (local time);
    heating by the weekly schedule."""

    layout: SiteLayout
    params: PolicyParams
    full_pct: float = 100.0
    reduced_pct: float = 50.0
    reduce_from: time = time(22, 0)
    reduce_until: time = time(5, 0)

    def initial_state(self) -> PolicyState:
        return Policy(self.layout, self.params).initial_state()

    def reduced(self, now: datetime) -> bool:
        """Within the reduced hours at ``now`` (the site's local wall-clock time)."""
        local = now.astimezone(self.layout.timezone).time().replace(tzinfo=None)
        start, end = self.reduce_from, self.reduce_until
        if start <= end:
            return start <= local < end
        return local >= start or local < end  # across midnight

    def step(
        self, state: PolicyState, obs: Observation, now: datetime
    ) -> tuple[PolicyState, Commands]:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        lay = self.layout
        sun_deg = _sun(lay, obs, now)
        level = self.reduced_pct if self.reduced(now) else self.full_pct
        dim, dim_reason = _lit(lay, self.params, sun_deg, level)
        setpoint, sp_reason, occupied = scheduled_heating(lay, now, obs.zone_ok)
        new_state = replace(state, sun_elevation_deg=sun_deg, zone_occupied=occupied)
        return new_state, Commands(
            dim_pct=dim,
            dim_reason=dim_reason,
            setpoint_c=setpoint.astype(float),
            setpoint_reason=sp_reason,
        )


def _scheduled(
    lay: SiteLayout,
    state: PolicyState,
    obs: Observation,
    now: datetime,
    dim: FloatArray,
    dim_reason: IntArray,
    sun_deg: float,
) -> tuple[PolicyState, Commands]:
    setpoint, sp_reason, occupied = scheduled_heating(lay, now, obs.zone_ok)
    new_state = replace(state, sun_elevation_deg=sun_deg, zone_occupied=occupied)
    return new_state, Commands(
        dim_pct=dim,
        dim_reason=dim_reason,
        setpoint_c=setpoint.astype(float),
        setpoint_reason=sp_reason,
    )


@dataclass(frozen=True, eq=False)
class SlotTimetable:
    """From dusk to dawn, segment ``s`` at ``level_pct[s, slot]`` for the local slot of ``now``
    (``level_pct``: (S, 24·60 / slot_min)); heating by the weekly schedule."""

    layout: SiteLayout
    params: PolicyParams
    level_pct: FloatArray
    slot_min: int = 15

    def __post_init__(self) -> None:
        want = (self.layout.n_segments, 24 * 60 // self.slot_min)
        if 24 * 60 % self.slot_min or self.level_pct.shape != want:
            raise ValueError(f"level_pct must be {want} for {self.slot_min}-min slots")

    def initial_state(self) -> PolicyState:
        return Policy(self.layout, self.params).initial_state()

    def step(
        self, state: PolicyState, obs: Observation, now: datetime
    ) -> tuple[PolicyState, Commands]:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        lay = self.layout
        sun_deg = _sun(lay, obs, now)
        level = self.level_pct[:, slot_of(lay, now, self.slot_min)]
        dim, dim_reason = _lit(lay, self.params, sun_deg, level)
        return _scheduled(lay, state, obs, now, dim, dim_reason, sun_deg)


@dataclass(frozen=True, eq=False)
class Foresight:
    """At ``ts_s[k]`` (s since the epoch) segments at ``level_pct[k]`` while the sun is down
    (``level_pct``: (K, S)); heating by the weekly schedule."""

    layout: SiteLayout
    params: PolicyParams
    ts_s: FloatArray
    level_pct: FloatArray

    def __post_init__(self) -> None:
        if self.level_pct.shape != (self.ts_s.size, self.layout.n_segments):
            raise ValueError("level_pct must be (len(ts_s), n_segments)")

    def initial_state(self) -> PolicyState:
        return Policy(self.layout, self.params).initial_state()

    def step(
        self, state: PolicyState, obs: Observation, now: datetime
    ) -> tuple[PolicyState, Commands]:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        t = now.timestamp()
        k = int(np.searchsorted(self.ts_s, t))
        if k >= self.ts_s.size or abs(self.ts_s[k] - t) > 1e-3:
            raise NotInTimetable(f"no level for {now.isoformat()}")
        lay = self.layout
        sun_deg = _sun(lay, obs, now)
        dim, dim_reason = _lit(lay, self.params, sun_deg, self.level_pct[k])
        return _scheduled(lay, state, obs, now, dim, dim_reason, sun_deg)
