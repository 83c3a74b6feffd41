"""Turn the latest point readings into the array :class:`Observation` the policy sees.

Rule: pure. A value enters the observation as usable only when its reading is GOOD and not older
than its device's staleness limit at ``now``; anything else is NaN with its ``*_ok`` flag False,
so the policy and the safety filter can never mistake a stale or faulty value for a measurement.

One staleness rule: the limit is the device's ``stale_after_s`` (``poll_interval_s`` ×
``stale_after_polls``), the same one device health ages readings and devices with
(``controller/health.py``). Pass a mapping device id → limit; a single number applies to every
device (tests, simple simulations).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np

from laterne.models.layout import SiteLayout
from laterne.models.site import PointRef
from laterne.models.values import BoolArray, FloatArray, Observation, PointReading, Quality

from .sun import sun_elevation_deg

__all__ = [
    "ReadingKey",
    "StaleLimits",
    "build_observation",
    "measured_segment_power_w",
    "usable",
]

ReadingKey = tuple[str, str]  # (device_id, point)


def usable(reading: PointReading | None, now: datetime, stale_after_s: float) -> bool:
    """A reading the controller may act on: GOOD, finite and fresh."""
    return (
        reading is not None
        and reading.quality is Quality.GOOD
        and math.isfinite(reading.value)
        and (now - reading.ts).total_seconds() <= stale_after_s
    )


StaleLimits = float | Mapping[str, float]


def _limit(stale_after_s: StaleLimits, device_id: str) -> float:
    if isinstance(stale_after_s, int | float):
        return float(stale_after_s)
    return stale_after_s[device_id]


def _gather(
    refs: Sequence[PointRef | None],
    latest: Mapping[ReadingKey, PointReading],
    now: datetime,
    stale_after_s: StaleLimits,
) -> tuple[FloatArray, BoolArray]:
    values = np.full(len(refs), np.nan)
    ok = np.zeros(len(refs), dtype=bool)
    for i, ref in enumerate(refs):
        if ref is None:
            continue
        r = latest.get((ref.device, ref.point))
        if r is not None and usable(r, now, _limit(stale_after_s, ref.device)):
            values[i] = r.value
            ok[i] = True
    return values, ok


def build_observation(
    layout: SiteLayout,
    latest: Mapping[ReadingKey, PointReading],
    now: datetime,
    stale_after_s: StaleLimits,
) -> Observation:
    """The observation at ``now``, the sun's elevation at the site included. ``stale_after_s``
    maps each device id to its staleness limit [s] (or is one limit for all)."""
    counts, counts_ok = _gather(layout.channels.refs, latest, now, stale_after_s)
    temps, temps_ok = _gather(layout.zones.temperature, latest, now, stale_after_s)
    _dims, seg_ok = _gather(layout.segments.controller, latest, now, stale_after_s)
    outdoor, _ = _gather(layout.buildings.outdoor, latest, now, stale_after_s)
    lux = None
    if any(r is not None for r in layout.segments.lux):
        lux, _ok = _gather(layout.segments.lux, latest, now, stale_after_s)
    return Observation(
        ts=now,
        counter_veh=counts,
        counter_ok=counts_ok,
        zone_temp_c=temps,
        zone_ok=temps_ok,
        segment_ok=seg_ok,
        outdoor_temp_c=outdoor,
        sun_elevation_deg=sun_elevation_deg(layout, now),
        segment_lux=lux,
    )


def measured_segment_power_w(
    layout: SiteLayout,
    latest: Mapping[ReadingKey, PointReading],
    now: datetime,
    stale_after_s: StaleLimits,
) -> FloatArray:
    """Each segment's measured power at ``now`` [W]; NaN where the segment has no power point or
    its reading is not usable (the same rule as the observation's)."""
    power, _ok = _gather(layout.segments.power, latest, now, stale_after_s)
    return power
