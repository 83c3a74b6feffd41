"""Benchmark: duration of one control cycle (poll over real Modbus TCP and OPC-UA on loopback,
observation, policy, safety filter, writes, SQLite history), for the demo site and for a generated
district. Prints JSON. Usage: python bench/cycle_time.py [--cycles 100] [--luminaires 2000] ...

The emulated site runs in a child process (``bench/_emulator_proc.py``, stepping the plant on its
own wall clock at speed 1), so serving the devices does not count as polling them. ``--inproc``
runs the emulator in the benchmark's own event loop instead, stepped before every cycle (the
figures before the split).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from _stats import latency_ms  # bench/ is on sys.path when run as a script

from laterne.controller.clock import ManualClock
from laterne.controller.policy import Policy
from laterne.controller.runtime import Runtime
from laterne.drivers.field.factory import build_clients
from laterne.drivers.history.sqlite_store import SqliteHistory
from laterne.models.layout import SiteLayout
from laterne.models.site import SiteConfig, load_site
from laterne.models.values import Observation
from laterne.simulations.emulator import SiteEmulator
from laterne.simulations.generate import generate_district
from laterne.simulations.ports import with_free_ports

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
START = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)  # a winter night: lights on, traffic varying


@asynccontextmanager
async def emulator_process(site: SiteConfig) -> AsyncIterator[None]:
    """The site emulated by ``bench/_emulator_proc.py`` in a child process, until exit."""
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "site.json"
        dump.write_text(json.dumps(site.model_dump(mode="json", exclude_unset=True)))
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "_emulator_proc.py"), str(dump), START.isoformat()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.to_thread(proc.stdout.readline)
            if line.strip() != "READY":
                raise RuntimeError(f"the emulator process did not start (said {line!r})")
            yield
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 30)


async def bench_site(
    name: str, site: SiteConfig, cycles: int, *, inproc: bool = False
) -> dict[str, Any]:
    site = with_free_ports(site)
    clock = ManualClock(START)
    emu: SiteEmulator | None = None
    async with AsyncExitStack() as stack:
        if inproc:
            emu = await stack.enter_async_context(SiteEmulator(site, start=START))
        else:
            await stack.enter_async_context(emulator_process(site))
        return await _bench_cycles(name, site, clock, cycles, emu)


async def _bench_cycles(
    name: str, site: SiteConfig, clock: ManualClock, cycles: int, emu: SiteEmulator | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        history = SqliteHistory(Path(tmp) / "bench.sqlite")
        runtime = Runtime(site, build_clients(site), history, clock)
        try:
            samples: list[float] = []
            parts: dict[str, list[float]] = {"poll": [], "decide": [], "write": [], "record": []}
            writes = 0
            failed = 0
            for i in range(cycles + 3):
                if emu is not None:
                    await emu.step(clock.now())
                t0 = time.perf_counter()
                report = await runtime.run_cycle()
                dt = time.perf_counter() - t0
                if i >= 3:  # the first cycles connect and write every command
                    samples.append(dt)
                    failed += report.failed_writes
                    writes += report.writes
                    parts["poll"].append(report.poll_s)
                    parts["decide"].append(report.decide_s)
                    parts["write"].append(report.write_s)
                    parts["record"].append(report.record_s)
                clock.advance(max(d.poll_interval_s for d in site.devices))
            offline = [k for k, v in runtime.device_states.items() if v.quality.value != "good"]
        finally:
            await runtime.close()
            history.close()
    lay = runtime.layout
    return {
        "site": name,
        "emulator": "separate process" if emu is None else "in-process",
        "devices": len(site.devices),
        "segments": lay.n_segments,
        "luminaires": int(lay.segments.luminaires.sum()),
        "counter_channels": lay.n_channels,
        "zones": lay.n_zones,
        "cycles": len(samples),
        "cycle": latency_ms(samples),
        **{f"{name}": latency_ms(values) for name, values in parts.items()},
        "writes_per_cycle": round(writes / len(samples), 1),
        "failed_writes": failed,
        "devices_not_good": len(offline),
    }


def bench_policy(site: SiteConfig, steps: int = 1000) -> dict[str, Any]:
    lay = SiteLayout.from_config(site)
    pol = Policy(lay, site.policy)
    st = pol.initial_state()
    rng = np.random.default_rng(0)
    counts = np.zeros(lay.n_channels)
    samples = []
    for i in range(steps):
        counts = counts + rng.poisson(20, lay.n_channels)
        obs = Observation(
            ts=START,
            counter_veh=counts,
            counter_ok=np.ones(lay.n_channels, dtype=bool),
            zone_temp_c=np.full(lay.n_zones, 20.0),
            zone_ok=np.ones(lay.n_zones, dtype=bool),
            segment_ok=np.ones(lay.n_segments, dtype=bool),
        )
        now = datetime.fromtimestamp(START.timestamp() + 10 * i, UTC)
        t0 = time.perf_counter()
        st, _ = pol.step(st, obs, now)
        samples.append(time.perf_counter() - t0)
    return {"site": "policy step only", "segments": lay.n_segments, **latency_ms(samples)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--luminaires", type=int, default=2000)
    ap.add_argument("--segments", type=int, default=200)
    ap.add_argument("--counters", type=int, default=50)
    ap.add_argument("--buildings", type=int, default=20)
    ap.add_argument("--inproc", action="store_true", help="emulator in this process")
    args = ap.parse_args()
    district = generate_district(
        n_segments=args.segments,
        luminaires_total=args.luminaires,
        n_counters=args.counters,
        n_buildings=args.buildings,
    )
    results = [
        await bench_site(
            "demo", load_site(ROOT / "site-configs" / "demo.yaml"), args.cycles, inproc=args.inproc
        ),
        await bench_site("generated district", district, args.cycles, inproc=args.inproc),
        bench_policy(district),
    ]
    print(
        json.dumps(
            {
                "benchmark": "control cycle",
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                f"python {platform.python_version()}",
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
