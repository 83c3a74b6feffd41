"""The control policy: a pure function of (state, observation, now) -> (state, commands).

Rule: nothing here imports asyncio, a driver, a database or a clock. Time is the ``now`` argument
(aware UTC), the site is the :class:`SiteLayout` the policy was built with, and all per-segment and
per-zone work is numpy over arrays. The live runtime and the simulator call this same ``step``.

Theory of operation
-------------------
Lighting. Each counter channel delivers a cumulative vehicle count. The policy turns consecutive
counts into a rate (modulo the counter's wrap — 2^bits × |scale| for an unsigned integer counter,
none for a float one — so a wrap is not a spike) and smooths it:
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

Heating. A zone is occupied when its schedule says so for the local time of the site and the
day's type (its weekday, or a special day such as a holiday: ``SiteLayout.special_days``);
occupied zones get their comfort setpoint, the others their setback setpoint. A zone whose
temperature is not GOOD gets NaN: the one fail-safe pattern, the safety filter turns every NaN
into the actuator's fail-safe value.

Stages. ``step`` is the named pure stages below, in order, each with explicit inputs:
:func:`estimate_flow`, :func:`select_band` (with the ``forecast`` slot: the band follows the
larger of the measured and the forecast flow), :func:`daylight_off`, :func:`scheduled_heating`.
The array code works on the trailing axis (segments, channels, zones), so a leading scenario axis
broadcasts: baselines and parameter sweeps can share one time loop.

A step never mutates its inputs; a step that raises leaves the caller's state as it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

import numpy as np
import numpy.typing as npt

from laterne.models.layout import SiteLayout, day_type_of, occupied_now
from laterne.models.site import PolicyParams
from laterne.models.values import (
    BoolArray,
    Commands,
    FloatArray,
    IntArray,
    Observation,
    Reason,
)

from .sun import sun_elevation_deg

__all__ = [
    "MAX_PLAUSIBLE_FLOW_VEH_H",
    "FlowEstimate",
    "Forecast",
    "Policy",
    "PolicyState",
    "apply_curfews",
    "counted_rate",
    "daylight_off",
    "estimate_flow",
    "expected_demand",
    "learn_profile",
    "lux_switching",
    "profile_demand",
    "profile_slot",
    "scheduled_heating",
    "segment_dark",
    "select_band",
    "sum_to_segments",
    "sun_elevation_deg",
]

#: a channel rate above this is a glitch (or a wrapping counter reset far from its wrap), not
#: traffic [veh/h]; a negative rate (a float counter's reset) is refused too. Either way the
#: count becomes the channel's new baseline and that interval's rate is dropped
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
    #: smoothed rate of change of the channel's flow estimate [veh/h per s]; 0 without one
    flow_trend_veh_h_s: FloatArray | None = None
    #: per segment, the flow the band was chosen from (estimate, trend and margin) [veh/h]
    segment_demand_veh_h: FloatArray | None = None
    #: per channel, day class (weekday, Saturday, Sunday or holiday) and slot of the day, the
    #: flow counted in that slot on earlier days, exponentially averaged [veh/h]; NaN: not seen
    profile_veh_h: FloatArray | None = None
    #: the slot being counted (``floor(t / compliance_interval_s)``), NaN before the first
    slot_id: float = float("nan")
    slot_veh: FloatArray | None = None  # per channel, vehicles counted in that slot so far
    slot_covered_s: FloatArray | None = None  # per channel, time those counts cover [s]
    #: per segment the light sensor's last switching decision: 1 dark, 0 light, NaN none yet
    lux_dark: FloatArray | None = None


@dataclass(frozen=True)
class Forecast:
    """What the policy may know of the coming interval: a demand forecast per segment.

    ``segment_flow_veh_h`` is the expected flow [veh/h] (NaN where there is none). The lighting
    band follows the larger of the measured and the forecast flow: more light is the safe side.
    """

    segment_flow_veh_h: FloatArray


@dataclass(frozen=True)
class FlowEstimate:
    """The traffic stage's output: per channel (C) the updated estimate, per segment (S) the
    flow and whether it is known and warm. Leading scenario axes broadcast."""

    last_count_veh: FloatArray
    last_count_s: FloatArray
    flow_veh_h: FloatArray
    flow_s: FloatArray
    flow_span_s: FloatArray
    flow_trend_veh_h_s: FloatArray
    counted_veh: FloatArray  # per channel, the vehicles of this cycle's good rate (else 0)
    counted_s: FloatArray  # per channel, the time they cover [s] (0 without a good rate)
    segment_flow_veh_h: FloatArray  # NaN where unknown or stale
    segment_trend_veh_h_s: FloatArray  # 0 where unknown
    segment_known: BoolArray
    segment_cold: BoolArray  # a channel of the segment covers less than the flow window


#: the profile's day classes: weekday, Saturday, Sunday or holiday (any special day)
PROFILE_DAY_CLASSES: Final = 3
_S_PER_DAY: Final = 86_400.0


def profile_slots(params: PolicyParams) -> int:
    """Slots per day of the traffic profile: one per ``compliance_interval_s``."""
    return max(1, math.ceil(_S_PER_DAY / params.compliance_interval_s))


def profile_slot(layout: SiteLayout, params: PolicyParams, t_s: float) -> tuple[int, int]:
    """(day class, slot of the local day) of the time ``t_s`` [s since epoch]."""
    local = datetime.fromtimestamp(t_s, layout.timezone)
    day = day_type_of(layout, local.date())
    day_class = 0 if day < 5 else (1 if day == 5 else 2)
    into_day_s = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    slot = int(into_day_s // params.compliance_interval_s)
    return day_class, min(slot, profile_slots(params) - 1)


def sum_to_segments(layout: SiteLayout, per_channel: FloatArray) -> FloatArray:
    """Sum channel values (..., C) into the segments they feed (..., S)."""
    if per_channel.ndim == 1:
        return np.bincount(
            layout.channels.pair_segment,
            weights=per_channel[layout.channels.pair_channel],
            minlength=layout.n_segments,
        ).astype(float)
    out = np.zeros((*per_channel.shape[:-1], layout.n_segments))
    pairs = layout.channels
    np.add.at(out, (Ellipsis, pairs.pair_segment), per_channel[..., pairs.pair_channel])  # type: ignore[arg-type]
    return out


def counted_rate(
    layout: SiteLayout,
    last_count_veh: FloatArray,
    last_count_s: FloatArray,
    counter_veh: FloatArray,
    counter_ok: BoolArray,
    t_s: float,
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Per channel the rate counted since the last count [veh/h] (modulo the counter's wrap),
    the time it covers [s], and whether it is a good rate (a good reading, time passed, not
    negative — a counter reset — and plausible)."""
    good = counter_ok & np.isfinite(counter_veh)
    dt_s = t_s - last_count_s
    delta = counter_veh - last_count_veh
    wrap = layout.channels.wrap
    delta = np.where(wrap > 0, np.mod(delta, np.where(wrap > 0, wrap, 1.0)), delta)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = delta / dt_s * 3600.0
    rate_ok = good & (dt_s > 0) & np.isfinite(rate) & (rate >= 0)
    rate_ok &= rate <= MAX_PLAUSIBLE_FLOW_VEH_H
    return rate, dt_s, rate_ok


