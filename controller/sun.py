"""The sun's position at the site: the one implementation both shells use for the daylight rule.

Rule: pure numpy, no clock (time is an argument). :func:`sun_elevation_series` computes the
apparent solar elevation for an array of instants; the scalar :func:`sun_elevation_deg` (what
the live runtime calls once per cycle when it builds the observation) is that same function on a
one-element array, so the live shell and the simulator — which precomputes a whole run's
ephemeris — see bit-identical elevations at the same instant (``tests/controller/test_sun.py``
checks it).

Theory of operation
-------------------
NOAA's solar position equations (the NOAA Solar Calculator spreadsheet, after Meeus,
*Astronomical Algorithms*), in universal time, from the Julian century ``T`` since J2000.0
(2000-01-01 12:00 UT): the sun's geometric mean longitude and anomaly, the eccentricity of the
earth's orbit and the equation of the centre give its true and then apparent longitude (with the
nutation term of the moon's ascending node); with the corrected obliquity of the ecliptic they
give the declination and the equation of time. The true solar time (UT minutes of the day + the
equation of time + 4 min per degree of east longitude) gives the hour angle, and the
declination, the hour angle and the latitude the geometric elevation. NOAA's atmospheric
refraction correction (Sæmundsson-type piecewise fit, in arc seconds: 0 above 85°, a series in
``1/tan h`` above 5°, a polynomial down to −0.575°, ``−20.772 / tan h`` below) is added to give
the apparent elevation, the one a photocell would see. Accuracy: within about 0.01° of the full
theory between 1900 and 2100 for the sun above −1°; it agrees with astral (the same equations)
to well within 0.1° (tested over a year at Hagen and at high latitudes).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from laterne.models.layout import SiteLayout
from laterne.models.values import FloatArray

__all__ = ["sun_elevation_deg", "sun_elevation_series"]

#: 2000-01-01 12:00:00 UT (J2000.0) [s since the Unix epoch]
J2000_EPOCH_S: Final = 946_728_000.0
_S_PER_JULIAN_CENTURY: Final = 86_400.0 * 36_525.0
_S_PER_DAY: Final = 86_400.0
_RAD: Final = math.pi / 180.0
_DEG: Final = 180.0 / math.pi


def _position(where: SiteLayout | tuple[float, float]) -> tuple[float, float]:
    if isinstance(where, SiteLayout):
        return where.latitude_deg, where.longitude_deg
    lat_deg, lon_deg = where
    return float(lat_deg), float(lon_deg)


def _epoch_seconds(times: npt.ArrayLike) -> FloatArray:
    """Seconds since the Unix epoch (UTC) of ``datetime64`` values or of numbers already so."""
    a = np.asarray(times)
    if a.dtype.kind == "M":
        us = a.astype("datetime64[us]").astype(np.int64)
        out: FloatArray = us / 1e6  # the same rounding as datetime.timestamp()
        return out
    if a.dtype.kind not in "iuf":
        raise TypeError(f"times must be datetime64 or seconds since the epoch, not {a.dtype}")
    return a.astype(np.float64)


def _refraction_deg(h: Any) -> Any:
    """NOAA's atmospheric refraction at geometric elevations ``h`` [°] (0 above 85°)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        te = np.tan(h * _RAD)
        te2 = te * te
        high = 58.1 / te - 0.07 / (te * te2) + 0.000086 / (te * te2 * te2)
        low = -20.772 / te
    near = 1735.0 + h * (-518.2 + h * (103.4 + h * (-12.79 + h * 0.711)))
    arcsec = np.where(h > 5.0, np.where(h > 85.0, 0.0, high), np.where(h > -0.575, near, low))
    return arcsec / 3600.0


def _elevation(lat_deg: float, lon_deg: float, t_s: Any) -> Any:
    """The computation, on an array or a ``numpy.float64`` alike (the same operations)."""
    jc = (t_s - J2000_EPOCH_S) / _S_PER_JULIAN_CENTURY
    mean_long = np.mod(280.46646 + jc * (36000.76983 + jc * 0.0003032), 360.0) * _RAD
    mean_anom = (357.52911 + jc * (35999.05029 - 0.0001537 * jc)) * _RAD
    ecc = 0.016708634 - jc * (0.000042037 + 0.0000001267 * jc)
    sin_m = np.sin(mean_anom)
    sin_2m = np.sin(2.0 * mean_anom)
    centre_deg = (
        sin_m * (1.914602 - jc * (0.004817 + 0.000014 * jc))
        + sin_2m * (0.019993 - 0.000101 * jc)
        + np.sin(3.0 * mean_anom) * 0.000289
    )
    omega = (125.04 - 1934.136 * jc) * _RAD
    apparent_long = mean_long + (centre_deg - 0.00569 - 0.00478 * np.sin(omega)) * _RAD
    obliquity_s = 21.448 - jc * (46.815 + jc * (0.00059 - jc * 0.001813))
    obliquity = (23.0 + (26.0 + obliquity_s / 60.0) / 60.0 + 0.00256 * np.cos(omega)) * _RAD
    declination = np.arcsin(np.sin(obliquity) * np.sin(apparent_long))

    y = np.tan(obliquity / 2.0)
    y = y * y
    eq_time_min = (
        y * np.sin(2.0 * mean_long)
        - 2.0 * ecc * sin_m
        + 4.0 * ecc * y * sin_m * np.cos(2.0 * mean_long)
        - 0.5 * y * y * np.sin(4.0 * mean_long)
        - 1.25 * ecc * ecc * sin_2m
    ) * (4.0 * _DEG)
    ut_min = np.mod(t_s, _S_PER_DAY) / 60.0
    true_solar_min = np.mod(ut_min + eq_time_min + 4.0 * lon_deg, 1440.0)
    hour_angle = (true_solar_min / 4.0 - 180.0) * _RAD

    lat = lat_deg * _RAD
    cos_zenith = math.sin(lat) * np.sin(declination) + math.cos(lat) * np.cos(declination) * np.cos(
        hour_angle
    )
    cos_zenith = np.minimum(np.maximum(cos_zenith, -1.0), 1.0)
    geometric = 90.0 - np.arccos(cos_zenith) * _DEG
    return geometric + _refraction_deg(geometric)


def sun_elevation_series(
    where: SiteLayout | tuple[float, float], times: npt.ArrayLike
) -> FloatArray:
    """Apparent solar elevation [°], refraction included, at each of ``times``.

    Parameters
    ----------
    where : the site's layout, or ``(latitude_deg, longitude_deg)`` (north and east positive)
    times : ``datetime64`` values (naive, UTC) or seconds since the Unix epoch, any shape

    Returns a float array of the shape of ``times``.
    """
    lat_deg, lon_deg = _position(where)
    out: FloatArray = np.asarray(_elevation(lat_deg, lon_deg, _epoch_seconds(times)), dtype=float)
    return out


def sun_elevation_deg(layout: SiteLayout, now: datetime) -> float:
    """Apparent solar elevation at the site at ``now`` (aware) [°], refraction included.

    The same operations as :func:`sun_elevation_series` on one ``numpy.float64`` (numpy's
    ufuncs give a scalar exactly the value they give that element of an array), without the cost
    of building arrays: tested bit-identical.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    lat_deg, lon_deg = _position(layout)
    return float(_elevation(lat_deg, lon_deg, np.float64(now.timestamp())))
