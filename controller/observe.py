"""Turn the latest point readings into the array :class:`Observation` the policy sees.

Rule: pure. A value enters the observation as usable only when its reading is GOOD and not older
than ``stale_after_s`` at ``now``; anything else is NaN with its ``*_ok`` flag False, so the
policy and the safety filter can never mistake a stale or faulty value for a measurement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np

from laterne.models.layout import SiteLayout
from laterne.models.site import PointRef
from laterne.models.values import BoolArray, FloatArray, Observation, PointReading, Quality

from .sun import sun_elevation_deg

__all__ = ["ReadingKey", "build_observation", "usable"]

ReadingKey = tuple[str, str]  # (device_id, point)


def usable(reading: PointReading | None, now: datetime, stale_after_s: float) -> bool:
    """A reading the controller may act on: GOOD, finite and fresh."""
    return (
        reading is not None
        and reading.quality is Quality.GOOD
        and np.isfinite(reading.value)
        and (now - reading.ts).total_seconds() <= stale_after_s
    )


def _gather(
    refs: Sequence[PointRef | None],
    latest: Mapping[ReadingKey, PointReading],
    now: datetime,
    stale_after_s: float,
) -> tuple[FloatArray, BoolArray]:
    values = np.full(len(refs), np.nan)
    ok = np.zeros(len(refs), dtype=bool)
    for i, ref in enumerate(refs):
        if ref is None:
            continue
        r = latest.get((ref.device, ref.point))
        if r is not None and usable(r, now, stale_after_s):
            values[i] = r.value
            ok[i] = True
    return values, ok


def build_observation(
    layout: SiteLayout,
    latest: Mapping[ReadingKey, PointReading],
    now: datetime,
    stale_after_s: float,
) -> Observation:
    """The observation at ``now``, the sun's elevation at the site included."""
    counts, counts_ok = _gather(layout.channels, latest, now, stale_after_s)
    temps, temps_ok = _gather(layout.zone_temperature, latest, now, stale_after_s)
    _dims, seg_ok = _gather(layout.seg_controller, latest, now, stale_after_s)
    outdoor, _ = _gather(layout.building_outdoor, latest, now, stale_after_s)
    return Observation(
        ts=now,
        counter_veh=counts,
        counter_ok=counts_ok,
        zone_temp_c=temps,
        zone_ok=temps_ok,
        segment_ok=seg_ok,
        outdoor_temp_c=outdoor,
        sun_elevation_deg=sun_elevation_deg(layout, now),
    )
