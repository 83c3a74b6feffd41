"""Traffic profile from the packaged counts, and the vectorised flow function."""

from __future__ import annotations

import numpy as np
import pytest

from laterne.simulations.traffic import (
    ROAD_PEAK_FLOW_VEH_H,
    SLOTS_PER_DAY,
    TrafficProfile,
    flow_fraction,
    flow_veh_h,
    load_counts,
    parse_counts,
    profile_from_counts,
    typical_profile,
)


def hours(profile: np.ndarray, start_h: float, end_h: float) -> np.ndarray:
    return profile[int(start_h * 4) : int(end_h * 4)]


def test_packaged_counts_cover_26_days_of_22_detectors_with_gaps() -> None:
    table = load_counts()
    assert table.counts_veh.shape == (26 * SLOTS_PER_DAY, 22)
    assert str(table.slot_start[0]) == "2024-04-18T00:00"
    # four 15-minute slots are absent from the file: they are NaN, not zero
    missing_slots = np.isnan(table.counts_veh).all(axis=1)
    assert missing_slots.sum() == 4


def test_weekday_profile_has_a_morning_peak_and_quiet_nights() -> None:
    p = typical_profile()
    assert p.weekday.max() == pytest.approx(1.0)
    night = hours(p.weekday, 1, 4).mean()
    morning = hours(p.weekday, 6.5, 9).max()
    late_morning = hours(p.weekday, 9.5, 12).mean()
    assert night < 0.15
    assert morning > 0.8
    assert morning > late_morning + 0.1  # a real rush hour, not a plateau
    assert hours(p.weekend, 1, 4).mean() < 0.15


def test_weekend_mornings_are_quieter_than_weekday_mornings() -> None:
    p = typical_profile()
    assert hours(p.weekend, 6.5, 8.5).mean() < 0.5 * hours(p.weekday, 6.5, 8.5).mean()
    assert p.weekend.max() < p.weekday.max()


def _synthetic_counts() -> str:
    """Mon, Tue and Sat; slot 10 missing everywhere; detector 2 silent on Monday.

    Every detector counts ``k`` vehicles in slot ``k`` on weekdays and ``2 k`` on Saturday, so
    every correct mean is exactly ``k`` (weekday) or ``2 k`` (weekend).
    """
    lines = ["timestamp,detector,vehicles"]
    for day, factor, detectors in (
        ("2024-05-06", 1, (1,)),
        ("2024-05-07", 1, (1, 2)),
        ("2024-05-11", 2, (1, 2)),
    ):
        for k in range(SLOTS_PER_DAY):
            if k == 10:
                continue
            hh, mm = divmod(k * 15, 60)
            for det in detectors:
                lines.append(f"{day} {hh:02d}:{mm:02d}:00,{det},{factor * k}")
    return "\n".join(lines) + "\n"


def test_gaps_are_left_out_of_means_and_empty_slots_interpolated() -> None:
    table = parse_counts(_synthetic_counts())
    assert table.counts_veh.shape == (6 * SLOTS_PER_DAY, 2)  # Mon..Sat, days without rows too
    assert np.isnan(table.counts_veh[:SLOTS_PER_DAY, 1]).all()
    p = profile_from_counts(table)
    k = np.arange(SLOTS_PER_DAY)
    peak = SLOTS_PER_DAY - 1
    # Wed-Fri have no rows at all: whole missing days do not drag the weekday mean down
    np.testing.assert_allclose(p.weekday, k / peak)
    np.testing.assert_allclose(p.weekend, 2 * k / peak)  # slot 10 filled by interpolation


def test_a_kind_of_day_without_any_data_is_an_error() -> None:
    weekdays_only = "\n".join(
        line for line in _synthetic_counts().splitlines() if not line.startswith("2024-05-11")
    )
    with pytest.raises(ValueError, match="no data at all"):
        profile_from_counts(parse_counts(weekdays_only))


def test_bad_header_is_rejected() -> None:
    with pytest.raises(ValueError, match="header"):
        parse_counts("time,det,veh\n")


def test_profile_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError):
        TrafficProfile(weekday=np.ones(95), weekend=np.ones(96))


def test_flow_is_vectorised_and_scales_with_peak() -> None:
    p = typical_profile()
    times = np.array(
        ["2025-06-02T08:00", "2025-06-02T03:00", "2025-06-07T08:00"], dtype="datetime64[m]"
    )
    peaks = np.array([ROAD_PEAK_FLOW_VEH_H["main"], ROAD_PEAK_FLOW_VEH_H["residential"]])
    flow = flow_veh_h(p, times[:, None], peaks)
    assert flow.shape == (3, 2)
    np.testing.assert_allclose(flow[:, 0] / flow[:, 1], 1200 / 120)
    monday_8, monday_3, saturday_8 = flow[:, 0]
    assert monday_8 > 5 * monday_3
    assert saturday_8 < 0.6 * monday_8
    assert np.all(flow <= peaks)


def test_flow_is_linear_between_slot_centres_and_continuous_at_midnight() -> None:
    p = typical_profile()
    # Tuesday: the centre of slot 32 (08:00-08:15) is 08:07:30
    centre = flow_fraction(p, np.array(["2025-06-03T08:07:30"], dtype="datetime64[s]"))
    assert centre[0] == pytest.approx(p.weekday[32])
    half = flow_fraction(p, np.array(["2025-06-03T08:15:00"], dtype="datetime64[s]"))
    assert half[0] == pytest.approx((p.weekday[32] + p.weekday[33]) / 2)
    # Friday -> Saturday midnight: the weekend profile takes over without a jump
    around = np.array(["2025-06-06T23:59:59", "2025-06-07T00:00:00"], dtype="datetime64[s]")
    before, after = flow_fraction(p, around)
    assert after == pytest.approx(before, abs=1e-3)
    at_midnight = (p.weekday[95] + p.weekend[0]) / 2
    assert after == pytest.approx(at_midnight, abs=1e-3)


def test_road_type_peaks() -> None:
    assert dict(ROAD_PEAK_FLOW_VEH_H) == {
        "main": 1200.0,
        "collector": 500.0,
        "residential": 120.0,
        "pedestrian": 20.0,
    }
