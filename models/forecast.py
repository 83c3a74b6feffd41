"""Day-ahead traffic forecast per counter channel: calendar profile plus recent lags, hourly.

Rule: pure functions over numpy arrays and frozen dataclasses; no clock, no files, no pickle.
The caller gives the times (UTC, whole hours) and the measured flows; :func:`fit` returns a
:class:`TrafficModel` that carries everything :func:`predict` needs — its training window, its
metrics and the last week of the flows it was trained on (for the lags) — and survives a
:func:`to_json` / :func:`from_json` roundtrip exactly.

Features of an hour ``t`` (local wall-clock time of the site's zone):

- the hour-of-week mean of the training flows (a public holiday counts as a Sunday), and the mean
  of its hour of day on its kind of day (working day, Saturday, Sunday/holiday) — for training
  rows both as leave-one-out means, so a row never sees its own flow;
- whether ``t`` falls on a public holiday of the site's state (``holidays`` package, ``DE`` with
  the subdivision, ``NW`` for Hagen);
- the flow at the same hour yesterday (``t - 24 h``) and last week (``t - 168 h``). Both are
  known a day ahead: a forecast issued at midnight for the coming day only needs hours before it.
  A lag that is missing is replaced by the hour-of-week mean.

A ridge regression (scikit-learn) weighs these features. With fewer than
:data:`MIN_TRAINING_H` valid hours the model is :attr:`ModelKind.HOUR_OF_WEEK_MEAN`: the
forecast is the hour-of-week mean (hours of the week never seen fall back to the same hour on
their kind of day, then to their hour of day, then to the overall mean).

School holidays are not a feature: the project has no table of them (the ``holidays`` package has
none for Germany); add one as a further calendar flag when it exists.

Metrics (:class:`ForecastMetrics`): the last :data:`HOLDOUT_H` hours of the training window are
held out, a model fitted on the hours before them forecasts them, and CV(RMSE) = RMSE / mean of
the measured flow is reported beside that of "same hour last week". The returned model is then
refitted on the whole window.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Final
from zoneinfo import ZoneInfo

import holidays
import numpy as np
import numpy.typing as npt
from sklearn.linear_model import Ridge

from laterne.models.values import BoolArray, FloatArray

__all__ = [
    "FORMAT_VERSION",
    "HOLDOUT_H",
    "HOURS_PER_WEEK",
    "MIN_TRAINING_H",
    "ForecastError",
    "ForecastMetrics",
    "ModelKind",
    "TrafficModel",
    "calendar_features",
    "cv_rmse_pct",
    "fit",
    "from_json",
    "predict",
    "to_json",
]

Datetime64Array = npt.NDArray[np.datetime64]

#: hours in a week (the period of the hour-of-week profile)
HOURS_PER_WEEK: Final = 168
#: fewer valid hourly flows than this [h] (two weeks) and the model is the hour-of-week mean:
#: the lag "same hour last week" needs a week of history before the first row it can learn from
MIN_TRAINING_H: Final = 14 * 24
#: length of the held-out tail the metrics are measured on [h]
HOLDOUT_H: Final = 7 * 24
#: version of the JSON layout written by :func:`to_json`
FORMAT_VERSION: Final = 1
#: ridge regularisation strength (features are flows of similar scale)
RIDGE_ALPHA: Final = 1.0

_LAGS_H: Final = (24, 168)
_N_DAY_KINDS: Final = 3  # working day, Saturday, Sunday/holiday


class ForecastError(ValueError):
    """The inputs to :func:`fit`, :func:`predict` or :func:`from_json` are unusable."""


class ModelKind(StrEnum):
    """Which forecast a :class:`TrafficModel` makes."""

    RIDGE = "ridge"  # calendar profile + lags, weighted by a ridge regression
    HOUR_OF_WEEK_MEAN = "hour_of_week_mean"  # too little data: the hour-of-week mean alone


@dataclass(frozen=True, slots=True)
class ForecastMetrics:
    """Quality on the held-out tail; NaN where there was too little data to hold any out.

    ``cv_rmse_pct`` is the model fitted without the tail, ``baseline_cv_rmse_pct`` the flow of the
    same hour a week earlier, both on the tail hours where the measured flow and the baseline are
    known; ``improvement_pct`` is how much lower the model's CV(RMSE) is [%].
    """

    holdout_start_utc: datetime | None
    holdout_h: int
    cv_rmse_pct: float
    baseline_cv_rmse_pct: float

    @property
    def improvement_pct(self) -> float:
        return 100.0 * (1.0 - self.cv_rmse_pct / self.baseline_cv_rmse_pct)


@dataclass(frozen=True, slots=True)
class TrafficModel:
    """A fitted forecast for one counter channel (see the module docstring).

    ``how_mean_veh_h`` has 168 values (Monday 00:00 local first), ``day_kind_mean_veh_h`` 72
    (24 hours of a working day, a Saturday, a Sunday/holiday). ``coef`` weighs the features in the
    order of :func:`_design` (how mean, day-kind mean, holiday, holiday × how mean, lag 24 h,
    lag 168 h). ``recent_veh_h`` are the last 168 hourly flows of the training window, ending at
    ``training_end_utc`` (exclusive), NaN where missing: the lags when no newer flows are given.
    """

    kind: ModelKind
    timezone: str
    subdivision: str | None  # German state (NW); None: no holiday calendar
    training_start_utc: datetime
    training_end_utc: datetime  # exclusive: the hour after the last training hour
    n_training_h: int  # hours with a valid flow in the window
    how_mean_veh_h: tuple[float, ...]
    day_kind_mean_veh_h: tuple[float, ...]
    coef: tuple[float, ...]
    intercept_veh_h: float
    recent_veh_h: tuple[float, ...]
    metrics: ForecastMetrics


# --------------------------------------------------------------------------- time and calendar


def _hours(times_utc: Datetime64Array | list[datetime]) -> npt.NDArray[np.int64]:
    """Hours since the epoch (UTC) of whole-hour times; aware datetimes or datetime64 (UTC)."""
    if isinstance(times_utc, list):
        if any(t.tzinfo is None for t in times_utc):
            raise ForecastError("times must be timezone-aware (UTC)")
        arr = np.array([t.astimezone(UTC).replace(tzinfo=None) for t in times_utc], "M8[s]")
    else:
        arr = np.asarray(times_utc).astype("M8[s]")
    secs = arr.astype(np.int64)
    if np.any(secs % 3600):
        raise ForecastError("times must be whole hours (hourly flows)")
    out: npt.NDArray[np.int64] = secs // 3600
    return out


def calendar_features(
    times_utc: Datetime64Array | list[datetime], timezone: str, subdivision: str | None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], BoolArray]:
    """Per time: local hour of week (holidays as Sunday), local hour-of-day × day-kind index
    (0–71), and whether it is a public holiday in Germany's ``subdivision`` (e.g. ``NW``; None:
    no holidays, for counts from outside Germany such as the shipped ones)."""
    return _calendar(_hours(times_utc), timezone, subdivision)


def _calendar(
    hours: npt.NDArray[np.int64], timezone: str, subdivision: str | None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], BoolArray]:
    try:
        zone = ZoneInfo(timezone)
    except (KeyError, ValueError) as exc:
        raise ForecastError(f"unknown time zone {timezone!r}") from exc
    n = hours.size
    if n == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty.copy(), np.zeros(0, bool)
    # local offset per distinct UTC day is not enough across DST; take it per hour, via unique
    uniq, inv = np.unique(hours, return_inverse=True)
    local = [datetime.fromtimestamp(int(h) * 3600, UTC).astimezone(zone) for h in uniq]
    years = sorted({t.year for t in local})
    wd = np.array([t.weekday() for t in local], np.int64)
    hod = np.array([t.hour for t in local], np.int64)
    if subdivision is None:
        hol = np.zeros(uniq.size, bool)
    else:
        try:
            cal = holidays.country_holidays("DE", subdiv=subdivision, years=years)
        except NotImplementedError as exc:
            raise ForecastError(f"no German holiday calendar for {subdivision!r}") from exc
        hol = np.array([date(t.year, t.month, t.day) in cal for t in local], bool)
    week_day = np.where(hol, 6, wd)
    how = week_day * 24 + hod
    kind = np.where(week_day == 6, 2, np.where(week_day == 5, 1, 0))
    return how[inv], (kind * 24 + hod)[inv], hol[inv]


# ------------------------------------------------------------------------------ the fitting


def _group_mean(idx: npt.NDArray[np.int64], y: FloatArray, n: int) -> tuple[FloatArray, FloatArray]:
    ok = np.isfinite(y)
    s = np.bincount(idx[ok], weights=y[ok], minlength=n).astype(float)
    c = np.bincount(idx[ok], minlength=n).astype(float)
    return s, c


def _profiles(
    how: npt.NDArray[np.int64], dk: npt.NDArray[np.int64], y: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Hour-of-week and hour × day-kind means; an hour of the week never seen takes its hour ×
    day-kind mean, one of those never seen its hour-of-day mean, then the overall mean."""
    ok = np.isfinite(y)
    overall = float(y[ok].mean()) if ok.any() else 0.0
    hs, hc = _group_mean(how % 24, y, 24)
    hod = np.where(hc > 0, hs / np.maximum(hc, 1), overall)
    s, c = _group_mean(dk, y, 24 * _N_DAY_KINDS)
    dk_mean = np.where(c > 0, s / np.maximum(c, 1), np.tile(hod, _N_DAY_KINDS))
    s, c = _group_mean(how, y, HOURS_PER_WEEK)
    fill = dk_mean[_how_kind() * 24 + np.arange(HOURS_PER_WEEK) % 24]
    how_mean = np.where(c > 0, s / np.maximum(c, 1), fill)
    return how_mean, dk_mean


