"""The simulated plant: traffic counters, luminaires and heated zones as one numpy state.

Rule: :func:`plant_step` is a pure function ``(layout, params, state, dim_pct, setpoint_c, now,
rng) -> state``. No I/O, no clock, no asyncio; time is an argument and randomness comes only from
the ``rng`` passed in. Arrays are indexed exactly like the :class:`SiteLayout` (segment ``S``,
counter channel ``C``, zone ``Z``, building ``N``) and every step is a few vector operations —
no Python loop over luminaires, channels or zones. A step that is given bad input raises and
changes nothing (the state is frozen).

Theory of operation
-------------------
The commands passed to a step (``dim_pct``, ``setpoint_c``) are held over the whole interval
``(state.ts, now]`` and become the state's "last" commands.

* **Traffic**: each channel's flow is ``flow_veh_h(typical profile, local time, peak)`` where the
  peak comes from the road type of the segment(s) the channel feeds (the largest, from
  ``ROAD_PEAK_FLOW_VEH_H``). Vehicles in the interval are the flow integrated over sub-steps;
  with ``poisson=True`` the count is drawn from a Poisson law with that mean, else it is the mean.
  ``counter_veh`` is a cumulative float that never wraps; devices wrap it on encoding.
* **Luminaires**: ``power_w = working luminaires × luminaire_power_w(dim_pct)``, the one model of
  :func:`laterne.models.lighting.luminaire_power_w` with the segment's ``standby_share`` (0 when
  off, else ``standby + (rated − standby) · dim/100``; CLO drivers as new luminaires). Lamps out
  (``lamps_out``, e.g. injected by the emulator) draw nothing. Energy is power × interval, exactly.
* **Zones**: one resistance-capacitance node each, ``C dT/dt = UA (T_out − T) + Q``, with
  ``C = 150 kJ/(K·m²)·area``, ``UA = 2.5 W/(K·m²)·area`` and a local proportional thermostat
  ``Q = clip(K (setpoint − T), 0, 100 W/m²·area)``, ``K`` giving full power at 1 K error.
  Integrated by explicit Euler with sub-steps of at most ``max_substep_s`` (60 s; the fastest time
  constant, ``C / K``, is 1,500 s), so accelerated clocks with steps of hours stay stable.
  Outdoor temperature comes from the typical weather year at each sub-step's midpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final

import numpy as np

from laterne.models.layout import SiteLayout
from laterne.models.site import RoadType, SiteConfig
from laterne.models.values import FloatArray

from .traffic import (
    ROAD_PEAK_FLOW_VEH_H,
    Datetime64Array,
    TrafficProfile,
    flow_veh_h,
    typical_profile,
)
from .weather import Weather, load_weather, outdoor_temp_c, outdoor_temp_c_array, utc64

__all__ = [
    "HEATING_MAX_W_M2",
    "MAX_SUBSTEP_S",
    "THERMOSTAT_FULL_POWER_ERROR_K",
    "ZONE_CAPACITY_J_K_M2",
    "ZONE_UA_W_K_M2",
    "PlantParams",
    "PlantState",
    "building_heating_kw",
    "channel_peak_flow_veh_h",
    "initial_state",
    "make_params",
    "plant_outdoor_temp_c",
    "plant_step",
    "segment_power_w",
    "zone_heating_w",
]

#: heat capacity of a zone per floor area [J/(K·m²)]
ZONE_CAPACITY_J_K_M2: Final = 150e3
#: heat loss coefficient of a zone per floor area [W/(K·m²)]
ZONE_UA_W_K_M2: Final = 2.5
#: heating capacity of a zone per floor area [W/m²]
HEATING_MAX_W_M2: Final = 100.0
#: the local thermostat gives full heating power at this error [K]
THERMOSTAT_FULL_POWER_ERROR_K: Final = 1.0
#: longest integration sub-step [s]
MAX_SUBSTEP_S: Final = 60.0

_S_PER_H: Final = 3600.0
_J_PER_KWH: Final = 3.6e6


@dataclass(frozen=True, eq=False)
class PlantParams:
    """Constant physical parameters of one site's plant, indexed like the layout.

    Parameters
    ----------
    channel_peak_flow_veh_h : (C,) peak hourly flow of each counter channel [veh/h]
    zone_capacity_j_k : (Z,) heat capacity [J/K]
    zone_ua_w_k : (Z,) heat loss coefficient to outdoors [W/K]
    zone_heating_max_w : (Z,) heating capacity [W]
    thermostat_gain_w_k : (Z,) proportional gain of the local thermostat [W/K]
    traffic : typical daily traffic shape
    weather : typical weather year
    poisson : draw vehicle counts from a Poisson law (True) or add the expectation (False)
    max_substep_s : longest integration sub-step [s]
    """

    channel_peak_flow_veh_h: FloatArray
    zone_capacity_j_k: FloatArray
    zone_ua_w_k: FloatArray
    zone_heating_max_w: FloatArray
    thermostat_gain_w_k: FloatArray
    traffic: TrafficProfile
    weather: Weather
    poisson: bool = True
    max_substep_s: float = MAX_SUBSTEP_S

    def __post_init__(self) -> None:
        if not self.max_substep_s > 0:
            raise ValueError("max_substep_s must be positive")


@dataclass(frozen=True, eq=False)
class PlantState:
    """The plant at one instant. Never mutated: :func:`plant_step` returns a new one.

    Parameters
    ----------
    ts : aware UTC time of this state
    counter_veh : (C,) cumulative vehicles per channel [veh], a float that never wraps
    segment_energy_wh : (S,) cumulative lighting energy per segment [Wh]
    zone_temp_c : (Z,) zone air temperature [°C]
    building_heating_energy_kwh : (N,) cumulative heating energy per building [kWh]
    dim_pct : (S,) dim level in force since the last step [%]
    setpoint_c : (Z,) thermostat setpoint in force since the last step [°C]
    """

    ts: datetime
    counter_veh: FloatArray
    segment_energy_wh: FloatArray
    zone_temp_c: FloatArray
    building_heating_energy_kwh: FloatArray
    dim_pct: FloatArray
    setpoint_c: FloatArray

    def __post_init__(self) -> None:
        if self.ts.tzinfo is None:
            raise ValueError("PlantState.ts must be timezone-aware")


# ------------------------------------------------------------------------------ parameters


def channel_peak_flow_veh_h(layout: SiteLayout, road_types: Sequence[RoadType]) -> FloatArray:
    """Peak flow of each channel: the largest road-type peak of the segments it feeds [veh/h].

    ``road_types`` is indexed by segment, like ``layout.segments.ids``.
    """
    if len(road_types) != layout.n_segments:
        raise ValueError(f"expected {layout.n_segments} road types, got {len(road_types)}")
    seg_peak = np.array([ROAD_PEAK_FLOW_VEH_H[r] for r in road_types], dtype=float)
    peak = np.zeros(layout.n_channels)
    np.maximum.at(peak, layout.channels.pair_channel, seg_peak[layout.channels.pair_segment])
    return peak


def make_params(
    site: SiteConfig,
    layout: SiteLayout,
    *,
    traffic: TrafficProfile | None = None,
    weather: Weather | None = None,
    poisson: bool = True,
) -> PlantParams:
    """Plant parameters of a site from its config (road types) and layout (areas, channels).

    ``traffic`` and ``weather`` default to the packaged measured profile and typical year.
    """
    area = layout.zones.area_m2
    return PlantParams(
        channel_peak_flow_veh_h=channel_peak_flow_veh_h(
            layout, [s.road_type for s in site.segments]
        ),
        zone_capacity_j_k=ZONE_CAPACITY_J_K_M2 * area,
        zone_ua_w_k=ZONE_UA_W_K_M2 * area,
        zone_heating_max_w=HEATING_MAX_W_M2 * area,
        thermostat_gain_w_k=HEATING_MAX_W_M2 * area / THERMOSTAT_FULL_POWER_ERROR_K,
        traffic=traffic if traffic is not None else typical_profile(),
        weather=weather if weather is not None else load_weather(),
        poisson=poisson,
    )


def initial_state(
    layout: SiteLayout,
    start: datetime,
    *,
    counter_offset_veh: float = 0.0,
    zone_temp_c: FloatArray | None = None,
) -> PlantState:
    """The plant at ``start``: dim levels at the segments' fail-safe, setpoints at the zones'
    default, zones at their default setpoint unless ``zone_temp_c`` is given, counters at
    ``counter_offset_veh`` (e.g. just below 2³² to exercise a device's wrap) and energies at 0.
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    temp = layout.zones.default_c.copy() if zone_temp_c is None else np.array(zone_temp_c, float)
    if temp.shape != (layout.n_zones,):
        raise ValueError(f"zone_temp_c must have shape ({layout.n_zones},)")
    return PlantState(
        ts=start.astimezone(UTC),
        counter_veh=np.full(layout.n_channels, float(counter_offset_veh)),
        segment_energy_wh=np.zeros(layout.n_segments),
        zone_temp_c=temp,
        building_heating_energy_kwh=np.zeros(len(layout.buildings.ids)),
        dim_pct=layout.segments.failsafe_dim_pct.copy(),
        setpoint_c=layout.zones.default_c.copy(),
    )


# -------------------------------------------------------------------------------- readouts


def segment_power_w(
    layout: SiteLayout, dim_pct: FloatArray, lamps_out: FloatArray | None = None
) -> FloatArray:
    """Electrical power of each segment at the given dim levels [W], ``lamps_out`` (S,)
    luminaires per segment drawing nothing (default none)."""
    segs = layout.segments
    working = segs.luminaires if lamps_out is None else np.maximum(segs.luminaires - lamps_out, 0)
    out: FloatArray = working * segs.luminaire_power_w(dim_pct)
    return out


def zone_heating_w(
    params: PlantParams, zone_temp_c: FloatArray, setpoint_c: FloatArray
) -> FloatArray:
    """Heating power of each zone's local thermostat [W]."""
    q: FloatArray = np.clip(
        params.thermostat_gain_w_k * (setpoint_c - zone_temp_c), 0.0, params.zone_heating_max_w
    )
    return q


def building_heating_kw(layout: SiteLayout, params: PlantParams, state: PlantState) -> FloatArray:
    """Heating power of each building at the state's instant [kW]."""
    q_w = zone_heating_w(params, state.zone_temp_c, state.setpoint_c)
    out: FloatArray = (
        np.bincount(layout.zones.building, weights=q_w, minlength=len(layout.buildings.ids)) / 1e3
    )
    return out


def plant_outdoor_temp_c(params: PlantParams, state: PlantState) -> float:
    """Outdoor temperature at the state's instant [°C] (one weather station for the site)."""
    return outdoor_temp_c(params.weather, state.ts)


# ------------------------------------------------------------------------------------ step


def _local_times(
    times_utc: Datetime64Array, start: datetime, end: datetime, layout: SiteLayout
) -> Datetime64Array:
    """Naive local wall-clock times for naive-UTC ``times_utc`` lying within ``[start, end]``.

    One vector addition when the UTC offset is the same at both ends (almost always); element by
    element only for an interval that spans a daylight-saving change.
    """
    tz = layout.timezone
    off0 = start.astimezone(tz).utcoffset()
    off1 = end.astimezone(tz).utcoffset()
    if off0 is not None and off0 == off1:
        shifted: Datetime64Array = times_utc + np.timedelta64(off0)
        return shifted
    return np.array(
        [
            t.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None)
            for t in times_utc.astype(datetime).tolist()
        ],
        dtype="datetime64[us]",
    )


