"""Benchmark: validating a city-sized site file. Prints JSON.

Generates a Hagen-sized district (by default 20,000 luminaires in 2,000 segments, 500 counters,
500 buildings of 2 zones) with :func:`laterne.simulations.generate.district_data`, writes it as
YAML to a temporary file and times :func:`laterne.models.site.load_site` on it (read, parse,
schema, cross-references) and then :meth:`laterne.models.layout.SiteLayout.from_config` on the
result (the arrays every cycle uses), as a controller does at start: the medians of ``--runs``
runs after one warm-up, each step on its own and the two together. The layout is timed right
after its load, as at a controller's start, so it pays for the collector's first passes over the
objects of the fresh site (loading runs with the cyclic collector paused); ``layout_alone`` is
the layout again after a ``gc.collect()`` outside the timing: the difference is that cost.

Usage: python bench/validate_site.py [--segments 2000] [--luminaires 20000] [--counters 500]
                                     [--buildings 500] [--zones 2] [--runs 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from laterne.models.layout import SiteLayout
from laterne.models.site import load_site
from laterne.simulations.generate import district_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=2000)
    ap.add_argument("--luminaires", type=int, default=20_000)
    ap.add_argument("--counters", type=int, default=500)
    ap.add_argument("--buildings", type=int, default=500)
    ap.add_argument("--zones", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    data = district_data(
        n_segments=args.segments,
        luminaires_total=args.luminaires,
        n_counters=args.counters,
        n_buildings=args.buildings,
        zones_per_building=args.zones,
    )
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with tempfile.TemporaryDirectory(prefix="laterne-bench-") as tmp:
        path = Path(tmp) / "district.yaml"
        path.write_text(
            yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        size_mb = path.stat().st_size / 1e6
        site = load_site(path)  # warm-up, and the counts below
        layout = SiteLayout.from_config(site)
        times_s: list[float] = []
        layout_s: list[float] = []
        alone_s: list[float] = []
        for _ in range(args.runs):
            del site, layout  # free the previous result outside the timing
            t0 = time.perf_counter()
            site = load_site(path)
            t1 = time.perf_counter()
            layout = SiteLayout.from_config(site)
            t2 = time.perf_counter()
            times_s.append(t1 - t0)
            layout_s.append(t2 - t1)
            del layout
            gc.collect()
            t3 = time.perf_counter()
            layout = SiteLayout.from_config(site)
            alone_s.append(time.perf_counter() - t3)
        total_s = [a + b for a, b in zip(times_s, layout_s, strict=True)]

    print(
        json.dumps(
            {
                "benchmark": "validate_site",
                "python": platform.python_version(),
                "libyaml": bool(getattr(yaml, "__with_libyaml__", False)),
                "file_mb": round(size_mb, 2),
                "segments": len(site.segments),
                "luminaires": sum(s.luminaires for s in site.segments),
                "buildings": len(site.buildings),
                "zones": sum(len(b.zones) for b in site.buildings),
                "devices": len(site.devices),
                "profiles": len(site.profiles),
                "runs": args.runs,
                "load_site_median_s": round(statistics.median(times_s), 3),
                "load_site_min_s": round(min(times_s), 3),
                "load_site_max_s": round(max(times_s), 3),
                "channels": layout.n_channels,
                "layout_median_s": round(statistics.median(layout_s), 3),
                "layout_min_s": round(min(layout_s), 3),
                "layout_max_s": round(max(layout_s), 3),
                "layout_alone_median_s": round(statistics.median(alone_s), 3),
                "load_site_and_layout_median_s": round(statistics.median(total_s), 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
