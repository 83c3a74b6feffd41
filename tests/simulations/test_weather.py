"""EPW parsing and the mapping of the typical year onto any date."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from laterne.simulations.weather import (
    HOURS_PER_YEAR,
    load_weather,
    outdoor_temp_c,
    outdoor_temp_c_array,
    parse_epw,
    utc64,
)

CET = timezone(timedelta(hours=1))  # the EPW's local standard time


def test_packaged_epw_has_a_full_plausible_year() -> None:
    w = load_weather()
    assert w.dry_bulb_c.shape == (HOURS_PER_YEAR,)
    assert w.global_horizontal_wh_m2.shape == (HOURS_PER_YEAR,)
    assert "Luedenscheid" in w.location
    january = w.dry_bulb_c[: 31 * 24].mean()
    july = w.dry_bulb_c[181 * 24 : 212 * 24].mean()
    assert -4.0 < january < 5.0
    assert 13.0 < july < 22.0
    assert -25.0 < w.dry_bulb_c.min() and w.dry_bulb_c.max() < 40.0
    assert w.global_horizontal_wh_m2.min() >= 0
    assert w.global_horizontal_wh_m2[: 31 * 24].mean() < w.global_horizontal_wh_m2[4000:4700].mean()
    assert w.dry_bulb_c[0] == -1.3  # the first data row, column 7


def test_row_i_is_the_end_of_hour_i_plus_1_in_local_standard_time() -> None:
    w = load_weather()
    # row 0 is 1 January, hour 1 (00:00-01:00 LST): its value holds at 01:00 LST = 00:00 UTC
    assert outdoor_temp_c(w, datetime(2025, 1, 1, 1, 0, tzinfo=CET)) == w.dry_bulb_c[0]
    assert outdoor_temp_c(w, datetime(2025, 1, 1, 0, 0, tzinfo=UTC)) == w.dry_bulb_c[0]
    assert outdoor_temp_c(w, datetime(2025, 3, 10, 14, 0, tzinfo=CET)) == pytest.approx(
        w.dry_bulb_c[(31 + 28 + 9) * 24 + 13]
    )


def test_linear_between_hours_and_wrapping_at_new_year() -> None:
    w = load_weather()
    mid = outdoor_temp_c(w, datetime(2025, 1, 1, 1, 30, tzinfo=CET))
    assert mid == pytest.approx((w.dry_bulb_c[0] + w.dry_bulb_c[1]) / 2)
    # 00:30 LST on 1 January lies between the last row (31 Dec 24:00) and the first
    wrap = outdoor_temp_c(w, datetime(2025, 1, 1, 0, 30, tzinfo=CET))
    assert wrap == pytest.approx((w.dry_bulb_c[-1] + w.dry_bulb_c[0]) / 2)


def test_any_year_maps_by_day_and_hour_and_leap_day_repeats_28_february() -> None:
    w = load_weather()
    a = outdoor_temp_c(w, datetime(2025, 7, 14, 12, 0, tzinfo=UTC))
    b = outdoor_temp_c(w, datetime(2031, 7, 14, 12, 0, tzinfo=UTC))
    assert a == b
    leap_day = outdoor_temp_c(w, datetime(2028, 2, 29, 12, 0, tzinfo=UTC))
    assert leap_day == outdoor_temp_c(w, datetime(2027, 2, 28, 12, 0, tzinfo=UTC))
    # after the leap day the calendar lines up again
    assert outdoor_temp_c(w, datetime(2028, 3, 1, 12, 0, tzinfo=UTC)) == outdoor_temp_c(
        w, datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    )


def test_array_form_matches_scalar_form() -> None:
    w = load_weather()
    times = [datetime(2025, 1, 15, 0, tzinfo=UTC) + timedelta(minutes=17 * k) for k in range(50)]
    arr = outdoor_temp_c_array(w, np.array([utc64(t) for t in times]))
    assert arr.shape == (50,)
    np.testing.assert_allclose(arr, [outdoor_temp_c(w, t) for t in times])


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        outdoor_temp_c(load_weather(), datetime(2025, 1, 1))


def _epw(rows: list[str]) -> str:
    header = ["LOCATION,Testtown,NW,DEU,SRC,1,51,7,1.0,100"] + [f"HEADER {i}" for i in range(7)]
    return "\n".join(header + rows) + "\n"


def _row(temp: str) -> str:
    cols = ["2011", "1", "1", "1", "0", "flags", temp] + ["0"] * 28
    return ",".join(cols)


def test_parse_epw_checks_row_count_and_missing_values() -> None:
    ok = parse_epw(_epw([_row("5.0")] * HOURS_PER_YEAR))
    assert ok.location == "Testtown, NW, DEU"
    assert np.all(ok.dry_bulb_c == 5.0)
    with pytest.raises(ValueError, match="8760"):
        parse_epw(_epw([_row("5.0")] * 100))
    with pytest.raises(ValueError, match="missing"):
        parse_epw(_epw([_row("5.0")] * 10 + [_row("99.9")] + [_row("5.0")] * 8749))
    with pytest.raises(ValueError, match="LOCATION"):
        parse_epw("not an epw\n")
