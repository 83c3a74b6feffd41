"""Lamp and driver faults from expected against measured segment power, and burning hours.

Rule: pure — ``(layout, params, state, measured power, commanded level, now) -> step``; no I/O,
no clock, no logging (the runtime logs what a step raised or cleared). Arithmetic is one numpy
pass over the segments; Python only touches the few segments whose fault changed.

Theory of operation
-------------------
The level commanded at one evaluation is the level *in force* until the next; a power reading
taken at ``now`` is judged against the level in force, and only once that level has been held
for ``settle_s`` (the controller, the drivers and the meter have followed it). Expected power is
``luminaires × luminaire_power_w(level)`` — the one luminaire model of
:mod:`laterne.models.lighting`, CLO drivers aged by the segment's burning hours. Only a segment
with a ``power`` point is watched; 0 % (switched off) is not judged.

* ``lamps_out``: measured below ``lamps_out_ratio`` × expected for ``confirm_checks`` judged
  readings in a row; the estimate of lamps out is the missing power over one luminaire's power at
  the level. Cleared after as many readings in a row at or above the ratio. Not judged while the
  segment is ``stuck_dimming`` (a stuck driver's power says nothing about its lamps).
* ``stuck_dimming``: each settled reading is held against the last one (the *anchor*). When the
  expected power moved by at least ``stuck_min_change`` of the segment's full power, the measured
  power must have moved by at least ``stuck_follow_share`` of that, in the same direction;
  ``stuck_changes`` such changes in a row that the power did not follow raise the fault, one that
  it followed clears it.
* ``no_power_reading``: the power point gave no usable (good, fresh, finite) reading for
  ``confirm_checks`` evaluations in a row; one usable reading clears it.
* Burning hours per segment: the time the level in force was above 0 (``burning_h``) and the
  same weighted by the level (``full_power_h``, equivalent hours at 100 %); a gap between two
  evaluations counts for at most ``max_gap_s``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from laterne.models.layout import SiteLayout
from laterne.models.values import BoolArray, FloatArray

__all__ = [
    "Fault",
    "FaultKind",
    "FaultParams",
    "FaultState",
    "FaultStep",
    "evaluate_faults",
    "expected_power_w",
    "initial_fault_state",
]

IntArray = npt.NDArray[np.int64]
_S_PER_H = 3600.0


class FaultKind(StrEnum):
    LAMPS_OUT = "lamps_out"
    STUCK_DIMMING = "stuck_dimming"
    NO_POWER_READING = "no_power_reading"


@dataclass(frozen=True, slots=True)
class FaultParams:
    """Thresholds of the fault detection (see the module's theory of operation)."""

    lamps_out_ratio: float = 0.85  # measured below this share of expected: lamps out
    settle_s: float = 60.0  # a level is judged once held this long [s]
    confirm_checks: int = 3  # readings in a row that raise (or clear) a fault
    stuck_min_change: float = 0.10  # change of expected power, share of full power, to judge
    stuck_follow_share: float = 0.3  # share of that change the measured power must follow
    stuck_changes: int = 2  # level changes in a row not followed: stuck
    max_gap_s: float = 900.0  # longest gap between evaluations that counts as burning [s]

    def __post_init__(self) -> None:
        if not 0 < self.lamps_out_ratio < 1:
            raise ValueError("lamps_out_ratio must lie in (0, 1)")
        if self.confirm_checks < 1 or self.stuck_changes < 1:
            raise ValueError("confirm_checks and stuck_changes must be at least 1")
        if self.settle_s < 0 or self.max_gap_s < 0:
            raise ValueError("settle_s and max_gap_s must not be negative")
        if not 0 < self.stuck_min_change <= 1 or not 0 < self.stuck_follow_share < 1:
            raise ValueError("stuck_min_change must lie in (0, 1], stuck_follow_share in (0, 1)")


@dataclass(frozen=True, slots=True)
class Fault:
    """One open fault of one segment: first raised at ``since``, last confirmed at ``last_seen``.
    ``lamps_out`` is the estimate of a ``lamps_out`` fault; the powers are of ``last_seen``."""

    segment_id: str
    kind: FaultKind
    since: datetime
    last_seen: datetime
    detail: str
    lamps_out: int | None = None
    expected_power_w: float | None = None
    measured_power_w: float | None = None


@dataclass(frozen=True, eq=False)
class FaultState:
    """What the detection carries from one evaluation to the next, indexed by segment (S).
    Never mutated: :func:`evaluate_faults` returns a new one."""

    ts: datetime | None  # last evaluation; None before the first
    level_pct: FloatArray  # level in force since ``ts`` (NaN: unknown) [%]
    level_held_s: FloatArray  # how long the level in force had been held at ``ts`` [s]
    burning_h: FloatArray  # hours lit [h]
    full_power_h: FloatArray  # hours lit weighted by the level: equivalent hours at 100 % [h]
    lamps_bad: IntArray  # lamps_out: judged readings in a row below the ratio
    lamps_good: IntArray  # ... and at or above it
    missing: IntArray  # evaluations in a row without a usable power reading
    anchor_expected_w: FloatArray  # the stuck check's last settled reading (NaN: none)
    anchor_measured_w: FloatArray
    stuck_misses: IntArray  # level changes in a row the power did not follow
    faults: tuple[Fault, ...] = ()  # open faults, by segment then kind

    @property
    def by_segment(self) -> Mapping[str, tuple[Fault, ...]]:
        out: dict[str, list[Fault]] = {}
        for f in self.faults:
            out.setdefault(f.segment_id, []).append(f)
        return MappingProxyType({k: tuple(v) for k, v in out.items()})


@dataclass(frozen=True, eq=False)
class FaultStep:
    """One evaluation: the new state and the faults it opened and closed (for the log)."""

    state: FaultState
    raised: tuple[Fault, ...] = field(default=())
    cleared: tuple[Fault, ...] = field(default=())


def initial_fault_state(layout: SiteLayout) -> FaultState:
    """Nothing known, nothing burnt, no fault."""
    n = layout.n_segments
    zeros_i = np.zeros(n, dtype=np.int64)
    return FaultState(
        ts=None,
        level_pct=np.full(n, np.nan),
        level_held_s=np.zeros(n),
        burning_h=np.zeros(n),
        full_power_h=np.zeros(n),
        lamps_bad=zeros_i,
        lamps_good=zeros_i,
        missing=zeros_i,
        anchor_expected_w=np.full(n, np.nan),
        anchor_measured_w=np.full(n, np.nan),
        stuck_misses=zeros_i,
    )


def expected_power_w(layout: SiteLayout, dim_pct: FloatArray, burning_h: FloatArray) -> FloatArray:
    """What each segment should draw at ``dim_pct`` with every lamp working [W]."""
    return layout.segments.power_w(dim_pct, burning_h)


def _check(name: str, a: FloatArray, n: int) -> FloatArray:
    arr = np.asarray(a, dtype=float)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    return arr


def evaluate_faults(
    layout: SiteLayout,
    params: FaultParams,
    state: FaultState,
    power_w: FloatArray,
    dim_pct: FloatArray,
    now: datetime,
) -> FaultStep:
    """Judge the power read at ``now`` against the level in force, and take ``dim_pct`` as the
    level in force from ``now`` on.

    Parameters
    ----------
    power_w : (S,) measured power of each segment, NaN where there is no usable reading [W]
    dim_pct : (S,) level commanded at ``now`` (NaN: unknown) [%]
    now : aware time, not before ``state.ts``

    Raises
    ------
    ValueError
        on a naive or earlier ``now`` or arrays of the wrong shape (nothing changes).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    n = layout.n_segments
    measured = _check("power_w", power_w, n)
    commanded = _check("dim_pct", dim_pct, n)
    dt_s = 0.0 if state.ts is None else (now - state.ts).total_seconds()
    if dt_s < 0:
        raise ValueError(f"now ({now.isoformat()}) is before the fault state's time")
    segs = layout.segments
    watched: BoolArray = np.array([p is not None for p in segs.power], dtype=bool)

    # burning hours over (ts, now], at the level in force
    level = state.level_pct
    lit = np.nan_to_num(level, nan=0.0) > 0.0
    dt_h = min(dt_s, params.max_gap_s) / _S_PER_H
    burning_h = state.burning_h + np.where(lit, dt_h, 0.0)
    full_power_h = state.full_power_h + np.where(lit, dt_h * np.clip(level, 0, 100) / 100.0, 0.0)

    held_s = state.level_held_s + dt_s
    fresh = np.isfinite(measured)
    settled = watched & fresh & lit & (held_s >= params.settle_s)
    expected = np.where(lit, expected_power_w(layout, np.nan_to_num(level), burning_h), 0.0)
    full_w = expected_power_w(layout, np.full(n, 100.0), burning_h)

    # no power reading
    missing = np.where(watched & ~fresh, state.missing + 1, 0)

    # stuck dimming: against the anchor
    has_anchor = np.isfinite(state.anchor_expected_w)
    d_exp = expected - np.nan_to_num(state.anchor_expected_w)
    d_meas = measured - np.nan_to_num(state.anchor_measured_w)
    change = settled & has_anchor & (np.abs(d_exp) >= params.stuck_min_change * full_w)
    with np.errstate(divide="ignore", invalid="ignore"):
        followed = np.where(change, d_meas / d_exp, 1.0) >= params.stuck_follow_share
    stuck_misses = np.where(
        change, np.where(followed, 0, state.stuck_misses + 1), state.stuck_misses
    )
    anchor_exp = np.where(settled, expected, state.anchor_expected_w)
    anchor_meas = np.where(settled, measured, state.anchor_measured_w)

    old = {(f.segment_id, f.kind): f for f in state.faults}
    index = {sid: i for i, sid in enumerate(segs.ids)}
    was: dict[FaultKind, BoolArray] = {k: np.zeros(n, dtype=bool) for k in FaultKind}
    for sid, kind in old:
        was[kind][index[sid]] = True
    was_stuck = was[FaultKind.STUCK_DIMMING]
    stuck_now = np.where(change, stuck_misses >= params.stuck_changes, was_stuck)

    # lamps out: while settled and not stuck
    judged = settled & ~stuck_now & (expected > 0)
    low = judged & (measured < params.lamps_out_ratio * expected)
    lamps_bad = np.where(judged, np.where(low, state.lamps_bad + 1, 0), state.lamps_bad)
    lamps_good = np.where(judged, np.where(low, 0, state.lamps_good + 1), state.lamps_good)
    per_lamp_w = np.where(lit, segs.luminaire_power_w(np.nan_to_num(level), burning_h), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_out = np.clip(np.rint((expected - measured) / per_lamp_w), 0, segs.luminaires)
    n_out = np.nan_to_num(n_out, nan=0.0, posinf=0.0, neginf=0.0)

    want: dict[FaultKind, BoolArray] = {
        FaultKind.NO_POWER_READING: missing >= params.confirm_checks,
        FaultKind.STUCK_DIMMING: stuck_now,
    }
    want[FaultKind.LAMPS_OUT] = np.where(
        was[FaultKind.LAMPS_OUT],
        ~((lamps_good >= params.confirm_checks) | stuck_now),
        lamps_bad >= params.confirm_checks,
    ).astype(bool)
    seen: dict[FaultKind, BoolArray] = {
        FaultKind.NO_POWER_READING: watched & ~fresh,
        FaultKind.STUCK_DIMMING: change & ~followed,
        FaultKind.LAMPS_OUT: low,
    }

    faults: list[Fault] = []
    raised: list[Fault] = []
    cleared: list[Fault] = []
    interesting = np.zeros(n, dtype=bool)
    for kind in FaultKind:
        interesting |= want[kind] | seen[kind] | was[kind]
    rows = np.flatnonzero(interesting)
    # plain Python values for the few rows the loop touches (numpy scalars are slow one by one)
    want_at = {k: want[k][rows].tolist() for k in FaultKind}
    seen_at = {k: seen[k][rows].tolist() for k in FaultKind}
    cols = zip(
        rows.tolist(),
        measured[rows].tolist(),
        expected[rows].tolist(),
        n_out[rows].astype(int).tolist(),
        np.nan_to_num(level[rows]).tolist(),
        fresh[rows].tolist(),
        strict=True,
    )
    for j, (i, meas_w, exp_w, lamps, lvl, ok) in enumerate(cols):
        sid = segs.ids[i]
        for kind in FaultKind:
            prev = old.get((sid, kind))
            if not want_at[kind][j]:
                if prev is not None:
                    cleared.append(prev)
                continue
            if prev is not None and not seen_at[kind][j]:
                faults.append(prev)
                continue
            fault = Fault(
                segment_id=sid,
                kind=kind,
                since=prev.since if prev is not None else now,
                last_seen=now,
                detail=_detail(kind, meas_w, exp_w, lamps, lvl),
                lamps_out=lamps if kind is FaultKind.LAMPS_OUT else None,
                expected_power_w=exp_w if kind is not FaultKind.NO_POWER_READING else None,
                measured_power_w=meas_w if ok else None,
            )
            faults.append(fault)
            if prev is None:
                raised.append(fault)

    new_level = commanded
    same = np.isclose(new_level, level, rtol=0.0, atol=1e-9)  # NaN: not the same
    new_state = FaultState(
        ts=now,
        level_pct=new_level.copy(),
        level_held_s=np.where(same, held_s, 0.0),
        burning_h=burning_h,
        full_power_h=full_power_h,
        lamps_bad=lamps_bad.astype(np.int64),
        lamps_good=lamps_good.astype(np.int64),
        missing=missing.astype(np.int64),
        anchor_expected_w=anchor_exp,
        anchor_measured_w=anchor_meas,
        stuck_misses=stuck_misses.astype(np.int64),
        faults=tuple(faults),
    )
    return FaultStep(new_state, tuple(raised), tuple(cleared))


def _detail(kind: FaultKind, measured: float, expected: float, n_out: int, level: float) -> str:
    if kind is FaultKind.NO_POWER_READING:
        return "no usable power reading"
    if kind is FaultKind.LAMPS_OUT:
        return (
            f"{measured:.0f} W measured, {expected:.0f} W expected at {level:.1f} %: "
            f"about {n_out} lamp(s) out"
        )
    return f"power ({measured:.0f} W) did not follow the level ({level:.1f} %, {expected:.0f} W)"
