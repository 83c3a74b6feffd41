"""Evaluation: day-ahead hourly traffic forecast on the shipped real counts. Prints JSON.

The packaged count table (22 detectors, 2024-04-18 … 2024-05-13, 15-minute counts, local time;
see ``simulations/data/README.md``) is summed to hourly flows [veh/h] (an hour with a missing
quarter is missing) and read as Hagen local time (Europe/Berlin, holidays of NW). The last
``--test-days`` days are forecast one day at a time: for each day, per detector, a model is
fitted on every hour before that day's local midnight and forecasts its 24 hours with the
measured flows up to that midnight as history (retrained daily, as the controller would).

Printed: CV(RMSE) of the model and of "same hour last week" pooled over all detector-hours and
per detector, the improvement [%], and the under-lighting share — the share of intervals where the
forecast alone is below the measured flow (hourly, and per 15-minute slot against 4 × the
quarter's count). The policy takes the larger of measured and forecast flow, so with the
measured-flow rule in place the forecast alone never causes under-lighting; this share is what it
would be if the forecast chose the band by itself.

The shipped counts are not from Germany: 2024-05-01 and 2024-05-09 (NW holidays) were ordinary
working days there, so the run with the NW calendar (``nw_holidays``, as deployed in Hagen) is
beside one without a holiday calendar (``no_holidays``); ``per_day`` shows each day's figures
(2024-05-10 is an anomaly of the data set: flow moves between detectors 18, 19 and 20).

Usage: python bench/forecast_eval.py [--test-days 7] [--min-mean-veh-h 0] [--per-detector]
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np

from laterne.models.forecast import cv_rmse_pct, fit, predict
from laterne.simulations.traffic import load_counts

ZONE = "Europe/Berlin"
SUBDIVISION = "NW"


def _local_to_utc_hours(local: np.ndarray) -> np.ndarray:
    zone = ZoneInfo(ZONE)
    out = []
    for t in local.astype("M8[s]").astype(datetime):
        aware = t.replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
        out.append(np.datetime64(aware, "s"))
    return np.array(out, dtype="M8[s]")


def evaluate(
    hourly: np.ndarray,
    quarters: np.ndarray,
    times: np.ndarray,
    local_hours: np.ndarray,
    detectors: np.ndarray,
    keep: np.ndarray,
    test_days: int,
    subdivision: str | None,
) -> dict[str, object]:
    """Day-ahead forecasts of the last ``test_days`` days, retrained daily; the figures."""
    n_days = hourly.shape[0] // 24
    first = n_days - test_days
    t0 = first * 24
    pred = np.full((test_days * 24, hourly.shape[1]), np.nan)
    kinds: set[str] = set()
    for d in range(first, n_days):
        lo, hi = d * 24, (d + 1) * 24
        for c in range(hourly.shape[1]):
            model = fit(times[:lo], hourly[:lo, c], timezone=ZONE, subdivision=subdivision,
                        holdout_h=0)
            kinds.add(model.kind.value)
            pred[lo - t0 : hi - t0, c] = predict(model, times[lo:hi], times[:lo], hourly[:lo, c])
    measured = hourly[t0 : n_days * 24]
    base = hourly[t0 - 168 : n_days * 24 - 168]
    both = np.isfinite(measured) & np.isfinite(base) & np.isfinite(pred) & keep[None, :]
    model_cv = cv_rmse_pct(np.where(both, pred, np.nan), measured)
    base_cv = cv_rmse_pct(np.where(both, base, np.nan), measured)
    per_day = {}
    for k in range(test_days):
        rows = slice(k * 24, (k + 1) * 24)
        ok = both[rows]
        per_day[str(local_hours[t0 + k * 24])[:10]] = {
            "model_cv_rmse_pct": round(cv_rmse_pct(pred[rows][ok], measured[rows][ok]), 1),
            "same_hour_last_week_cv_rmse_pct": round(
                cv_rmse_pct(base[rows][ok], measured[rows][ok]), 1
            ),
        }
    per_detector = {}
    for c, det in enumerate(detectors):
        if not keep[c]:
            continue
        ok = both[:, c]
        per_detector[str(int(det))] = {
            "mean_veh_h": round(float(np.mean(measured[ok, c])), 1),
            "model_cv_rmse_pct": round(cv_rmse_pct(pred[ok, c], measured[ok, c]), 1),
            "same_hour_last_week_cv_rmse_pct": round(cv_rmse_pct(base[ok, c], measured[ok, c]), 1),
        }
    under_h = float(np.mean(pred[both] < measured[both]))
    # per 15-minute slot: the hourly forecast against the quarter's flow (4 × its count)
    q_test = quarters[t0 : n_days * 24] * 4.0  # (H, 4, D) [veh/h]
    p_q = np.broadcast_to(pred[:, None, :], q_test.shape)
    ok_q = np.isfinite(q_test) & np.isfinite(p_q) & keep[None, None, :]
    under_q = float(np.mean(p_q[ok_q] < q_test[ok_q]))
    model_cvs = [v["model_cv_rmse_pct"] for v in per_detector.values()]
    base_cvs = [v["same_hour_last_week_cv_rmse_pct"] for v in per_detector.values()]
    return {
        "subdivision": subdivision,
        "model_kinds": sorted(kinds),
        "hours_compared": int(both.sum()),
        "model_cv_rmse_pct": round(model_cv, 2),
        "same_hour_last_week_cv_rmse_pct": round(base_cv, 2),
        "improvement_pct": round(100.0 * (1.0 - model_cv / base_cv), 2),
        "median_detector_model_cv_rmse_pct": round(float(np.median(model_cvs)), 2),
        "median_detector_same_hour_last_week_cv_rmse_pct": round(float(np.median(base_cvs)), 2),
        "under_lighting_share_hourly": round(under_h, 4),
        "under_lighting_share_15min": round(under_q, 4),
        "per_day": per_day,
        "per_detector": per_detector,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test-days", type=int, default=7)
    ap.add_argument("--min-mean-veh-h", type=float, default=0.0,
                    help="leave out detectors whose mean flow is below this [veh/h]")
    ap.add_argument("--per-detector", action="store_true", help="print figures per detector")
    args = ap.parse_args()

    table = load_counts()
    q = table.counts_veh  # (T, D) per 15 min
    n_h = q.shape[0] // 4
    quarters = q[: n_h * 4].reshape(n_h, 4, -1)
    hourly = quarters.sum(axis=1)  # NaN if any quarter is missing
    local_hours = table.slot_start[: n_h * 4 : 4]
    times = _local_to_utc_hours(local_hours)
    keep = np.nanmean(hourly, axis=0) >= args.min_mean_veh_h
    runs = {}
    for name, subdivision in (("nw_holidays", SUBDIVISION), ("no_holidays", None)):
        res = evaluate(hourly, quarters, times, local_hours, table.detectors, keep,
                       args.test_days, subdivision)
        if not args.per_detector:
            res.pop("per_detector")
        runs[name] = res
    print(json.dumps({
        "data": "simulations/data/intersection85_15min_counts.csv",
        "timezone": ZONE,
        "test_days": args.test_days,
        "test_start_local": str(local_hours[hourly.shape[0] - args.test_days * 24]),
        "detectors": int(keep.sum()),
        "min_mean_veh_h": args.min_mean_veh_h,
        "targets": {"cv_rmse_pct_max": 15.0, "improvement_pct_min": 15.0},
        "runs": runs,
    }, indent=2))


if __name__ == "__main__":
    main()