def estimate_flow(
    layout: SiteLayout,
    params: PolicyParams,
    state: PolicyState,
    counter_veh: FloatArray,
    counter_ok: BoolArray,
    t_s: float,
) -> FlowEstimate:
    """Counts → per-channel rates (modulo the counter's wrap) → smoothed flows → per segment.

    Until an estimate covers ``flow_window_s`` it is the running mean since it started, then an
    exponential average of that time constant; a channel without a good rate for longer than
    ``stale_after_s`` starts over.
    """
    rate, dt_s, rate_ok = counted_rate(
        layout, state.last_count_veh, state.last_count_s, counter_veh, counter_ok, t_s
    )
    expired = ~(t_s - state.flow_s <= params.stale_after_s)  # also true before the first
    prev = np.where(expired, np.nan, state.flow_veh_h)
    span = np.where(expired, 0.0, state.flow_span_s)
    dt_pos = np.where(dt_s > 0, dt_s, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = np.where(
            span + dt_pos < params.flow_window_s,
            dt_pos / (span + dt_pos),  # warm-up: the running mean since the start
            1.0 - np.exp(-dt_pos / params.flow_window_s),
        )
    smoothed = np.where(np.isfinite(prev), prev + alpha * (rate - prev), rate)
    flow = np.where(rate_ok, smoothed, prev)
    flow_s = np.where(rate_ok, t_s, state.flow_s)
    flow_span = np.where(rate_ok, span + dt_pos, span)
    # the trend: an exponential average (same time constant) of the estimate's rate of change
    trend_prev = state.flow_trend_veh_h_s
    if trend_prev is None:
        trend_prev = np.zeros_like(flow)
    trend_prev = np.where(expired | ~np.isfinite(trend_prev), 0.0, trend_prev)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (smoothed - prev) / dt_pos
        beta = 1.0 - np.exp(-dt_pos / params.flow_window_s)
    slope_ok = rate_ok & np.isfinite(prev) & (dt_pos > 0) & np.isfinite(slope)
    trend = np.where(slope_ok, trend_prev + beta * (slope - trend_prev), trend_prev)

    fresh = np.isfinite(flow) & (t_s - flow_s <= params.stale_after_s)
    seg_flow = sum_to_segments(layout, np.where(fresh, flow, 0.0))
    seg_trend = sum_to_segments(layout, np.where(fresh, trend, 0.0))
    missing = sum_to_segments(layout, (~fresh).astype(float))
    cold = sum_to_segments(layout, (flow_span < params.flow_window_s).astype(float))
    known = layout.segments.has_counter & (missing == 0)
    good = counter_ok & np.isfinite(counter_veh)
    return FlowEstimate(
        last_count_veh=np.where(good, counter_veh, state.last_count_veh),
        last_count_s=np.where(good, t_s, state.last_count_s),
        flow_veh_h=flow,
        flow_s=flow_s,
        flow_span_s=flow_span,
        flow_trend_veh_h_s=trend,
        counted_veh=np.where(rate_ok, rate * dt_pos / 3600.0, 0.0),
        counted_s=np.where(rate_ok, dt_pos, 0.0),
        segment_flow_veh_h=np.where(known, seg_flow, np.nan).astype(float),
        segment_trend_veh_h_s=np.where(known, seg_trend, 0.0),
        segment_known=known,
        segment_cold=cold > 0,
    )


def learn_profile(
    layout: SiteLayout, params: PolicyParams, state: PolicyState, flow: FlowEstimate, t_s: float
) -> tuple[FloatArray, float, FloatArray, FloatArray]:
    """Count each channel's vehicles per slot of ``compliance_interval_s``; when a slot ends
    (and its counts cover half of it or more), average its flow into the channel's profile for
    that day class and slot with weight ``flow_profile_weight``.

    Returns (profile (…, C, 3, slots), slot id, vehicles and covered time of the open slot).
    """
    shape = (*flow.counted_veh.shape, PROFILE_DAY_CLASSES, profile_slots(params))
    profile = state.profile_veh_h
    if profile is None or profile.shape != shape:
        profile = np.full(shape, np.nan)
    slot_veh = state.slot_veh if state.slot_veh is not None else np.zeros_like(flow.counted_veh)
    slot_s = (
        state.slot_covered_s
        if state.slot_covered_s is not None
        else np.zeros_like(flow.counted_veh)
    )
    slot_veh = slot_veh + flow.counted_veh
    slot_s = slot_s + flow.counted_s
    sid = math.floor(t_s / params.compliance_interval_s)
    if not np.isfinite(state.slot_id):
        return profile, float(sid), np.zeros_like(slot_veh), np.zeros_like(slot_s)
    if sid == state.slot_id:
        return profile, state.slot_id, slot_veh, slot_s
    day_class, slot = profile_slot(layout, params, state.slot_id * params.compliance_interval_s)
    enough = slot_s >= 0.5 * params.compliance_interval_s
    w = params.flow_profile_weight
    if w > 0 and enough.any():
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = slot_veh / slot_s * 3600.0
        old = profile[..., day_class, slot]
        new = np.where(np.isfinite(old), old + w * (rate - old), rate)
        profile = profile.copy()
        profile[..., day_class, slot] = np.where(enough, new, old)
    return profile, float(sid), np.zeros_like(slot_veh), np.zeros_like(slot_s)


def profile_demand(
    layout: SiteLayout, params: PolicyParams, profile: FloatArray, t_s: float
) -> FloatArray:
    """Per segment the flow its channels' profiles expect over the coming interval (the larger
    of the slots at its start and its end) [veh/h]; NaN where a channel has not seen them."""
    if params.flow_profile_weight == 0:
        return np.full((*profile.shape[:-3], layout.n_segments), np.nan)
    c0, k0 = profile_slot(layout, params, t_s)
    c1, k1 = profile_slot(layout, params, t_s + params.compliance_interval_s - 1.0)
    per_channel = np.fmax(profile[..., c0, k0], profile[..., c1, k1])
    seen = np.isfinite(per_channel)
    total = sum_to_segments(layout, np.where(seen, per_channel, 0.0))
    unseen = sum_to_segments(layout, (~seen).astype(float))
    return np.where(layout.segments.has_counter & (unseen == 0), total, np.nan)


def _with_margin(params: PolicyParams, flow_veh_h: FloatArray) -> FloatArray:
    """``flow_veh_h`` plus ``flow_margin_z`` standard deviations of the Poisson counting noise
    over one ``compliance_interval_s`` (a count's rate has sd sqrt(rate / interval [h]))."""
    if params.flow_margin_z == 0:
        return flow_veh_h
    noise_sd = np.sqrt(np.maximum(flow_veh_h, 1.0) * 3600.0 / params.compliance_interval_s)
    return flow_veh_h + params.flow_margin_z * noise_sd


def expected_demand(
    params: PolicyParams,
    flow: FlowEstimate,
    forecast_veh_h: FloatArray | None = None,
    profile_veh_h: FloatArray | None = None,
) -> FloatArray:
    """The flow per segment the band is chosen from [veh/h], never below the estimate: the
    largest of the estimate extrapolated along a rising trend over ``flow_trend_horizon_s``,
    the flow the segment's profile expects in the coming interval (each with the counting-noise
    margin of :func:`_with_margin`), and the forecast where one is given. 0 where the flow is
    unknown."""
    known = flow.segment_known
    q = np.where(known, flow.segment_flow_veh_h, 0.0)
    rising = np.maximum(flow.segment_trend_veh_h_s, 0.0) * params.flow_trend_horizon_s
    ahead = _with_margin(params, q + rising)
    if profile_veh_h is not None:
        seen = np.isfinite(profile_veh_h)
        ahead = np.where(seen, np.fmax(ahead, _with_margin(params, profile_veh_h)), ahead)
    if forecast_veh_h is not None:
        ahead = np.where(np.isfinite(forecast_veh_h), np.fmax(ahead, forecast_veh_h), ahead)
    return np.where(known, ahead, 0.0)


def select_band(
    layout: SiteLayout,
    params: PolicyParams,
    flow: FlowEstimate,
    band: npt.NDArray[np.intp],
    band_since_s: FloatArray,
    t_s: float,
    demand_veh_h: FloatArray | None = None,
) -> tuple[npt.NDArray[np.intp], FloatArray, FloatArray]:
    """The lighting band per segment, with hysteresis: (band, band_since_s, dim wish [%]).

    The band follows ``demand_veh_h`` (:func:`expected_demand`; the plain estimate when not
    given). Up a band at once; down only when the demand is ``band_hysteresis_pct`` below the
    current band's threshold, the band was held ``min_band_hold_s``, and the estimate is warm.
    The wish is NaN where the flow is unknown (the safety filter's fail-safe).
    """
    known = flow.segment_known
    if demand_veh_h is None:
        q = np.where(known, flow.segment_flow_veh_h, 0.0)
    else:
        q = np.where(known, demand_veh_h, 0.0)
    table = layout.segments.band_min_flow_veh_h  # (S, B)
    thresholds = table if q.ndim == 1 else np.broadcast_to(table, (*q.shape, table.shape[-1]))
    candidate = np.maximum((thresholds <= q[..., None]).sum(axis=-1) - 1, 0)
    had = known & np.isfinite(band_since_s)
    current = np.where(had, band, candidate).astype(np.intp)
    current_min = _pick(thresholds, current)
    below = q < current_min * (1 - params.band_hysteresis_pct / 100)
    may_drop = below & (t_s - band_since_s >= params.min_band_hold_s) & ~flow.segment_cold
    new_band = np.where(
        candidate > current, candidate, np.where(may_drop, candidate, current)
    ).astype(np.intp)
    since = np.where(known, np.where(had & (new_band == current), band_since_s, t_s), np.nan)
    levels = layout.segments.band_dim_pct
    if q.ndim > 1:
        levels = np.broadcast_to(levels, thresholds.shape)
    wish = _pick(levels, new_band)
    return new_band, since, np.where(known, wish, np.nan)


def _pick(table: FloatArray, index: npt.NDArray[np.intp]) -> FloatArray:
    """``table[..., s, index[..., s]]``: one column per segment (fast path for one scenario)."""
    if index.ndim == 1:
        picked: FloatArray = table[np.arange(index.shape[0]), index]
        return picked
    return np.take_along_axis(table, index[..., None], axis=-1)[..., 0]


def apply_curfews(
    layout: SiteLayout, wish: FloatArray, band: npt.NDArray[np.intp], now: datetime
) -> tuple[FloatArray, BoolArray]:
    """The wish capped by the segments' curfews in force at ``now`` (local time), never below
    the level the chosen band's class needs: (wish, capped). A window past midnight belongs to
    the weekday it started on."""
    seg = layout.segments
    if seg.curfew_cap_pct.shape[-1] == 0:
        return wish, np.zeros(wish.shape, dtype=bool)
    local = now.astimezone(layout.timezone)
    minute, day = local.hour * 60 + local.minute, local.weekday()
    start, end, days = seg.curfew_start_min, seg.curfew_end_min, seg.curfew_days
    same_day = (start < end) & (start <= minute) & (minute < end) & days[..., day]
    evening = (start > end) & (minute >= start) & days[..., day]
    after_midnight = (start > end) & (minute < end) & days[..., (day - 1) % 7]
    active = same_day | evening | after_midnight
    cap = np.where(active, seg.curfew_cap_pct, np.inf).min(axis=-1)
    need = np.take_along_axis(
        np.broadcast_to(seg.band_need_pct, (*band.shape, seg.band_need_pct.shape[-1])),
        band[..., None],
        axis=-1,
    )[..., 0]
    capped_wish = np.where(np.isfinite(wish), np.maximum(np.minimum(wish, cap), need), wish)
    return capped_wish, capped_wish < wish


def segment_dark(
    layout: SiteLayout, params: PolicyParams, now: datetime, sun_deg: float
) -> BoolArray:
    """Per segment: lit by the sun's rule at ``now`` — the sun below ``daylight_elevation_deg``
    ``on_offset_s`` ago in the evening (``off_offset_s`` ago in the morning, before local solar
    noon). ``sun_deg`` is the elevation at ``now``; other instants are computed once per
    distinct offset."""
    seg, limit = layout.segments, params.daylight_elevation_deg
    morning = ((now.timestamp() / 3600.0 + layout.longitude_deg / 15.0) % 24.0) < 12.0
    offset_s = seg.off_offset_s if morning else seg.on_offset_s
    dark = np.full(layout.n_segments, sun_deg <= limit)
    for off in np.unique(offset_s[offset_s != 0]):
        then = datetime.fromtimestamp(now.timestamp() - float(off), now.tzinfo)
        dark[offset_s == off] = sun_elevation_deg(layout, then) <= limit
    return dark


def lux_switching(
    layout: SiteLayout, lux: FloatArray | None, prev: FloatArray | None, dark_by_sun: BoolArray
) -> tuple[BoolArray, FloatArray]:
    """Where a segment's light sensor reads good: dark below ``lux_on_below``, light above
    ``lux_off_above``, in between as it was (hysteresis; from the sun's rule when it had no
    decision yet); elsewhere the sun decides. Returns (dark, the sensor decisions to keep)."""
    if lux is None:
        return dark_by_sun, np.full(dark_by_sun.shape, np.nan)
    seg = layout.segments
    before = prev if prev is not None else np.full(dark_by_sun.shape, np.nan)
    before = np.where(np.isfinite(before), before, dark_by_sun.astype(float))
    known = np.isfinite(lux)
    with np.errstate(invalid="ignore"):
        decided = np.where(
            lux < seg.lux_on_below, 1.0, np.where(lux > seg.lux_off_above, 0.0, before)
        )
    dark = np.where(known, decided > 0.5, dark_by_sun)
    return dark, np.where(known, decided, np.nan)


def daylight_off(wish: FloatArray, dark: BoolArray) -> tuple[FloatArray, IntArray]:
    """Off (0 %) where the segment is not ``dark`` (:func:`segment_dark`), else the wish."""
    dim = np.where(dark, wish, 0.0)
    return dim, np.where(dark, Reason.TRAFFIC, Reason.DAYLIGHT).astype(np.int8)


def scheduled_heating(
    layout: SiteLayout, now: datetime, zone_ok: BoolArray
) -> tuple[FloatArray, IntArray, BoolArray]:
    """Comfort setpoint while the zone's schedule says occupied (local time, by day type), else
    setback; NaN where the zone's temperature is not known (the safety filter's default)."""
    occupied = occupied_now(layout, now)
    setpoint = np.where(occupied, layout.zones.occupied_c, layout.zones.setback_c)
    reason = np.where(occupied, Reason.OCCUPIED, Reason.SETBACK).astype(np.int8)
    return np.where(zone_ok, setpoint, np.nan), reason, occupied


@dataclass(frozen=True, eq=False)
class Policy:
    """Traffic-adaptive lighting and scheduled heating for one site: the named stages above,
    in order (flow estimate → band → daylight; heating), on the layout's arrays."""

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
            flow_trend_veh_h_s=np.zeros(c),
            segment_demand_veh_h=np.full(self.layout.n_segments, np.nan),
            profile_veh_h=np.full(
                (c, PROFILE_DAY_CLASSES, profile_slots(self.params)), np.nan
            ),
            slot_veh=np.zeros(c),
            slot_covered_s=np.zeros(c),
            lux_dark=np.full(self.layout.n_segments, np.nan),
            band_since_s=np.full(self.layout.n_segments, np.nan),
            segment_flow_veh_h=np.full(self.layout.n_segments, np.nan),
            segment_band=np.zeros(self.layout.n_segments, dtype=np.intp),
            zone_occupied=np.zeros(self.layout.n_zones, dtype=bool),
        )

    def step(
        self,
        state: PolicyState,
        obs: Observation,
        now: datetime,
        forecast: Forecast | None = None,
    ) -> tuple[PolicyState, Commands]:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        lay, par = self.layout, self.params
        t_s = now.timestamp()
        flow = estimate_flow(lay, par, state, obs.counter_veh, obs.counter_ok, t_s)
        profile, slot_id, slot_veh, slot_s = learn_profile(lay, par, state, flow, t_s)
        demand = expected_demand(
            par,
            flow,
            None if forecast is None else forecast.segment_flow_veh_h,
            profile_demand(lay, par, profile, t_s),
        )
        band, band_since, wish = select_band(
            lay, par, flow, state.segment_band, state.band_since_s, t_s, demand
        )
        sun_deg = obs.sun_elevation_deg
        if not np.isfinite(sun_deg):  # an observation built without the sun: compute it here
            sun_deg = sun_elevation_deg(lay, now)
        wish, curfewed = apply_curfews(lay, wish, band, now)
        dark, lux_dark = lux_switching(
            lay, obs.segment_lux, state.lux_dark, segment_dark(lay, par, now, sun_deg)
        )
        dim, dim_reason = daylight_off(wish, dark)
        dim_reason = np.where(curfewed & (dim_reason == Reason.TRAFFIC), Reason.CURFEW, dim_reason)
        setpoint, sp_reason, occupied = scheduled_heating(lay, now, obs.zone_ok)
        new_state = replace(
            state,
            last_count_veh=flow.last_count_veh,
            last_count_s=flow.last_count_s,
            flow_veh_h=flow.flow_veh_h,
            flow_s=flow.flow_s,
            flow_span_s=flow.flow_span_s,
            flow_trend_veh_h_s=flow.flow_trend_veh_h_s,
            segment_demand_veh_h=np.where(flow.segment_known, demand, np.nan),
            profile_veh_h=profile,
            slot_id=slot_id,
            slot_veh=slot_veh,
            slot_covered_s=slot_s,
            lux_dark=lux_dark,
            band_since_s=band_since,
            sun_elevation_deg=sun_deg,
            segment_flow_veh_h=flow.segment_flow_veh_h,
            segment_band=band,
            zone_occupied=occupied,
        )
        return new_state, Commands(
            dim_pct=dim.astype(float),
            dim_reason=dim_reason,
            setpoint_c=setpoint.astype(float),
            setpoint_reason=sp_reason,
        )
