"""Traffic demand for the simulated plant: a typical daily flow profile from real counts.

Rule: pure functions over numpy arrays. The one file read is the packaged, measured count table
(``data/intersection85_15min_counts.csv``, via :mod:`importlib.resources`, never the network);
from it :func:`profile_from_counts` builds a :class:`TrafficProfile` — the mean flow per 15-minute
slot of a weekday and of a weekend day, averaged over detectors and days, normalised so the
weekday peak slot is 1. :func:`flow_veh_h` turns local wall-clock times into flows [veh/h] by
scaling that shape with a peak flow per channel (``ROAD_PEAK_FLOW_VEH_H`` by road type).

Gaps: a (slot, detector) missing from the table is NaN and is left out of every mean; a slot with
no data on any day of its kind is filled by circular linear interpolation over the day.
Times in the count table and in :func:`flow_veh_h` are naive *local* wall-clock times.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt

from laterne.models.site import RoadType
from laterne.models.values import FloatArray

__all__ = [
    "COUNTS_FILE",
    "ROAD_PEAK_FLOW_VEH_H",
    "SLOTS_PER_DAY",
    "SLOT_S",
    "CountTable",
    "TrafficProfile",
    "flow_fraction",
    "flow_veh_h",
    "load_counts",
    "parse_counts",
    "profile_from_counts",
    "typical_profile",
]

Datetime64Array = npt.NDArray[np.datetime64]

#: the packaged count table (``laterne.simulations`` package data)
COUNTS_FILE: Final = "intersection85_15min_counts.csv"
#: length of one profile slot [s]
SLOT_S: Final = 900
#: number of slots in one day
SLOTS_PER_DAY: Final = 86_400 // SLOT_S

#: Peak hourly flow of one counter channel (one lane / direction) by road type [veh/h].
ROAD_PEAK_FLOW_VEH_H: Final[MappingProxyType[RoadType, float]] = MappingProxyType(
    {
        "main": 1200.0,
        "collector": 500.0,
        "residential": 120.0,
        "pedestrian": 20.0,
    }
)


@dataclass(frozen=True, eq=False)
class CountTable:
    """Measured counts on a complete grid of 15-minute slots.

    Parameters
    ----------
    slot_start : (T,) naive local start time of each slot, consecutive, starting at midnight
    detectors : (D,) detector numbers as given in the file
    counts_veh : (T, D) vehicles counted in the slot [veh], NaN where the detector reported nothing
    """

    slot_start: Datetime64Array
    detectors: npt.NDArray[np.int64]
    counts_veh: FloatArray


@dataclass(frozen=True, eq=False)
class TrafficProfile:
    """Typical daily flow shape, as a fraction of the weekday peak [unitless].

    Slot ``k`` covers local minutes ``[15 k, 15 k + 15)``; its value is the mean flow in that slot
    divided by the largest weekday slot mean, so ``weekday.max() == 1``.
    """

    weekday: FloatArray  # (96,)
    weekend: FloatArray  # (96,)

    def __post_init__(self) -> None:
        for name in ("weekday", "weekend"):
            a = getattr(self, name)
            if a.shape != (SLOTS_PER_DAY,) or not np.all(np.isfinite(a)) or np.any(a < 0):
                raise ValueError(f"{name} must be {SLOTS_PER_DAY} finite, non-negative fractions")


def _read_counts_text() -> str:
    ref = resources.files("laterne.simulations") / "data" / COUNTS_FILE
    return ref.read_text(encoding="utf-8")


def parse_counts(text: str) -> CountTable:
    """Parse ``timestamp,detector,vehicles`` CSV text into a :class:`CountTable`.

    Slots absent from the file become NaN; the grid runs from the first day's midnight to the last
    day's last slot.
    """
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip() for c in rows[0]] != ["timestamp", "detector", "vehicles"]:
        raise ValueError("expected a header 'timestamp,detector,vehicles'")
    body = [r for r in rows[1:] if r]
    if not body:
        raise ValueError("the count table has no rows")
    ts = np.array([r[0] for r in body], dtype="datetime64[m]")
    det = np.array([int(r[1]) for r in body], dtype=np.int64)
    veh = np.array([float(r[2]) if r[2].strip() else np.nan for r in body], dtype=float)

    day0 = ts.min().astype("datetime64[D]")
    day1 = ts.max().astype("datetime64[D]") + np.timedelta64(1, "D")
    n_slots = int((day1 - day0) / np.timedelta64(SLOT_S, "s"))
    slot = np.timedelta64(SLOT_S // 60, "m")
    slot_start = day0.astype("datetime64[m]") + np.arange(n_slots) * slot
    detectors, det_idx = np.unique(det, return_inverse=True)
    slot_idx = ((ts - day0.astype("datetime64[m]")) // slot).astype(np.intp)
    counts = np.full((n_slots, detectors.size), np.nan)
    counts[slot_idx, det_idx] = veh
    return CountTable(slot_start=slot_start, detectors=detectors, counts_veh=counts)


@lru_cache(maxsize=1)
def load_counts() -> CountTable:
    """The packaged measured count table (read once, cached)."""
    return parse_counts(_read_counts_text())


def _weekday_index(days: npt.NDArray[np.datetime64]) -> npt.NDArray[np.int64]:
    """Monday = 0 … Sunday = 6 for ``datetime64[D]`` values (1970-01-01 was a Thursday)."""
    return (days.astype(np.int64) + 3) % 7


def _fill_circular(a: FloatArray) -> FloatArray:
    ok = np.isfinite(a)
    if ok.all():
        return a
    if not ok.any():
        raise ValueError("no data at all for one kind of day")
    x = np.arange(a.size)
    return np.interp(x, x[ok], a[ok], period=a.size)


def profile_from_counts(table: CountTable) -> TrafficProfile:
    """Average the count table into a normalised weekday and weekend profile.

    Per slot the counts are averaged over detectors (NaN-aware), then over all days of the same
    kind (Mon–Fri, Sat–Sun), and divided by the largest weekday slot.
    """
    n_days = table.slot_start.size // SLOTS_PER_DAY
    grid = table.counts_veh[: n_days * SLOTS_PER_DAY].reshape(n_days, SLOTS_PER_DAY, -1)
    have = np.isfinite(grid)
    n_have = have.sum(axis=2)
    sums = np.where(have, grid, 0.0).sum(axis=2)
    per_slot = np.where(n_have > 0, sums / np.maximum(n_have, 1), np.nan)
    days = table.slot_start[::SLOTS_PER_DAY][:n_days].astype("datetime64[D]")
    weekend_day = _weekday_index(days) >= 5

    def mean_over(mask: npt.NDArray[np.bool_]) -> FloatArray:
        sel = per_slot[mask]
        ok = np.isfinite(sel)
        n = ok.sum(axis=0)
        mean = np.where(n > 0, np.where(ok, sel, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)
        return _fill_circular(mean)

    weekday = mean_over(~weekend_day)
    weekend = mean_over(weekend_day)
    peak = float(weekday.max())
    if peak <= 0:
        raise ValueError("the weekday profile has no traffic at all")
    return TrafficProfile(weekday=weekday / peak, weekend=weekend / peak)


@lru_cache(maxsize=1)
def typical_profile() -> TrafficProfile:
    """The profile of the packaged measured counts (computed once, cached)."""
    return profile_from_counts(load_counts())


def flow_fraction(profile: TrafficProfile, local_times: Datetime64Array) -> FloatArray:
    """Fraction of the weekday peak flow at naive local times [unitless], same shape as input.

    Values are linear between slot centres; the neighbour slot across midnight is taken from the
    neighbouring day's profile, so the weekday/weekend switch is continuous.
    """
    t = np.asarray(local_times, dtype="datetime64[ms]")
    # position in slots since the epoch, measured from the centre of slot 0
    pos = t.astype(np.int64) / (SLOT_S * 1000.0) - 0.5
    n0 = np.floor(pos)
    w = pos - n0
    n0i = n0.astype(np.int64)

    def value(n: npt.NDArray[np.int64]) -> FloatArray:
        day = n // SLOTS_PER_DAY
        slot = n % SLOTS_PER_DAY
        weekend = (day + 3) % 7 >= 5
        return np.where(weekend, profile.weekend[slot], profile.weekday[slot])

    out: FloatArray = (1.0 - w) * value(n0i) + w * value(n0i + 1)
    return out


def flow_veh_h(
    profile: TrafficProfile,
    local_times: Datetime64Array,
    peak_flow_veh_h: FloatArray | float,
) -> FloatArray:
    """Flow at naive local times [veh/h]: ``flow_fraction(...) * peak_flow_veh_h``.

    Broadcasting follows numpy: times of shape ``(K, 1)`` and peaks of shape ``(C,)`` give
    ``(K, C)``.
    """
    out: FloatArray = flow_fraction(profile, local_times) * np.asarray(peak_flow_veh_h, dtype=float)
    return out