def _how_kind() -> npt.NDArray[np.int64]:
    """Day kind (0 working day, 1 Saturday, 2 Sunday) of each hour of the week."""
    day = np.arange(HOURS_PER_WEEK) // 24
    out: npt.NDArray[np.int64] = np.where(day == 6, 2, np.where(day == 5, 1, 0))
    return out


def _lags(
    hours: npt.NDArray[np.int64], hist_hours: npt.NDArray[np.int64], hist_veh_h: FloatArray
) -> FloatArray:
    """(N, 2) flows at ``t - 24 h`` and ``t - 168 h`` looked up in the history, NaN if unknown."""
    out = np.full((hours.size, len(_LAGS_H)), np.nan)
    if hist_hours.size == 0:
        return out
    order = np.argsort(hist_hours, kind="stable")
    hh, hv = hist_hours[order], hist_veh_h[order]
    for j, lag in enumerate(_LAGS_H):
        want = hours - lag
        pos = np.clip(np.searchsorted(hh, want), 0, hh.size - 1)
        out[:, j] = np.where(hh[pos] == want, hv[pos], np.nan)
    return out


def _design(
    how_prof: FloatArray, dk_prof: FloatArray, hol: BoolArray, lags: FloatArray
) -> FloatArray:
    lag = np.where(np.isfinite(lags), lags, how_prof[:, None])
    h = hol.astype(float)
    return np.column_stack([how_prof, dk_prof, h, h * how_prof, lag])


