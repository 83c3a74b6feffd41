"""The safety filter: every rule that stands between a policy's wish and a device.

Rule 1: every bound, ramp and fail-safe rule lives in this file, and nothing reaches a device
without passing :func:`apply_safety`. The filter is pure: arrays in, arrays out.

Rule 2: the filter is generic over the layout's actuator groups (``SiteLayout.actuators``: which
points a group writes, its bounds, fail-safe values, whether 0 means off and which parameter
limits its ramp), so a new actuator is schema + layout group + policy output, not a new rule here.

Theory of operation
-------------------
Applied in this order, per segment and per zone:

0. **Overrides.** An override in force at ``now`` (``start <= now < end``) replaces the policy's
   wish for its segment or zone, with reason ``override``: a person decided (an event, the
   police asking for full light, a caretaker heating the gym for a booking). Precedence:
   **bounds > override > fail-safe > policy** — an override wins over the fail-safe level and
   over the policy, is not ramped (a person wants it now), and is still clamped into the bounds
   like every other command. Of two overrides for one target the one that started last wins.
1. **Fail-safe on missing data — one pattern for every actuator.** The policy marks what it
   cannot decide (its traffic data is missing or stale; a zone's temperature is not GOOD) with
   NaN; every NaN becomes the group's fail-safe value (``failsafe_dim_pct``,
   ``default_setpoint_c``).
2. **Ramp limit.** A dim level *falls* at most ``max_dim_step_pct`` per cycle from the level
   last *written* to the device (not the last computed one: a write that failed did not move
   the lamps); where nothing was written yet there is nothing to ramp from. A rising level is
   never limited — it is the light the traffic's class needs now (a ramp up would light a rush
   below its class for the ramp's length) — nor are switching off by day, going to fail-safe
   and overrides: fail-safe must be immediate, off is the daylight rule, an override is a
   person's decision.
3. **Bounds.** A value is clamped to its group's ``[lo, hi]`` (the intersection of the site's
   limits and the point's bounds: ``[min_dim_pct, max_dim_pct]``,
   ``[min_setpoint_c, max_setpoint_c]``); 0 (off) is allowed only where ``off_allowed`` (a
   controller whose bounds include 0).

Each changed value gets the reason code of the rule that changed it, so the history shows why.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from laterne.models.layout import ActuatorGroup, SiteLayout
from laterne.models.site import PolicyParams
from laterne.models.values import (
    ActuatorCommand,
    BoolArray,
    Commands,
    FloatArray,
    Observation,
    Override,
    Reason,
)

from .overrides import UnknownOverrideTarget

__all__ = [
    "SafetyViolation",
    "UnknownOverrideTarget",
    "apply_safety",
    "override_arrays",
    "within_bounds",
]


class SafetyViolation(RuntimeError):
    """Commands left the filter outside their bounds: a bug in this file, never sent."""


def _override_values(
    group: ActuatorGroup, overrides: Sequence[Override], now: datetime
) -> FloatArray:
    """Per element of ``group``: the value of the override in force at ``now`` (NaN: none)."""
    out = np.full(group.size, np.nan)
    if not overrides:
        return out
    index = group.index
    for o in sorted((o for o in overrides if o.active(now)), key=lambda o: o.start):
        if o.target == group.target:
            if o.id not in index:
                raise UnknownOverrideTarget(f"override for unknown {o.target} {o.id!r}")
            out[index[o.id]] = o.value
    return out


def override_arrays(
    layout: SiteLayout, overrides: Sequence[Override], now: datetime
) -> dict[str, FloatArray]:
    """Per actuator group, the override values in force at ``now`` (NaN: none).

    Raises
    ------
    UnknownOverrideTarget
        an override names a target kind or an id the site does not have.
    """
    targets = {g.target for g in layout.actuators.values()}
    for o in overrides:
        if o.target not in targets:
            raise UnknownOverrideTarget(f"override for unknown {o.target} {o.id!r}")
    return {
        name: _override_values(g, overrides, now) for name, g in layout.actuators.items()
    }


def _safe_group(
    group: ActuatorGroup,
    params: PolicyParams,
    wish: ActuatorCommand,
    override: FloatArray,
    last: ActuatorCommand | None,
) -> ActuatorCommand:
    overridden: BoolArray = np.isfinite(override)
    values = np.where(overridden, override, wish.values.astype(float))
    reasons = wish.reasons.copy()
    reasons[overridden] = Reason.OVERRIDE

    # 1. fail-safe: whatever the policy could not decide
    unknown = ~np.isfinite(values)
    values = np.where(unknown, group.failsafe, values)
    reasons[unknown] = Reason.FAILSAFE

    # 2. ramp from what was last written (only between levels the policy decided)
    step = getattr(params, group.max_step_param) if group.max_step_param else None
    if last is not None and step is not None and step < 100 and last.values.size:
        prev = last.values
        switched_off = group.off_allowed & (values <= 0)
        rampable = ~unknown & ~overridden & ~switched_off & np.isfinite(prev)
        ramped = np.maximum(values, prev - step)  # down slowly, up at once
        changed = rampable & (ramped != values)
        values = np.where(rampable, ramped, values)
        reasons[changed] = Reason.RAMPED

    # 3. bounds
    off = (values <= 0) & group.off_allowed
    clamped = np.where(off, 0.0, np.clip(values, group.lo, group.hi))
    reasons[clamped != values] = Reason.CLAMPED
    return ActuatorCommand(clamped, reasons)


def apply_safety(
    layout: SiteLayout,
    params: PolicyParams,
    wish: Commands,
    obs: Observation,
    last: Commands | None,
    *,
    now: datetime | None = None,
    overrides: Sequence[Override] = (),
) -> Commands:
    """Return commands that are safe to send, for every actuator group of the layout.

    ``last`` holds what was last *written* to each device (NaN where nothing was), the base of
    the ramp limit; ``overrides`` in force at ``now`` (default: the observation's time) replace
    the policy's wish. A group the wish lacks is all fail-safe.
    """
    at = now if now is not None else obs.ts
    override = override_arrays(layout, overrides, at)
    out: dict[str, ActuatorCommand] = {}
    for name, group in layout.actuators.items():
        w = wish.groups.get(name)
        if w is None:
            w = ActuatorCommand(
                np.full(group.size, np.nan), np.full(group.size, Reason.FAILSAFE, np.int8)
            )
        prev = last.groups.get(name) if last is not None else None
        out[name] = _safe_group(group, params, w, override[name], prev)
    return Commands(groups=out)


def within_bounds(layout: SiteLayout, cmds: Commands) -> bool:
    """True when every command of every group lies within its bounds (the postcondition)."""
    for name, group in layout.actuators.items():
        v = cmds.group(name).values
        if v.shape != (group.size,):
            return False
        ok = ((v >= group.lo) & (v <= group.hi)) | ((v == 0) & group.off_allowed)
        if not bool(np.all(ok)):
            return False
    return True
