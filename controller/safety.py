"""The safety filter: every rule that stands between a policy's wish and a device.

Rule 1: every bound, ramp and fail-safe rule lives in this file, and nothing reaches a device
without passing :func:`apply_safety`. The filter is pure: arrays in, arrays out.

Theory of operation
-------------------
Applied in this order, per segment and per zone:

0. **Overrides.** An override in force at ``now`` (``start <= now < end``) replaces the policy's
   wish for its segment or zone, with reason ``override``: a person decided (an event, the
   police asking for full light, a caretaker heating the gym for a booking). Precedence:
   **bounds > override > fail-safe > policy** — an override wins over the fail-safe level and
   over the policy, is not ramped (a person wants it now), and is still clamped into the bounds
   like every other command. Of two overrides for one target the one that started last wins.
1. **Fail-safe on missing data.** A dim wish that is not a finite number (the policy could not
   decide, e.g. its traffic data is missing or stale) becomes the segment's ``failsafe_dim_pct``.
   A zone whose temperature is not GOOD in this observation, or whose wish is not finite, gets its
   ``default_setpoint_c``.
2. **Ramp limit.** A dim level moves at most ``max_dim_step_pct`` per cycle from the level last
   *written* to the device (not the last computed one: a write that failed did not move the
   lamps); where nothing was written yet there is nothing to ramp from. Switching off by day,
   going to fail-safe and overrides are not limited: fail-safe must be immediate, off is the
   daylight rule, an override is a person's decision.
3. **Bounds.** A lit segment is clamped to ``[min_dim_pct, max_dim_pct]`` (the intersection of
   the site's limits and the controller's point bounds); 0 % (off) is allowed only where the
   controller's bounds include 0. A setpoint is clamped to ``[min_setpoint_c, max_setpoint_c]``.

Each changed value gets the reason code of the rule that changed it, so the history shows why.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from laterne.models.layout import SiteLayout
from laterne.models.site import PolicyParams
from laterne.models.values import BoolArray, Commands, FloatArray, Observation, Override, Reason

__all__ = ["SafetyViolation", "UnknownOverrideTarget", "apply_safety", "override_arrays",
           "within_bounds"]


class SafetyViolation(RuntimeError):
    """Commands left the filter outside their bounds: a bug in this file, never sent."""


class UnknownOverrideTarget(ValueError):
    """An override names a segment or zone the site does not have."""


def override_arrays(
    layout: SiteLayout, overrides: Sequence[Override], now: datetime
) -> tuple[FloatArray, FloatArray]:
    """Per segment and per zone, the value of the override in force at ``now`` (NaN: none)."""
    seg = np.full(layout.n_segments, np.nan)
    zone = np.full(layout.n_zones, np.nan)
    seg_index = {s: i for i, s in enumerate(layout.segment_ids)}
    zone_index = {z: i for i, z in enumerate(layout.zone_ids)}
    for o in sorted((o for o in overrides if o.active(now)), key=lambda o: o.start):
        if o.target == "segment" and o.id in seg_index:
            seg[seg_index[o.id]] = o.value
        elif o.target == "zone" and o.id in zone_index:
            zone[zone_index[o.id]] = o.value
        else:
            raise UnknownOverrideTarget(f"override for unknown {o.target} {o.id!r}")
    return seg, zone


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
    """Return commands that are safe to send.

    ``last`` holds what was last *written* to each device (NaN where nothing was), the base of
    the ramp limit; ``overrides`` in force at ``now`` (default: the observation's time) replace
    the policy's wish.
    """
    at = now if now is not None else obs.ts
    seg_override, zone_override = override_arrays(layout, overrides, at)
    seg_overridden: BoolArray = np.isfinite(seg_override)
    zone_overridden: BoolArray = np.isfinite(zone_override)

    dim = np.where(seg_overridden, seg_override, wish.dim_pct.astype(float))
    dim_reason = wish.dim_reason.copy()
    dim_reason[seg_overridden] = Reason.OVERRIDE

    # 1. fail-safe
    unknown = ~np.isfinite(dim)
    dim = np.where(unknown, layout.seg_failsafe_dim_pct, dim)
    dim_reason[unknown] = Reason.FAILSAFE

    # 2. ramp (only between lit levels decided by the policy)
    if last is not None and params.max_dim_step_pct < 100:
        prev = last.dim_pct
        step = params.max_dim_step_pct
        rampable = ~unknown & ~seg_overridden & (dim > 0) & np.isfinite(prev)
        ramped = np.clip(dim, prev - step, prev + step)
        changed = rampable & (ramped != dim)
        dim = np.where(rampable, ramped, dim)
        dim_reason[changed] = Reason.RAMPED

    # 3. bounds
    off = (dim <= 0) & layout.seg_off_allowed
    clamped = np.clip(dim, layout.seg_min_dim_pct, layout.seg_max_dim_pct)
    clamped = np.where(off, 0.0, clamped)
    moved = clamped != dim
    dim_reason[moved] = Reason.CLAMPED
    dim = clamped

    sp = np.where(zone_overridden, zone_override, wish.setpoint_c.astype(float))
    sp_reason = wish.setpoint_reason.copy()
    sp_reason[zone_overridden] = Reason.OVERRIDE
    sp_unknown = ~zone_overridden & (~obs.zone_ok | ~np.isfinite(sp))
    sp = np.where(sp_unknown, layout.zone_default_c, sp)
    sp_reason[sp_unknown] = Reason.FAILSAFE
    sp_clamped = np.clip(sp, layout.zone_min_c, layout.zone_max_c)
    sp_reason[sp_clamped != sp] = Reason.CLAMPED

    return Commands(
        dim_pct=dim, dim_reason=dim_reason, setpoint_c=sp_clamped, setpoint_reason=sp_reason
    )


def within_bounds(layout: SiteLayout, cmds: Commands) -> bool:
    """True when every command lies within the layout's bounds (the filter's postcondition)."""
    dim_ok = (
        (cmds.dim_pct >= layout.seg_min_dim_pct) & (cmds.dim_pct <= layout.seg_max_dim_pct)
    ) | ((cmds.dim_pct == 0) & layout.seg_off_allowed)
    sp_ok = (cmds.setpoint_c >= layout.zone_min_c) & (cmds.setpoint_c <= layout.zone_max_c)
    return bool(np.all(dim_ok) and np.all(sp_ok))
