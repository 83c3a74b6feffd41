"""The control policy: a pure function of (state, observation, now) -> (state, commands).

Rule: nothing here imports asyncio, a driver, a database or a clock. Time is the ``now`` argument
(aware UTC), the site is the :class:`SiteLayout` the policy was built with, and all per-segment and
per-zone work is numpy over arrays. The live runtime and the simulator call this same ``step``.

Theory of operation
-------------------
Lighting. Each counter channel delivers a cumulative vehicle count. The policy turns consecutive
counts into a rate (modulo the counter's wrap, so a 32-bit wrap is not a spike) and smooths it:
until the estimate covers ``flow_window_s`` it is the plain mean of everything seen since it
started (so one short first interval after a start or an outage does not dominate), then an
exponential average of time constant ``flow_window_s``. A channel without a good rate for longer
than ``stale_after_s`` starts over. The channels that feed a segment add up to its ``flow_veh_h``.

The segment's lighting band is the last band whose ``min_flow_veh_h`` the flow reaches, with
hysteresis so lights do not flicker at a threshold: going up a band is immediate (more light is
the safe side); going down happens only once the flow is ``band_hysteresis_pct`` below the
current band's threshold and the segment has held its band for ``min_band_hold_s`` — and never
while the segment's flow estimate is still warming up (any of its channels covers less than
``flow_window_s``: after a start without a saved state, or after an outage), so a cold estimate
cannot step the lights down on the strength of a few minutes of counts. The band's
``dim_pct`` is the wish. While the sun is above ``daylight_elevation_deg`` every segment is off
(0 %). A segment whose flow is unknown or stale gets NaN, which the safety filter turns into the
segment's fail-safe level; its band starts afresh when the flow is known again.

Heating. A zone is occupied when its weekly schedule (local time of the site) says so; occupied
zones get their comfort setpoint, the others their setback setpoint.

A step never mutates its inputs; a step that raises leaves the caller's state as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
import numpy.typing as npt

from laterne.models.layout import SiteLayout
from laterne.models.site import PolicyParams
from laterne.models.values import BoolArray, Commands, FloatArray, Observation, Reason

from .sun import sun_elevation_deg

__all__ = ["MAX_PLAUSIBLE_FLOW_VEH_H", "Policy", "PolicyState", "sun_elevation_deg"]

#: a channel rate above this is a counter reset or a glitch, not traffic [veh/h]
MAX_PLAUSIBLE_FLOW_VEH_H = 20_000.0


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between cycles, per counter channel (C)."""

    last_count_veh: FloatArray  # last good cumulative count, NaN before the first
    last_count_s: FloatArray  # its time [s since epoch], NaN before the first
    flow_veh_h: FloatArray  # smoothed channel flow, NaN until two good counts
    flow_s: FloatArray  # time of the last flow update [s since epoch]
    flow_span_s: FloatArray  # time the current estimate covers, for the warm-up mean [s]
    segment_flow_veh_h: FloatArray  # per segment, NaN where unknown or stale
    segment_band: npt.NDArray[np.intp]  # index into the segment's bands
    band_since_s: FloatArray  # when the segment entered its band [s since epoch], NaN: none
    zone_occupied: BoolArray
    sun_elevation_deg: float = float("nan")