def _check_shape(name: str, a: FloatArray, n: int) -> FloatArray:
    arr = np.asarray(a, dtype=float)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def plant_step(
    layout: SiteLayout,
    params: PlantParams,
    state: PlantState,
    dim_pct: FloatArray,
    setpoint_c: FloatArray,
    now: datetime,
    rng: np.random.Generator,
    *,
    lamps_out: FloatArray | None = None,
) -> PlantState:
    """Advance the plant from ``state.ts`` to ``now`` with the given commands held throughout.

    Parameters
    ----------
    dim_pct : (S,) dim level of each segment over the interval [%]
    setpoint_c : (Z,) setpoint of each zone's thermostat over the interval [°C]
    now : aware time, not before ``state.ts``
    rng : source of the Poisson vehicle counts (unused when ``params.poisson`` is False)
    lamps_out : (S,) luminaires per segment that are out over the interval (default none)

    Raises
    ------
    ValueError
        on a naive or earlier ``now``, or commands of the wrong shape or not finite.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    dt_s = (now - state.ts).total_seconds()
    if dt_s < 0:
        raise ValueError(
            f"now ({now.isoformat()}) is before the plant state ({state.ts.isoformat()})"
        )
    dim = _check_shape("dim_pct", dim_pct, layout.n_segments)
    sp = _check_shape("setpoint_c", setpoint_c, layout.n_zones)
    if dt_s == 0:
        return replace(state, dim_pct=dim.copy(), setpoint_c=sp.copy())

    n_sub = max(1, math.ceil(dt_s / params.max_substep_s))
    h_s = dt_s / n_sub
    h_us = h_s * 1e6
    mids_utc = utc64(state.ts) + ((np.arange(n_sub) + 0.5) * h_us).astype("timedelta64[us]")

    # traffic: expected vehicles = flow integrated over the sub-steps (midpoint rule)
    local = _local_times(mids_utc, state.ts, now, layout)
    flow = flow_veh_h(params.traffic, local[:, None], params.channel_peak_flow_veh_h)
    expected_veh = flow.sum(axis=0) * (h_s / _S_PER_H)
    vehicles = rng.poisson(expected_veh).astype(float) if params.poisson else expected_veh

    # lighting: power held over the interval
    energy_wh = state.segment_energy_wh + segment_power_w(layout, dim, lamps_out) * (
        dt_s / _S_PER_H
    )

    # zones: explicit Euler on sub-steps, vectorised over zones
    t_out = outdoor_temp_c_array(params.weather, mids_utc)
    temp = state.zone_temp_c.copy()
    heat_j = np.zeros(layout.n_zones)
    for k in range(n_sub):
        q_w = zone_heating_w(params, temp, sp)
        gain_w = params.zone_ua_w_k * (t_out[k] - temp) + q_w
        temp = temp + h_s * gain_w / params.zone_capacity_j_k
        heat_j += q_w * h_s
    bld_kwh = (
        np.bincount(layout.zones.building, weights=heat_j, minlength=len(layout.buildings.ids))
        / _J_PER_KWH
    )

    return PlantState(
        ts=now,
        counter_veh=state.counter_veh + vehicles,
        segment_energy_wh=energy_wh,
        zone_temp_c=temp,
        building_heating_energy_kwh=state.building_heating_energy_kwh + bld_kwh,
        dim_pct=dim.copy(),
        setpoint_c=sp.copy(),
    )
