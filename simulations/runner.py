"""The second shell around the one decision: plant → observation → decide → plant, in process.

Rule: :func:`run` is the live runtime's loop without sockets, clocks or a history: at each step
``t_k = start + k · step_s`` it builds the :class:`Observation` the live shell would build from
the emulated devices at ``t_k``, calls the same :func:`~laterne.controller.cycle.decide` (policy,
safety filter, post-condition), and advances the plant to ``t_{k+1}`` holding what the devices
would hold. Pure apart from the seeded random generator it creates; no I/O; every per-step
quantity is recorded in numpy arrays of a :class:`SimulationResult`.

Theory of operation
-------------------
* **The same observation.** Counts, temperatures and the outdoor temperature pass through
  :class:`~laterne.simulations.readout.PointReadout`: the emulator's encoding (u32 counters wrap
  modulo 2³², integers round, ``f32`` rounds to single precision, scale, offset, unit factor)
  and the drivers' decoding and range check. A value outside its point's ``[min, max]`` is not
  usable, as in the live shell. The sun is taken from an ephemeris precomputed for the whole run
  with :func:`~laterne.controller.sun.sun_elevation_series`, the function the live shell's
  scalar :func:`~laterne.controller.sun.sun_elevation_deg` is made of, so it is the same number.
  Every reading is fresh at ``t_k`` (as when every device is polled every cycle); segment
  controllers always answer.
* **The same plant.** The commands a step holds are the ones the devices would hold after the
  driver wrote them: a segment controller with ``scale: 0.1`` holds 42.35 % as 42.4 %
  (:meth:`PointReadout.held`), and the plant draws that level's power. The plant's arithmetic is
  :func:`~laterne.simulations.plant.plant_step`'s, reorganised so that everything that does not
  depend on the commands is computed for many steps at once, in chunks: the local times, the
  traffic flows, the Poisson draws (one call per chunk; numpy's generator gives the same numbers
  as one call per step), the cumulative counts, the outdoor temperatures at every integration
  sub-step. Per step only the zones' Euler integration remains (it depends on the setpoints).
  The result is bit-identical to stepping the plant with ``plant_step`` (tested), which is what
  the emulator does; ``tests/test_twin.py`` runs one trace through the live runtime on real
  Modbus/OPC-UA and through this runner and finds the same commands, cycle by cycle.
* **Time.** ``run`` drops a last partial step. :func:`params_for_step` adapts a site's policy
  parameters to the step (the default): one cycle per step, ``stale_after_s`` at least two steps
  (an estimate refreshed once per step must not expire between two steps — it would restart
  every step and, with steps shorter than ``flow_window_s``, stay cold, so no band would ever
  step down), and the ramp limit at the same rate per second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from laterne.controller.cycle import ControlPolicy, decide
from laterne.controller.policy import Policy, sum_to_segments
from laterne.controller.sun import sun_elevation_series
from laterne.models.layout import SiteLayout, day_type_of
from laterne.models.site import PolicyParams, SiteConfig, Tariff
from laterne.models.values import BoolArray, Commands, FloatArray, IntArray, Observation, Override

from .plant import PlantParams, PlantState, initial_state, make_params, segment_power_w
from .readout import PointReadout
from .traffic import flow_veh_h
from .weather import outdoor_temp_c_array, utc64

__all__ = [
    "EMULATOR_COUNTER_OFFSET_VEH",
    "SimulationError",
    "SimulationResult",
    "params_for_step",
    "run",
    "site_policy",
]

S = TypeVar("S")

#: the counters' start value of :class:`~laterne.simulations.emulator.SiteEmulator` (just below
#: 2³², so a u32 counter wraps early in a run); the runner's default, so both plants agree
EMULATOR_COUNTER_OFFSET_VEH: Final = float(2**32 - 5000)
#: elements (steps × sub-steps × channels) precomputed at once
_CHUNK_ELEMENTS: Final = 1 << 21
_S_PER_H: Final = 3600.0
_J_PER_KWH: Final = 3.6e6


class SimulationError(ValueError):
    """A run that cannot be made: a naive or empty span, a step that is not positive, a layout
    without the plant parameters it needs."""


@dataclass(frozen=True, eq=False)
class SimulationResult(Generic[S]):
    """One run, step by step: ``K`` steps, segments ``S``, zones ``Z``, buildings ``N``.

    Step ``k`` is the decision at ``ts_s[k]`` and the interval ``[ts_s[k], ts_s[k] + step_s)``
    over which the plant holds its commands.

    Parameters
    ----------
    policy_name : what decided (``Policy``, ``FullPower``, ...)
    layout, params, tariff : the site, the policy parameters the decisions used, its tariff
    start : aware UTC time of the first step
    step_s : length of a step [s]
    ts_s : (K,) decision times [s since the Unix epoch]
    sun_elevation_deg : (K,) apparent solar elevation at each decision [°]
    outdoor_temp_c : (K,) the plant's outdoor temperature at each decision [°C]
    dim_pct, dim_reason : (K, S) commanded dim levels [%] and their :class:`Reason` codes
    setpoint_c, setpoint_reason : (K, Z) commanded setpoints [°C] and their reason codes
    zone_temp_c : (K, Z) the plant's zone temperatures at each decision [°C]
    zone_occupied : (K, Z) occupied by its schedule at each decision
    segment_power_w : (K, S) electrical power over each step, at the level the controller held
    segment_flow_veh_h : (K, S) the traffic the segment's counters counted over each step
        [veh/h]: what the step's lighting class is judged against (``controller.compliance``)
    building_heating_kwh : (K, N) heating energy of each step
    final_plant : the plant at the end
    final_state : the policy's state after the last decision
    """

    policy_name: str
    layout: SiteLayout
    params: PolicyParams
    tariff: Tariff
    start: datetime
    step_s: float
    ts_s: FloatArray
    sun_elevation_deg: FloatArray
    outdoor_temp_c: FloatArray
    dim_pct: FloatArray
    dim_reason: IntArray
    setpoint_c: FloatArray
    setpoint_reason: IntArray
    zone_temp_c: FloatArray
    zone_occupied: BoolArray
    segment_power_w: FloatArray
    segment_flow_veh_h: FloatArray
    building_heating_kwh: FloatArray
    final_plant: PlantState
    final_state: S

    @property
    def n_steps(self) -> int:
        return int(self.ts_s.size)

    @property
    def end(self) -> datetime:
        """The end of the last step (aware UTC)."""
        return self.start + self.n_steps * timedelta(seconds=self.step_s)

    @property
    def hours(self) -> float:
        """Length of the run [h]."""
        return self.n_steps * self.step_s / _S_PER_H

    @property
    def segment_energy_wh(self) -> FloatArray:
        """(K, S) lighting energy of each step [Wh] (the plant's own increments)."""
        out: FloatArray = self.segment_power_w * (self.step_s / _S_PER_H)
        return out

    @property
    def building_heating_kw(self) -> FloatArray:
        """(K, N) mean heating power of each step [kW]."""
        out: FloatArray = self.building_heating_kwh / (self.step_s / _S_PER_H)
        return out


def params_for_step(params: PolicyParams, step_s: float) -> PolicyParams:
    """A site's policy parameters for deciding once every ``step_s`` (see the module's rule)."""
    ramp = params.max_dim_step_pct
    if step_s != params.cycle_s:
        ramp = min(100.0, ramp * step_s / params.cycle_s)
    return params.model_copy(
        update={
            "cycle_s": float(step_s),
            "stale_after_s": max(params.stale_after_s, 2.0 * step_s),
            "max_dim_step_pct": ramp,
        }
    )


@dataclass(frozen=True, eq=False)
class _Readouts:
    channels: PointReadout
    zones: PointReadout
    outdoor: PointReadout
    controllers: PointReadout
    setpoints: PointReadout

    @classmethod
    def of(cls, site: SiteConfig | None, layout: SiteLayout) -> _Readouts:
        if site is None:
            outdoor = np.array([r is not None for r in layout.buildings.outdoor], dtype=bool)
            return cls(
                PointReadout.ideal(np.ones(layout.n_channels, dtype=bool)),
                PointReadout.ideal(np.ones(layout.n_zones, dtype=bool)),
                PointReadout.ideal(outdoor),
                PointReadout.ideal(np.ones(layout.n_segments, dtype=bool)),
                PointReadout.ideal(np.ones(layout.n_zones, dtype=bool)),
            )
        return cls(
            PointReadout.of(site, layout.channels.refs, "veh"),
            PointReadout.of(site, layout.zones.temperature, "temp_c"),
            PointReadout.of(site, layout.buildings.outdoor, "temp_c"),
            PointReadout.of(site, layout.segments.controller, "pct"),
            PointReadout.of(site, layout.zones.setpoint, "temp_c"),
        )


@dataclass(frozen=True, eq=False)
class _Chunk:
    """What the steps ``k0 .. k0 + n - 1`` need that does not depend on the commands."""

    k0: int
    counter_veh: FloatArray  # (n, C) observed counts
    counter_ok: BoolArray  # (n, C)
    outdoor_temp_c: FloatArray  # (n,) the plant's, at t_k
    outdoor_seen_c: FloatArray  # (n, N) as observed per building
    t_out_sub_c: FloatArray  # (n, n_sub) at each sub-step's midpoint
    occupied: BoolArray  # (n, Z)
    counter_end_veh: FloatArray  # (C,) the plant's cumulative count at t_{k0 + n}
    segment_flow_veh_h: FloatArray  # (n, S) the vehicles counted over each step, per hour


def _local_offsets_us(layout: SiteLayout, t64: npt.NDArray[np.datetime64]) -> npt.NDArray[np.int64]:
    """UTC offset of the site's zone at each naive-UTC time [µs]."""
    tz = layout.timezone
    out = np.empty(t64.size, dtype=np.int64)
    for i, t in enumerate(t64.astype(datetime).tolist()):
        off = t.replace(tzinfo=UTC).astimezone(tz).utcoffset()
        out[i] = 0 if off is None else round(off.total_seconds() * 1e6)
    return out


def _chunks(
    layout: SiteLayout,
    plant: PlantParams,
    readouts: _Readouts,
    start64: np.datetime64,
    step_us: int,
    n_steps: int,
    n_sub: int,
    counter0_veh: FloatArray,
    rng: np.random.Generator,
) -> Iterator[_Chunk]:
    """The precomputed inputs, chunk by chunk, drawing the plant's random counts in order."""
    dt_s = step_us / 1e6
    h_s = dt_s / n_sub
    sub_offsets = ((np.arange(n_sub) + 0.5) * (h_s * 1e6)).astype("timedelta64[us]")
    per_chunk = max(1, _CHUNK_ELEMENTS // (n_sub * max(1, layout.n_channels)))
    counter = counter0_veh
    tz = layout.timezone
    n_bld = len(layout.buildings.ids)
    for k0 in range(0, n_steps, per_chunk):
        n = min(per_chunk, n_steps - k0)
        t64 = start64 + (np.arange(k0, k0 + n + 1) * step_us).astype("timedelta64[us]")
        off_us = _local_offsets_us(layout, t64)
        mids = t64[:-1, None] + sub_offsets[None, :]  # (n, n_sub) naive UTC
        local = mids + off_us[:-1, None].astype("timedelta64[us]")
        for i in np.flatnonzero(off_us[:-1] != off_us[1:]):  # a daylight-saving change inside
            local[i] = np.array(
                [
                    t.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None)
                    for t in mids[i].astype(datetime).tolist()
                ],
                dtype="datetime64[us]",
            )
        flow = flow_veh_h(plant.traffic, local[..., None], plant.channel_peak_flow_veh_h)
        expected = flow.sum(axis=1) * (h_s / _S_PER_H)
        vehicles = rng.poisson(expected).astype(float) if plant.poisson else expected
        cumulative = np.cumsum(np.concatenate([counter[None, :], vehicles]), axis=0)
        counter = cumulative[-1]
        seen, ok = readouts.channels.seen(cumulative[:-1])

        t_out = outdoor_temp_c_array(plant.weather, t64[:-1])
        outdoor_seen, _ = readouts.outdoor.seen(np.broadcast_to(t_out[:, None], (n, n_bld)))

        local_t = t64[:-1] + off_us[:-1].astype("timedelta64[us]")
        days = local_t.astype("datetime64[D]")
        minute = ((local_t - days).astype("timedelta64[m]").astype(np.int64)).astype(np.intp)
        local_days: list[date] = days.tolist()
        day_types = {d: day_type_of(layout, d) for d in set(local_days)}
        day_type = np.array([day_types[d] for d in local_days], dtype=np.intp)
        occupied = layout.zones.occupancy[:, day_type, minute].T

        yield _Chunk(
            k0=k0,
            counter_veh=seen,
            counter_ok=ok,
            outdoor_temp_c=t_out,
            outdoor_seen_c=outdoor_seen,
            t_out_sub_c=outdoor_temp_c_array(plant.weather, mids),
            occupied=np.ascontiguousarray(occupied),
            counter_end_veh=counter,
            segment_flow_veh_h=sum_to_segments(layout, vehicles * (_S_PER_H / dt_s)),
        )


def site_policy(site: SiteConfig, step_s: float, layout: SiteLayout | None = None) -> Policy:
    """The site's traffic-adaptive policy with :func:`params_for_step` parameters."""
    lay = layout if layout is not None else SiteLayout.from_config(site)
    return Policy(lay, params_for_step(site.policy, step_s))


def run(
    site: SiteConfig | SiteLayout,
    policy: ControlPolicy[S],
    *,
    start: datetime,
    end: datetime,
    step_s: float = 900.0,
    seed: int = 1,
    overrides: Sequence[Override] = (),
    params: PolicyParams | None = None,
    plant: PlantParams | None = None,
    tariff: Tariff | None = None,
    counter_offset_veh: float = EMULATOR_COUNTER_OFFSET_VEH,
    zone_temp_c: FloatArray | None = None,
    layout: SiteLayout | None = None,
    name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SimulationResult[S]:
    """Simulate ``policy`` on the site's plant from ``start`` to ``end`` every ``step_s``.

    Parameters
    ----------
    site : the site file (devices' encodings observed exactly), or only its layout (ideal
        sensors; ``plant`` and ``params`` are then required)
    policy : what decides, built with the same ``params`` (e.g. :func:`site_policy`, or a
        baseline of :mod:`laterne.controller.baselines`)
    start, end : aware times; the run has ``floor((end - start) / step_s)`` steps
    step_s : one decision per step [s], a whole number of microseconds
    seed : of the plant's random vehicle counts (the emulator's ``seed``)
    overrides : passed to every decision (each applies while in force)
    params : policy parameters for the decisions, default ``params_for_step(site.policy, step_s)``
    plant : plant parameters, default ``make_params(site, layout)`` (measured traffic shape,
        typical weather year, Poisson counts)
    tariff : default the site's
    counter_offset_veh, zone_temp_c : the plant's initial state (as ``initial_state``)
    layout : the site's layout when the caller has built it already
    name : the result's ``policy_name``, default the policy's class name
    progress : called with (steps done, steps in all) now and then

    Raises
    ------
    SimulationError
        naive times, fewer than one step, a bad step, a layout without ``plant``/``params``.
    SafetyViolation, UnknownOverrideTarget
        from :func:`~laterne.controller.cycle.decide`.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise SimulationError("start and end must be timezone-aware")
    step_us = round(step_s * 1e6)
    if not (math.isfinite(step_s) and step_s > 0) or step_us != step_s * 1e6:
        raise SimulationError(f"step_s must be a positive whole number of microseconds: {step_s}")
    start = start.astimezone(UTC)
    n_steps = int((end - start) // timedelta(microseconds=step_us))
    if n_steps < 1:
        raise SimulationError(f"no whole step of {step_s:g} s between {start} and {end}")

    cfg = site if isinstance(site, SiteConfig) else None
    if layout is None:
        layout = SiteLayout.from_config(site) if isinstance(site, SiteConfig) else site
    if cfg is None and (plant is None or params is None):
        raise SimulationError("a run from a layout alone needs its plant and params")
    if params is None:
        assert cfg is not None
        params = params_for_step(cfg.policy, step_s)
    if plant is None:
        assert cfg is not None
        plant = make_params(cfg, layout)
    if tariff is None:
        tariff = cfg.tariff if cfg is not None else Tariff()
    readouts = _Readouts.of(cfg, layout)

    s_n, z_n, n_bld = layout.n_segments, layout.n_zones, len(layout.buildings.ids)
    plant0 = initial_state(
        layout, start, counter_offset_veh=counter_offset_veh, zone_temp_c=zone_temp_c
    )
    dt_s = step_us / 1e6
    n_sub = max(1, math.ceil(dt_s / plant.max_substep_s))
    h_s = dt_s / n_sub
    start64 = utc64(start)
    ts_us = np.arange(n_steps, dtype=np.int64) * step_us + start64.astype(np.int64)
    ts_s: FloatArray = ts_us / 1e6  # as datetime.timestamp() rounds
    sun = sun_elevation_series(layout, ts_s)

    dim_rec = np.empty((n_steps, s_n))
    dim_reason = np.empty((n_steps, s_n), dtype=np.int8)
    sp_rec = np.empty((n_steps, z_n))
    sp_reason = np.empty((n_steps, z_n), dtype=np.int8)
    temp_rec = np.empty((n_steps, z_n))
    occ_rec = np.empty((n_steps, z_n), dtype=bool)
    power_rec = np.empty((n_steps, s_n))
    flow_rec = np.empty((n_steps, s_n))
    heat_rec = np.empty((n_steps, n_bld))
    outdoor_rec = np.empty(n_steps)

    ua, cap = plant.zone_ua_w_k, plant.zone_capacity_j_k
    gain, q_max = plant.thermostat_gain_w_k, plant.zone_heating_max_w
    zone_building = layout.zones.building
    seg_ok = np.ones(s_n, dtype=bool)
    zero_z = np.zeros(z_n)
    state = policy.initial_state()
    last: Commands = Commands(
        dim_pct=np.full(s_n, np.nan),
        dim_reason=np.zeros(s_n, dtype=np.int8),
        setpoint_c=np.full(z_n, np.nan),
        setpoint_reason=np.zeros(z_n, dtype=np.int8),
    )
    temp = plant0.zone_temp_c.copy()
    energy_wh = plant0.segment_energy_wh.copy()
    heating_kwh = plant0.building_heating_energy_kwh.copy()
    dim_held, sp_held = plant0.dim_pct, plant0.setpoint_c
    counter_end = plant0.counter_veh
    rng = np.random.default_rng(seed)
    step = timedelta(microseconds=step_us)
    report_every = max(1, min(2048, n_steps // 100))

    for chunk in _chunks(
        layout, plant, readouts, start64, step_us, n_steps, n_sub, plant0.counter_veh, rng
    ):
        counter_end = chunk.counter_end_veh
        outdoor_rec[chunk.k0 : chunk.k0 + len(chunk.outdoor_temp_c)] = chunk.outdoor_temp_c
        occ_rec[chunk.k0 : chunk.k0 + len(chunk.outdoor_temp_c)] = chunk.occupied
        flow_rec[chunk.k0 : chunk.k0 + len(chunk.outdoor_temp_c)] = chunk.segment_flow_veh_h
        for j in range(len(chunk.outdoor_temp_c)):
            k = chunk.k0 + j
            now = start + k * step
            zone_seen, zone_ok = readouts.zones.seen(temp)
            obs = Observation(
                ts=now,
                counter_veh=chunk.counter_veh[j],
                counter_ok=chunk.counter_ok[j],
                zone_temp_c=zone_seen,
                zone_ok=zone_ok,
                segment_ok=seg_ok,
                outdoor_temp_c=chunk.outdoor_seen_c[j],
                sun_elevation_deg=float(sun[k]),
            )
            decision = decide(
                policy, layout, params, state, obs, now, overrides=overrides, last_written=last
            )
            state, cmds = decision.state, decision.commands
            last = cmds
            dim_rec[k] = cmds.dim_pct
            dim_reason[k] = cmds.dim_reason
            sp_rec[k] = cmds.setpoint_c
            sp_reason[k] = cmds.setpoint_reason
            temp_rec[k] = temp

            # the plant over [t_k, t_k+1): plant_step's arithmetic, commands as held
            dim_held = readouts.controllers.held(cmds.dim_pct)
            sp_held = readouts.setpoints.held(cmds.setpoint_c)
            power_w = segment_power_w(layout, dim_held)
            power_rec[k] = power_w
            energy_wh = energy_wh + power_w * (dt_s / _S_PER_H)
            t_out = chunk.t_out_sub_c[j]
            heat_j = zero_z  # replaced, never written in place
            for i in range(n_sub):  # each operation as plant_step orders it
                q_w = np.minimum(np.maximum(gain * (sp_held - temp), 0.0), q_max)  # = np.clip
                gain_w = ua * (t_out[i] - temp) + q_w
                temp = temp + h_s * gain_w / cap
                heat_j = heat_j + q_w * h_s
            step_kwh = np.bincount(zone_building, weights=heat_j, minlength=n_bld) / _J_PER_KWH
            heat_rec[k] = step_kwh
            heating_kwh = heating_kwh + step_kwh
            if progress is not None and (k + 1) % report_every == 0:
                progress(k + 1, n_steps)
    if progress is not None:
        progress(n_steps, n_steps)

    final = PlantState(
        ts=start + n_steps * step,
        counter_veh=counter_end,
        segment_energy_wh=energy_wh,
        zone_temp_c=temp,
        building_heating_energy_kwh=heating_kwh,
        dim_pct=np.asarray(dim_held, dtype=float).copy(),
        setpoint_c=np.asarray(sp_held, dtype=float).copy(),
    )
    return SimulationResult(
        policy_name=name if name is not None else type(policy).__name__,
        layout=layout,
        params=params,
        tariff=tariff,
        start=start,
        step_s=dt_s,
        ts_s=ts_s,
        sun_elevation_deg=sun,
        outdoor_temp_c=outdoor_rec,
        dim_pct=dim_rec,
        dim_reason=dim_reason,
        setpoint_c=sp_rec,
        setpoint_reason=sp_reason,
        zone_temp_c=temp_rec,
        zone_occupied=occ_rec,
        segment_power_w=power_rec,
        segment_flow_veh_h=flow_rec,
        building_heating_kwh=heat_rec,
        final_plant=final,
        final_state=state,
    )
