"""The sun's elevation: NOAA's equations in numpy against astral, and one value for both shells."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from astral import Observer
from astral.sun import elevation

from laterne.controller.sun import sun_elevation_deg, sun_elevation_series
from laterne.models.layout import SiteLayout

HAGEN = (51.3594, 7.4747)


def _astral(lat_lon: tuple[float, float], times: np.ndarray) -> np.ndarray:
    obs = Observer(*lat_lon)
    return np.array([elevation(obs, t.replace(tzinfo=UTC)) for t in times.astype(datetime)])


def _year(step_min: int, year: int = 2026) -> np.ndarray:
    t0 = np.datetime64(f"{year}-01-01T00:00:00", "us")
    return t0 + np.arange(0, 366 * 24 * 60, step_min).astype("timedelta64[m]")


def test_a_year_at_hagen_agrees_with_astral_within_a_tenth_of_a_degree() -> None:
    times = _year(step_min=23)  # every 23 minutes, so every time of day comes round
    ours = sun_elevation_series(HAGEN, times)
    ref = _astral(HAGEN, times)
    assert np.abs(ours - ref).max() < 0.1
    # and the seasons are there: the noon sun near 90 - 51.36 ± 23.44 at the solstices
    assert 61.9 < ours.max() < 62.4
    solstice = (times >= np.datetime64("2026-12-21")) & (times < np.datetime64("2026-12-22"))
    assert 15.0 < ours[solstice].max() < 15.4
    assert ours.min() < -60


@pytest.mark.parametrize(
    ("place", "lat_lon"),
    [
        ("Longyearbyen", (78.22, 15.65)),
        ("Tromsø", (69.65, 18.96)),
        ("McMurdo", (-77.85, 166.67)),
        ("date line", (-16.5, 179.99)),
        ("west of the date line", (64.8, -147.7)),
    ],
)
def test_high_latitudes_and_midnight_agree_with_astral(
    place: str, lat_lon: tuple[float, float]
) -> None:
    # every 10 minutes across UTC and local midnight on the solstices and equinoxes, where the
    # day wraps in the equations (UT minutes, true solar time, hour angle)
    days = ["2026-03-20", "2026-06-21", "2026-09-23", "2026-12-21", "2026-12-31"]
    times = np.concatenate(
        [
            np.datetime64(f"{d}T00:00:00", "us") + np.arange(-180, 180, 10).astype("timedelta64[m]")
            for d in days
        ]
        + [
            np.datetime64(f"{d}T12:00:00", "us") + np.arange(-720, 720, 10).astype("timedelta64[m]")
            for d in days
        ]
    )
    times = np.concatenate([times, times + np.timedelta64(59_999_999, "us")])  # 1 µs before
    ours = sun_elevation_series(lat_lon, times)
    assert np.abs(ours - _astral(lat_lon, times)).max() < 0.1, place


def test_polar_night_and_midnight_sun() -> None:
    svalbard = (78.22, 15.65)
    dec = np.datetime64("2026-12-21T00:00", "us") + np.arange(0, 1440, 5).astype("timedelta64[m]")
    jun = np.datetime64("2026-06-21T00:00", "us") + np.arange(0, 1440, 5).astype("timedelta64[m]")
    assert sun_elevation_series(svalbard, dec).max() < -6  # not even civil twilight at noon
    assert sun_elevation_series(svalbard, jun).min() > 6  # the sun stays up at midnight


def test_the_scalar_the_live_shell_calls_is_bit_identical_to_the_series(
    demo_layout: SiteLayout,
) -> None:
    rng = np.random.default_rng(7)
    start_us = np.datetime64("2026-01-01T00:00:00", "us").astype(np.int64)
    us = np.sort(start_us + rng.integers(0, 366 * 86_400 * 10**6, size=1500))
    times = us.astype("datetime64[us]")
    series = sun_elevation_series(demo_layout, times)
    scalar = np.array(
        [sun_elevation_deg(demo_layout, t.replace(tzinfo=UTC)) for t in times.astype(datetime)]
    )
    assert np.array_equal(series, scalar)  # exactly, not approximately
    # whatever the array's length or position of the element
    assert np.array_equal(sun_elevation_series(demo_layout, times[7:8]), series[7:8])
    # epoch seconds as datetime.timestamp() gives them are the same instants
    stamps = np.array([t.replace(tzinfo=UTC).timestamp() for t in times.astype(datetime)])
    assert np.array_equal(sun_elevation_series(demo_layout, stamps), series)


def test_any_time_zone_names_the_same_instant(demo_layout: SiteLayout) -> None:
    t = datetime(2026, 11, 25, 16, 41, 7, 123456, tzinfo=UTC)
    berlin = t.astimezone(ZoneInfo("Europe/Berlin"))
    assert sun_elevation_deg(demo_layout, t) == sun_elevation_deg(demo_layout, berlin)
    # and the elevation moves: the sun sets over Hagen around 16:20 local in late November
    later = sun_elevation_deg(demo_layout, t + timedelta(minutes=10))
    assert later < sun_elevation_deg(demo_layout, t) < 0


def test_shapes_and_refusals(demo_layout: SiteLayout) -> None:
    grid = _year(step_min=60)[:48].reshape(2, 24)
    assert sun_elevation_series(demo_layout, grid).shape == (2, 24)
    with pytest.raises(ValueError, match="timezone-aware"):
        sun_elevation_deg(demo_layout, datetime(2026, 1, 1, 12))
    with pytest.raises(TypeError, match="datetime64 or seconds"):
        sun_elevation_series(demo_layout, np.array(["noon"]))
