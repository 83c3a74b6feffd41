"""Benchmark: one evaluation of the lamp and driver fault detection for a generated district, with
every lamp working and with a share of the segments drawing too little (open faults). Prints JSON.
Usage: python bench/fault_detection.py [--segments 2000] [--evaluations 200] [--low-share 0.5]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta

import numpy as np
from _stats import latency_ms  # bench/ is on sys.path when run as a script

from laterne.controller.faults import FaultParams, evaluate_faults, initial_fault_state
from laterne.models.layout import SiteLayout
from laterne.simulations.generate import generate_district

T0 = datetime(2026, 1, 1, 18, 0, tzinfo=UTC)


def run(layout: SiteLayout, evaluations: int, low_share: float, seed: int) -> dict[str, object]:
    n = layout.n_segments
    rng = np.random.default_rng(seed)
    dims = rng.choice([30.0, 50.0, 100.0], size=n)
    low = rng.random(n) < low_share  # these segments draw 70 % of expected: lamps out
    power = layout.segments.power_w(dims) * np.where(low, 0.7, 1.0)
    state, params, samples = initial_fault_state(layout), FaultParams(), []
    for k in range(evaluations):
        t = time.perf_counter()
        state = evaluate_faults(layout, params, state, power, dims, T0 + timedelta(minutes=k)).state
        samples.append(time.perf_counter() - t)
    return {"low_share": low_share, "open_faults": len(state.faults), **latency_ms(samples)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--segments", type=int, default=2000)
    ap.add_argument("--evaluations", type=int, default=200)
    ap.add_argument("--low-share", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    site = generate_district(
        n_segments=a.segments, luminaires_total=10 * a.segments, n_counters=max(1, a.segments // 4)
    )
    layout = SiteLayout.from_config(site)
    out = {
        "segments": layout.n_segments,
        "evaluations": a.evaluations,
        "healthy": run(layout, a.evaluations, 0.0, a.seed),
        "faulty": run(layout, a.evaluations, a.low_share, a.seed),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
