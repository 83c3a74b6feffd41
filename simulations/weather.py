"""Outdoor weather for the simulated plant: a typical meteorological year (EPW) on any date.

Rule: pure functions over numpy arrays. The one file read is the packaged EPW file (via
:mod:`importlib.resources`, never the network). :func:`parse_epw` turns EPW text into hourly arrays;
:func:`outdoor_temp_c` / :func:`outdoor_temp_c_array` interpolate them linearly at aware UTC times.

Time convention: EPW row ``i`` (0-based) is hour ``(i mod 24) + 1`` of its day and holds the value
at the *end* of that hour, in local standard time (``LOCAL_STANDARD_UTC_OFFSET_H``, UTC+1 for
Germany, no daylight saving). The typical year is laid onto any calendar year by day of year and
hour; in a leap year 29 February repeats 28 February, and the end of 31 December interpolates
towards 1 January of the same typical year.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import Final

import numpy as np
import numpy.typing as npt

from laterne.models.values import FloatArray

__all__ = [
    "EPW_FILE",
    "HOURS_PER_YEAR",
    "LOCAL_STANDARD_UTC_OFFSET_H",
    "Weather",
    "load_weather",
    "outdoor_temp_c",
    "outdoor_temp_c_array",
    "parse_epw",
    "utc64",
]

#: the packaged weather file (``laterne.simulations`` package data)
EPW_FILE: Final = "DEU_NW_Luedenscheid.104180_TMYx.2007-2021.epw"
HOURS_PER_YEAR: Final = 8760
#: EPW data are in local standard time of the station [h east of UTC]
LOCAL_STANDARD_UTC_OFFSET_H: Final = 1.0

_HEADER_LINES: Final = 8
_COL_DRY_BULB: Final = 6  # 0-based (column 7 of the EPW format)
_COL_GLOBAL_HORIZONTAL: Final = 13  # 0-based (column 14)
_MISSING_DRY_BULB: Final = 99.9  # EPW's "missing" marker


@dataclass(frozen=True, eq=False)
class Weather:
    """Hourly weather of one typical year; index ``i`` is the end of hour ``i + 1`` of the year.

    Parameters
    ----------
    location : the EPW LOCATION line's city, region and country
    dry_bulb_c : (8760,) outdoor dry-bulb air temperature [°C]
    global_horizontal_wh_m2 : (8760,) global horizontal radiation over the hour [Wh/m²]
    utc_offset_h : offset of the file's local standard time from UTC [h]
    """

    location: str
    dry_bulb_c: FloatArray
    global_horizontal_wh_m2: FloatArray
    utc_offset_h: float = LOCAL_STANDARD_UTC_OFFSET_H


def parse_epw(text: str, *, utc_offset_h: float = LOCAL_STANDARD_UTC_OFFSET_H) -> Weather:
    """Parse EnergyPlus weather (EPW) text: 8 header lines, then 8,760 hourly rows.

    Raises
    ------
    ValueError
        if the file does not have exactly 8,760 data rows, a row is short, or a dry-bulb value is
        missing (99.9) or not a number.
    """
    lines = text.splitlines()
    if len(lines) < _HEADER_LINES or not lines[0].startswith("LOCATION"):
        raise ValueError("not an EPW file: the first line must be LOCATION")
    loc = lines[0].split(",")
    location = ", ".join(p.strip() for p in loc[1:4] if p.strip())
    rows = [ln.split(",") for ln in lines[_HEADER_LINES:] if ln.strip()]
    if len(rows) != HOURS_PER_YEAR:
        raise ValueError(f"expected {HOURS_PER_YEAR} hourly rows, found {len(rows)}")
    try:
        temp = np.array([float(r[_COL_DRY_BULB]) for r in rows], dtype=float)
        ghi = np.array([float(r[_COL_GLOBAL_HORIZONTAL]) for r in rows], dtype=float)
    except (IndexError, ValueError) as exc:
        raise ValueError(f"malformed EPW data row: {exc}") from exc
    bad = np.flatnonzero(~np.isfinite(temp) | (temp >= _MISSING_DRY_BULB))
    if bad.size:
        raise ValueError(f"dry-bulb temperature missing in data row {int(bad[0]) + 1}")
    return Weather(
        location=location, dry_bulb_c=temp, global_horizontal_wh_m2=ghi, utc_offset_h=utc_offset_h
    )


@lru_cache(maxsize=1)
def load_weather() -> Weather:
    """The packaged typical year for Lüdenscheid (read once, cached)."""
    ref = resources.files("laterne.simulations") / "data" / EPW_FILE
    return parse_epw(ref.read_text(encoding="utf-8"))


def utc64(when_utc: datetime) -> np.datetime64:
    """An aware datetime as a naive ``datetime64[us]`` in UTC (numpy has no time zones)."""
    if when_utc.tzinfo is None:
        raise ValueError("expected a timezone-aware datetime")
    return np.datetime64(when_utc.astimezone(UTC).replace(tzinfo=None), "us")


def _year_hours(local: npt.NDArray[np.datetime64]) -> FloatArray:
    """Hours since 1 January 00:00 of the typical year, with 29 February folded onto 28 February."""
    t = local.astype("datetime64[us]")
    day = t.astype("datetime64[D]")
    year = t.astype("datetime64[Y]")
    doy0 = (day - year.astype("datetime64[D]")).astype(np.int64)
    y = year.astype(np.int64) + 1970
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    doy0 = np.where(leap & (doy0 >= 59), doy0 - 1, doy0)
    hour = (t - day).astype(np.int64) / 3.6e9
    out: FloatArray = doy0 * 24.0 + hour
    return out


def outdoor_temp_c_array(weather: Weather, times_utc: npt.NDArray[np.datetime64]) -> FloatArray:
    """Outdoor dry-bulb temperature at naive-UTC ``datetime64`` times [°C], same shape as input."""
    t = np.asarray(times_utc, dtype="datetime64[us]")
    shift = np.timedelta64(round(weather.utc_offset_h * 3.6e9), "us")
    local: npt.NDArray[np.datetime64] = np.asarray(t + shift, dtype="datetime64[us]")
    pos = _year_hours(local) - 1.0  # row i holds the value at hour i + 1
    i0 = np.floor(pos)
    w = pos - i0
    k0 = i0.astype(np.int64) % HOURS_PER_YEAR
    k1 = (k0 + 1) % HOURS_PER_YEAR
    temp = weather.dry_bulb_c
    out: FloatArray = (1.0 - w) * temp[k0] + w * temp[k1]
    return out


def outdoor_temp_c(weather: Weather, when_utc: datetime) -> float:
    """Outdoor dry-bulb temperature at one aware time [°C], linear between hourly values."""
    return float(outdoor_temp_c_array(weather, np.array([utc64(when_utc)]))[0])