def _fit_core(
    hours: npt.NDArray[np.int64], y: FloatArray, timezone: str, subdivision: str | None
) -> tuple[ModelKind, FloatArray, FloatArray, tuple[float, ...], float]:
    how, dk, hol = _calendar(hours, timezone, subdivision)
    how_mean, dk_mean = _profiles(how, dk, y)
    ok = np.isfinite(y)
    if int(ok.sum()) < MIN_TRAINING_H:
        return ModelKind.HOUR_OF_WEEK_MEAN, how_mean, dk_mean, (), 0.0
    # leave-one-out profiles for the training rows
    hs, hc = _group_mean(how, y, HOURS_PER_WEEK)
    ds, dc = _group_mean(dk, y, 24 * _N_DAY_KINDS)
    yo = np.where(ok, y, 0.0)
    loo_how = np.where(hc[how] > 1, (hs[how] - yo) / np.maximum(hc[how] - 1, 1), dk_mean[dk])
    loo_dk = np.where(dc[dk] > 1, (ds[dk] - yo) / np.maximum(dc[dk] - 1, 1), dk_mean[dk])
    x = _design(loo_how, loo_dk, hol, _lags(hours, hours[ok], y[ok]))
    reg = Ridge(alpha=RIDGE_ALPHA).fit(x[ok], y[ok])
    coef = tuple(float(c) for c in reg.coef_)
    return ModelKind.RIDGE, how_mean, dk_mean, coef, float(reg.intercept_)


def _predict_core(
    kind: ModelKind,
    how_mean: FloatArray,
    dk_mean: FloatArray,
    coef: tuple[float, ...],
    intercept: float,
    hours: npt.NDArray[np.int64],
    hist_hours: npt.NDArray[np.int64],
    hist_veh_h: FloatArray,
    timezone: str,
    subdivision: str | None,
) -> FloatArray:
    how, dk, hol = _calendar(hours, timezone, subdivision)
    if kind is ModelKind.HOUR_OF_WEEK_MEAN:
        out: FloatArray = how_mean[how].astype(float)
        return out
    x = _design(how_mean[how], dk_mean[dk], hol, _lags(hours, hist_hours, hist_veh_h))
    pred: FloatArray = np.maximum(x @ np.asarray(coef) + intercept, 0.0)
    return pred


