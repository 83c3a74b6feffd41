"""Latency statistics every benchmark prints the same way: median, p99 and max in milliseconds."""

from __future__ import annotations

import numpy as np


def latency_ms(samples_s: list[float]) -> dict[str, float]:
    """Median, 99th percentile and maximum of durations given in seconds, in ms."""
    ms = np.array(samples_s) * 1e3
    return {
        "median_ms": round(float(np.median(ms)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
    }
