"""The traffic forecast on the shipped real counts: fallback, skill, persistence, holidays."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from laterne.models.forecast import (
    HOURS_PER_WEEK,
    MIN_TRAINING_H,
    ForecastError,
    ModelKind,
    TrafficModel,
    calendar_features,
    cv_rmse_pct,
    fit,
    from_json,
    predict,
    to_json,
)
from laterne.simulations.traffic import load_counts

BERLIN = ZoneInfo("Europe/Berlin")


def hourly_counts() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(UTC hours as datetime64, local hours, (H, D) hourly flows [veh/h]) of the shipped table."""
    table = load_counts()
    n_h = table.counts_veh.shape[0] // 4
    flows = table.counts_veh[: n_h * 4].reshape(n_h, 4, -1).sum(axis=1)
    local = table.slot_start[: n_h * 4 : 4]
    utc = np.array(
        [
            np.datetime64(t.replace(tzinfo=BERLIN).astimezone(UTC).replace(tzinfo=None), "s")
            for t in local.astype("M8[s]").astype(datetime)
        ]
    )
    return utc, local, flows


def busiest_detector(flows: np.ndarray) -> np.ndarray:
    out: np.ndarray = flows[:, int(np.nanargmax(np.nanmean(flows, axis=0)))]
    return out


def test_too_little_data_falls_back_to_the_hour_of_week_mean() -> None:
    utc, _, flows = hourly_counts()
    y = busiest_detector(flows)
    n = MIN_TRAINING_H - 24  # just under the threshold
    model = fit(utc[:n], y[:n], timezone="Europe/Berlin", subdivision=None)
    assert model.kind is ModelKind.HOUR_OF_WEEK_MEAN
    assert np.isnan(model.metrics.cv_rmse_pct)  # nothing could be held out
    # a week after the window: each hour is forecast as the mean of the same hours of the week
    later = utc[n - HOURS_PER_WEEK : n] + np.timedelta64(2 * HOURS_PER_WEEK, "h")
    expected = [np.nanmean(y[:n][k % HOURS_PER_WEEK :: HOURS_PER_WEEK]) for k in range(n - 168, n)]
    np.testing.assert_allclose(predict(model, later), expected)
    # with enough data the same call fits the ridge model
    assert fit(utc, y, subdivision=None).kind is ModelKind.RIDGE


def test_model_beats_same_hour_last_week_on_the_held_out_week() -> None:
    utc, _, flows = hourly_counts()
    total = flows.sum(axis=1)  # the whole intersection: NaN where a detector is missing
    # the shipped counts are not from Germany: their German holidays were ordinary days
    model = fit(utc, total, subdivision=None)
    m = model.metrics
    assert m.holdout_h == 7 * 24
    assert m.cv_rmse_pct < m.baseline_cv_rmse_pct
    # and per detector on the busy ones
    busy = np.nanmean(flows, axis=0) >= 100
    wins = [
        fit(utc, flows[:, c], subdivision=None).metrics.improvement_pct > 0
        for c in np.flatnonzero(busy)
    ]
    assert len(wins) >= 4 and all(wins)


def test_day_ahead_forecast_uses_only_older_flows() -> None:
    utc, _, flows = hourly_counts()
    y = busiest_detector(flows)
    cut = len(y) - 48
    model = fit(utc[:cut], y[:cut], subdivision=None)
    day = utc[cut : cut + 24]
    base = predict(model, day, utc[:cut], y[:cut])
    # flows measured during the forecast day cannot change its day-ahead forecast
    tampered = y[: cut + 24].copy()
    tampered[cut:] = 0.0
    np.testing.assert_array_equal(predict(model, day, utc[: cut + 24], tampered), base)
    assert cv_rmse_pct(base, y[cut : cut + 24]) < 100.0


def test_json_roundtrip_predicts_identically() -> None:
    utc, _, flows = hourly_counts()
    y = busiest_detector(flows).copy()
    y[len(y) - 30] = np.nan  # a gap in the stored recent week
    for model in (fit(utc, y), fit(utc[:100], y[:100])):
        text = to_json(model)
        back = from_json(text)
        assert isinstance(back, TrafficModel)
        assert back.kind is model.kind and back.training_end_utc == model.training_end_utc
        assert to_json(back) == text
        ahead = utc[-24:] + np.timedelta64(24, "h")
        np.testing.assert_array_equal(predict(back, ahead), predict(model, ahead))


@pytest.mark.parametrize("text", ["{}", "[]", "not json", '{"format": 99}'])
def test_from_json_rejects_what_is_not_a_model(text: str) -> None:
    with pytest.raises(ForecastError):
        from_json(text)


def test_christmas_is_a_holiday_and_forecast_like_a_sunday() -> None:
    christmas = datetime(2025, 12, 25, 7, tzinfo=UTC)  # a Thursday, 08:00 in Hagen
    thursday = datetime(2025, 12, 18, 7, tzinfo=UTC)
    sunday = datetime(2025, 12, 21, 7, tzinfo=UTC)
    how, day_kind, holiday = calendar_features([christmas, thursday, sunday], "Europe/Berlin", "NW")
    assert holiday.tolist() == [True, False, False]
    assert how[0] == how[2] != how[1]  # the holiday takes the Sunday's hour of week
    assert day_kind[0] == day_kind[2] != day_kind[1]
    _, _, no_cal = calendar_features([christmas], "Europe/Berlin", None)
    assert not no_cal[0]

    utc, _, flows = hourly_counts()
    y = busiest_detector(flows)
    nw, plain = fit(utc, y, subdivision="NW"), fit(utc, y, subdivision=None)
    p_nw = predict(nw, [christmas, thursday, sunday])
    p_plain = predict(plain, [christmas, thursday, sunday])
    assert p_nw[0] != p_plain[0]  # the calendar changes the holiday's forecast
    assert abs(p_nw[0] - p_nw[2]) < abs(p_nw[0] - p_nw[1])  # closer to Sunday than to Thursday


@pytest.mark.parametrize(
    ("times", "flows"),
    [
        ([datetime(2025, 1, 1, 0, 30, tzinfo=UTC)], [1.0]),  # not a whole hour
        ([datetime(2025, 1, 1)], [1.0]),  # naive
        ([datetime(2025, 1, 1, tzinfo=UTC)] * 2, [1.0, 2.0]),  # duplicate hour
        ([datetime(2025, 1, 1, tzinfo=UTC)], [-1.0]),  # negative flow
        ([datetime(2025, 1, 1, tzinfo=UTC)], [1.0, 2.0]),  # lengths differ
    ],
)
def test_fit_rejects_unusable_inputs(times: list[datetime], flows: list[float]) -> None:
    with pytest.raises(ForecastError):
        fit(times, np.array(flows))