def cv_rmse_pct(predicted_veh_h: FloatArray, measured_veh_h: FloatArray) -> float:
    """CV(RMSE) [%]: root-mean-square error over the mean measured flow, on pairs both known."""
    p, m = np.asarray(predicted_veh_h, float), np.asarray(measured_veh_h, float)
    ok = np.isfinite(p) & np.isfinite(m)
    if not ok.any() or m[ok].mean() <= 0:
        return math.nan
    return float(100.0 * np.sqrt(np.mean((p[ok] - m[ok]) ** 2)) / m[ok].mean())


def fit(
    times_utc: Datetime64Array | list[datetime],
    counts_veh_h: FloatArray,
    *,
    timezone: str = "Europe/Berlin",
    subdivision: str | None = "NW",
    holdout_h: int = HOLDOUT_H,
) -> TrafficModel:
    """Fit a forecast to hourly flows [veh/h] at whole UTC hours (NaN = not measured).

    The training window runs from the first to the last given hour. Raises
    :class:`ForecastError` for mismatched lengths, duplicate hours or negative flows.
    """
    hours = _hours(times_utc)
    y = np.asarray(counts_veh_h, dtype=float)
    if y.shape != hours.shape or hours.ndim != 1:
        raise ForecastError("times_utc and counts_veh_h must be 1-D of equal length")
    if hours.size == 0:
        raise ForecastError("no flows to fit")
    if np.unique(hours).size != hours.size:
        raise ForecastError("duplicate hours in times_utc")
    if np.any(y[np.isfinite(y)] < 0):
        raise ForecastError("negative flows")
    order = np.argsort(hours)
    hours, y = hours[order], y[order]
    ok = np.isfinite(y)

    metrics = ForecastMetrics(None, 0, math.nan, math.nan)
    if int(ok.sum()) >= MIN_TRAINING_H + holdout_h and holdout_h > 0:
        split = int(hours[-1]) + 1 - holdout_h
        head, tail = hours < split, hours >= split
        core = _fit_core(hours[head], y[head], timezone, subdivision)
        hist = head & ok
        pred = _predict_core(*core, hours[tail], hours[ok], y[ok], timezone, subdivision)
        base = _lags(hours[tail], hours[hist | (tail & ok)], y[hist | (tail & ok)])[:, 1]
        both = np.isfinite(base)
        metrics = ForecastMetrics(
            holdout_start_utc=datetime.fromtimestamp(split * 3600, UTC),
            holdout_h=holdout_h,
            cv_rmse_pct=cv_rmse_pct(np.where(both, pred, np.nan), y[tail]),
            baseline_cv_rmse_pct=cv_rmse_pct(base, y[tail]),
        )
    kind, how_mean, dk_mean, coef, intercept = _fit_core(hours, y, timezone, subdivision)
    end = int(hours[-1]) + 1
    recent = np.full(HOURS_PER_WEEK, np.nan)
    sel = hours >= end - HOURS_PER_WEEK
    recent[hours[sel] - (end - HOURS_PER_WEEK)] = y[sel]
    return TrafficModel(
        kind=kind,
        timezone=timezone,
        subdivision=subdivision,
        training_start_utc=datetime.fromtimestamp(int(hours[0]) * 3600, UTC),
        training_end_utc=datetime.fromtimestamp(end * 3600, UTC),
        n_training_h=int(ok.sum()),
        how_mean_veh_h=tuple(float(v) for v in how_mean),
        day_kind_mean_veh_h=tuple(float(v) for v in dk_mean),
        coef=coef,
        intercept_veh_h=intercept,
        recent_veh_h=tuple(float(v) for v in recent),
        metrics=metrics,
    )