@dataclass(frozen=True, eq=False)
class Policy:
    """Traffic-adaptive lighting and scheduled heating for one site."""

    layout: SiteLayout
    params: PolicyParams

    def initial_state(self) -> PolicyState:
        c = self.layout.n_channels
        nan = np.full(c, np.nan)
        return PolicyState(
            last_count_veh=nan.copy(),
            last_count_s=nan.copy(),
            flow_veh_h=nan.copy(),
            flow_s=nan.copy(),
            flow_span_s=np.zeros(c),
            band_since_s=np.full(self.layout.n_segments, np.nan),
            segment_flow_veh_h=np.full(self.layout.n_segments, np.nan),
            segment_band=np.zeros(self.layout.n_segments, dtype=np.intp),
            zone_occupied=np.zeros(self.layout.n_zones, dtype=bool),
        )

    def step(
        self, state: PolicyState, obs: Observation, now: datetime
    ) -> tuple[PolicyState, Commands]:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        lay, par = self.layout, self.params
        t_s = now.timestamp()

        # --- traffic: counts -> channel rates -> smoothed flows --------------------------
        good = obs.counter_ok & np.isfinite(obs.counter_veh)
        dt_s = t_s - state.last_count_s
        delta = obs.counter_veh - state.last_count_veh
        wrap = lay.channel_wrap
        delta = np.where(wrap > 0, np.mod(delta, np.where(wrap > 0, wrap, 1.0)), delta)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = delta / dt_s * 3600.0
        rate_ok = good & (dt_s > 0) & np.isfinite(rate) & (rate >= 0)
        rate_ok &= rate <= MAX_PLAUSIBLE_FLOW_VEH_H
        expired = ~(t_s - state.flow_s <= par.stale_after_s)  # also true before the first
        prev = np.where(expired, np.nan, state.flow_veh_h)
        span = np.where(expired, 0.0, state.flow_span_s)
        dt_pos = np.where(dt_s > 0, dt_s, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            alpha = np.where(
                span + dt_pos < par.flow_window_s,
                dt_pos / (span + dt_pos),  # warm-up: the running mean since the start
                1.0 - np.exp(-dt_pos / par.flow_window_s),
            )
        smoothed = np.where(np.isfinite(prev), prev + alpha * (rate - prev), rate)
        flow = np.where(rate_ok, smoothed, prev)
        flow_s = np.where(rate_ok, t_s, state.flow_s)
        flow_span = np.where(rate_ok, span + dt_pos, span)
        last_count = np.where(good, obs.counter_veh, state.last_count_veh)
        last_count_s = np.where(good, t_s, state.last_count_s)

        fresh = np.isfinite(flow) & (t_s - flow_s <= par.stale_after_s)
        seg_n = lay.n_segments
        seg_flow = np.bincount(
            lay.pair_segment, weights=np.where(fresh, flow, 0.0)[lay.pair_channel], minlength=seg_n
        )
        missing = np.bincount(
            lay.pair_segment, weights=(~fresh)[lay.pair_channel].astype(float), minlength=seg_n
        )
        seg_known = lay.seg_has_counter & (missing == 0)
        seg_flow_veh_h: FloatArray = np.where(seg_known, seg_flow, np.nan).astype(float)

        # --- lighting: band per segment, daylight off ------------------------------------
        q = np.where(seg_known, seg_flow_veh_h, 0.0)
        rows = np.arange(seg_n)
        reached = lay.band_min_flow_veh_h <= q[:, None]
        candidate = np.maximum(reached.sum(axis=1) - 1, 0)
        had = seg_known & np.isfinite(state.band_since_s)
        current = np.where(had, state.segment_band, candidate).astype(np.intp)
        held_s = t_s - state.band_since_s
        below = q < lay.band_min_flow_veh_h[rows, current] * (1 - par.band_hysteresis_pct / 100)
        cold = np.bincount(
            lay.pair_segment,
            weights=(flow_span < par.flow_window_s)[lay.pair_channel].astype(float),
            minlength=seg_n,
        )
        may_drop = below & (held_s >= par.min_band_hold_s) & (cold == 0)
        band = np.where(
            candidate > current, candidate, np.where(may_drop, candidate, current)
        ).astype(np.intp)
        band_since = np.where(
            seg_known, np.where(had & (band == current), state.band_since_s, t_s), np.nan
        )
        wish = lay.band_dim_pct[rows, band]
        wish = np.where(seg_known, wish, np.nan)
        sun_deg = obs.sun_elevation_deg
        if not np.isfinite(sun_deg):  # an observation built without the sun: compute it here
            sun_deg = sun_elevation_deg(lay, now)
        daylight = sun_deg > par.daylight_elevation_deg
        dim = np.zeros(seg_n) if daylight else wish
        dim_reason = np.full(seg_n, Reason.DAYLIGHT if daylight else Reason.TRAFFIC, dtype=np.int8)

        # --- heating: schedule in local time ----------------------------------------------
        local = now.astimezone(lay.timezone)
        minute = local.hour * 60 + local.minute
        occupied = lay.zone_occupancy[:, local.weekday(), minute]
        setpoint = np.where(occupied, lay.zone_occupied_c, lay.zone_setback_c)
        sp_reason = np.where(occupied, Reason.OCCUPIED, Reason.SETBACK).astype(np.int8)

        new_state = replace(
            state,
            last_count_veh=last_count,
            last_count_s=last_count_s,
            flow_veh_h=flow,
            flow_s=flow_s,
            flow_span_s=flow_span,
            band_since_s=band_since,
            sun_elevation_deg=sun_deg,
            segment_flow_veh_h=seg_flow_veh_h,
            segment_band=band,
            zone_occupied=occupied,
        )
        return new_state, Commands(
            dim_pct=dim.astype(float),
            dim_reason=dim_reason,
            setpoint_c=setpoint.astype(float),
            setpoint_reason=sp_reason,
        )
