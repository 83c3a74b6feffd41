"""Benchmark: history throughput. Prints JSON.

- SQLite: readings recorded per second, in batches of 1,000 (one transaction each);
- SQLite: ``compact()`` of 1,000,000 raw readings into 15-minute aggregates, and the file size
  before and after;
- outbox: line-protocol lines formatted and appended per second (batches of 1,000);
- InfluxDB mirror end to end: lines per second from the outbox into a real VictoriaMetrics
  (``/api/v2/write``), acknowledged, read back and counted. Skipped (reported as such) when the
  ``victoria-metrics`` binary is missing; ``scripts/install-test-services.sh`` installs it.

Usage: python bench/history_throughput.py [--rows 1000000] [--send-lines 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from laterne.drivers.history.influx import InfluxHistory, reading_line
from laterne.drivers.history.outbox import Outbox
from laterne.drivers.history.sqlite_store import SqliteHistory
from laterne.models.site import InfluxConfig
from laterne.models.values import PointReading, Quality

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.drivers.victoria import VictoriaMetrics, find_binary  # noqa: E402

START = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)
QUALITIES = list(Quality)


def make_batches(rows: int, points: int, batch: int = 1000) -> list[list[PointReading]]:
    """``rows`` readings of ``points`` points, one reading per point per simulated minute."""
    rng = np.random.default_rng(1)
    values = rng.normal(100.0, 30.0, rows)
    quality = rng.choice(4, rows, p=[0.9, 0.05, 0.03, 0.02])
    names = [(f"dev-{i // 10}", f"p{i % 10}") for i in range(points)]
    out: list[list[PointReading]] = []
    for lo in range(0, rows, batch):
        chunk: list[PointReading] = []
        for i in range(lo, min(rows, lo + batch)):
            dev, pt = names[i % points]
            q = QUALITIES[quality[i]]
            v = float(values[i]) if q in (Quality.GOOD, Quality.STALE) else float("nan")
            chunk.append(PointReading(dev, pt, v, q, START + timedelta(minutes=i // points)))
        out.append(chunk)
    return out


def bench_sqlite(tmp: Path, rows: int, points: int) -> dict[str, Any]:
    batches = make_batches(rows, points)
    store = SqliteHistory(tmp / "history.sqlite")
    t0 = time.perf_counter()
    for b in batches:
        store.record_readings(b)
    record_s = time.perf_counter() - t0
    with store._locked() as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size_before = store.file_size_bytes()
    minutes = rows // points
    now = START + timedelta(minutes=minutes, days=1)
    t0 = time.perf_counter()
    report = store.compact(now, raw_retention_days=1, aggregate_minutes=15, reclaim=False)
    compact_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.compact(now, raw_retention_days=1)  # nothing left to fold: the reclaim step alone
    reclaim_s = time.perf_counter() - t0
    size_after = store.file_size_bytes()
    store.close()
    return {
        "rows": rows,
        "points": points,
        "record_readings_per_s": round(rows / record_s),
        "record_batch_ms": round(record_s / len(batches) * 1e3, 3),
        "compact_rows": report.rows_aggregated,
        "compact_buckets": report.buckets_written,
        "compact_s": round(compact_s, 3),
        "compact_rows_per_s": round(report.rows_aggregated / compact_s),
        "reclaim_s": round(reclaim_s, 3),
        "file_mb_before": round(size_before / 1e6, 1),
        "file_mb_after": round(size_after / 1e6, 2),
    }


def bench_outbox(tmp: Path, lines: int) -> dict[str, Any]:
    batches = make_batches(lines, 500)
    t0 = time.perf_counter()
    formatted = [[reading_line(r) for r in b] for b in batches]
    format_s = time.perf_counter() - t0
    box = Outbox(tmp / "outbox-bench.sqlite")
    t0 = time.perf_counter()
    for b in formatted:
        box.append(b)
    append_s = time.perf_counter() - t0
    box.close()
    return {
        "lines": lines,
        "format_lines_per_s": round(lines / format_s),
        "append_lines_per_s": round(lines / append_s),
        "append_batch_ms": round(append_s / len(formatted) * 1e3, 3),
    }


async def bench_send(tmp: Path, lines: int, batch_size: int) -> dict[str, Any]:
    binary = find_binary()
    if binary is None:
        return {"skipped": "victoria-metrics not installed (scripts/install-test-services.sh)"}
    vm = VictoriaMetrics(binary, tmp / "vm-data")
    vm.start()
    try:
        box = Outbox(tmp / "outbox-send.sqlite")
        cfg = InfluxConfig(url=vm.url, batch_size=batch_size, flush_interval_s=1.0)
        influx = InfluxHistory(cfg, None, box)
        expected = 0
        for b in make_batches(lines, 500):
            influx.record_readings(b)
            expected += sum(1 for r in b if r.value == r.value)  # NaN: no value field
        t0 = time.perf_counter()
        sent = await influx.flush()
        send_s = time.perf_counter() - t0
        influx.close()
        box.close()
        stored = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = vm.export('{__name__="reading_value"}')
            stored = len(got.get("reading_value", []))
            if stored >= expected:
                break
            await asyncio.sleep(0.5)
        return {
            "server": "victoria-metrics " + _vm_version(binary),
            "lines": sent,
            "batch_size": batch_size,
            "send_s": round(send_s, 3),
            "send_lines_per_s": round(sent / send_s),
            "reading_value_samples_expected": expected,
            "reading_value_samples_read_back": stored,
        }
    finally:
        vm.stop()


def _vm_version(binary: str) -> str:
    import subprocess

    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "victoria-metrics"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or f"({binary})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--points", type=int, default=1_000)
    parser.add_argument("--outbox-lines", type=int, default=200_000)
    parser.add_argument("--send-lines", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="laterne-bench-") as d:
        tmp = Path(d)
        result = {
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
            "sqlite": bench_sqlite(tmp, args.rows, args.points),
            "outbox": bench_outbox(tmp, args.outbox_lines),
            "influx_send": asyncio.run(bench_send(tmp, args.send_lines, args.batch_size)),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