def predict(
    model: TrafficModel,
    times_utc: Datetime64Array | list[datetime],
    history_times_utc: Datetime64Array | list[datetime] | None = None,
    history_veh_h: FloatArray | None = None,
) -> FloatArray:
    """Forecast flows [veh/h] at whole UTC hours.

    The lags come from ``history_*`` (measured hourly flows, e.g. up to the issuing midnight) and
    from the last training week stored in the model; a lag found in neither is replaced by the
    hour-of-week mean. Only hours at least 24 h before a forecast hour are used, so passing flows
    up to the issuing time gives a true day-ahead forecast.
    """
    hours = _hours(times_utc)
    end = int(model.training_end_utc.timestamp()) // 3600
    hh = np.arange(end - HOURS_PER_WEEK, end, dtype=np.int64)
    hv = np.asarray(model.recent_veh_h, float)
    if history_times_utc is not None or history_veh_h is not None:
        if history_times_utc is None or history_veh_h is None:
            raise ForecastError("give both history_times_utc and history_veh_h, or neither")
        ht = _hours(history_times_utc)
        hvv = np.asarray(history_veh_h, float)
        if hvv.shape != ht.shape:
            raise ForecastError("history_times_utc and history_veh_h differ in length")
        newer = ~np.isin(hh, ht)
        hh, hv = np.concatenate([hh[newer], ht]), np.concatenate([hv[newer], hvv])
    ok = np.isfinite(hv)
    return _predict_core(
        model.kind,
        np.asarray(model.how_mean_veh_h, float),
        np.asarray(model.day_kind_mean_veh_h, float),
        model.coef,
        model.intercept_veh_h,
        hours,
        hh[ok],
        hv[ok],
        model.timezone,
        model.subdivision,
    )


# ----------------------------------------------------------------------------- persistence


def _num(v: float) -> float | None:
    return None if math.isnan(v) else v


def _unnum(v: Any) -> float:
    return math.nan if v is None else float(v)


def to_json(model: TrafficModel) -> str:
    """The model as a JSON document (NaN as ``null``); :func:`from_json` reads it back exactly."""
    m = model.metrics
    doc = {
        "format": FORMAT_VERSION,
        "kind": model.kind.value,
        "timezone": model.timezone,
        "subdivision": model.subdivision,
        "training_start_utc": model.training_start_utc.isoformat(),
        "training_end_utc": model.training_end_utc.isoformat(),
        "n_training_h": model.n_training_h,
        "how_mean_veh_h": [_num(v) for v in model.how_mean_veh_h],
        "day_kind_mean_veh_h": [_num(v) for v in model.day_kind_mean_veh_h],
        "coef": list(model.coef),
        "intercept_veh_h": model.intercept_veh_h,
        "recent_veh_h": [_num(v) for v in model.recent_veh_h],
        "metrics": {
            "holdout_start_utc": None if m.holdout_start_utc is None
            else m.holdout_start_utc.isoformat(),
            "holdout_h": m.holdout_h,
            "cv_rmse_pct": _num(m.cv_rmse_pct),
            "baseline_cv_rmse_pct": _num(m.baseline_cv_rmse_pct),
        },
    }
    return json.dumps(doc, allow_nan=False)


def from_json(text: str) -> TrafficModel:
    """Read a model written by :func:`to_json`; :class:`ForecastError` if it is not one."""
    try:
        d = json.loads(text)
        if d["format"] != FORMAT_VERSION:
            raise ForecastError(f"unsupported forecast model format {d['format']!r}")
        m = d["metrics"]
        hs = m["holdout_start_utc"]
        model = TrafficModel(
            kind=ModelKind(d["kind"]),
            timezone=str(d["timezone"]),
            subdivision=None if d["subdivision"] is None else str(d["subdivision"]),
            training_start_utc=datetime.fromisoformat(d["training_start_utc"]),
            training_end_utc=datetime.fromisoformat(d["training_end_utc"]),
            n_training_h=int(d["n_training_h"]),
            how_mean_veh_h=tuple(_unnum(v) for v in d["how_mean_veh_h"]),
            day_kind_mean_veh_h=tuple(_unnum(v) for v in d["day_kind_mean_veh_h"]),
            coef=tuple(float(v) for v in d["coef"]),
            intercept_veh_h=float(d["intercept_veh_h"]),
            recent_veh_h=tuple(_unnum(v) for v in d["recent_veh_h"]),
            metrics=ForecastMetrics(
                holdout_start_utc=None if hs is None else datetime.fromisoformat(hs),
                holdout_h=int(m["holdout_h"]),
                cv_rmse_pct=_unnum(m["cv_rmse_pct"]),
                baseline_cv_rmse_pct=_unnum(m["baseline_cv_rmse_pct"]),
            ),
        )
    except ForecastError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ForecastError(f"not a forecast model document: {exc}") from exc
    if len(model.how_mean_veh_h) != HOURS_PER_WEEK or len(model.day_kind_mean_veh_h) != 72:
        raise ForecastError("forecast model document has profiles of the wrong length")
    if len(model.recent_veh_h) != HOURS_PER_WEEK:
        raise ForecastError("forecast model document has a recent week of the wrong length")
    if model.kind is ModelKind.RIDGE and len(model.coef) != 6:
        raise ForecastError("forecast model document has the wrong number of coefficients")
    return model

