"""Benchmark: Modbus read throughput of the driver for 200 devices x 50 registers.

10 gateway ports x 20 unit ids, every unit with one profile of u16/u32/f32 points over 50
contiguous input registers. The pymodbus servers run in a separate process
(``bench/_modbus_servers.py``), so the figures are the client's. One *poll* reads every device
once, concurrently, as the runtime does; reported per ``max_in_flight`` (1: one connection per
gateway, strictly serialised; N: a pool of N connections). Prints JSON.

Usage: python bench/modbus_throughput.py [--polls 50] [--gateways 10] [--units 20]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from _stats import latency_ms  # bench/ is on sys.path when run as a script

from laterne.drivers.field.modbus import ModbusDevice, ModbusGateway
from laterne.models.site import Device, DeviceProfile
from laterne.models.values import Quality
from laterne.simulations.ports import free_ports

HERE = Path(__file__).resolve().parent
NOW = datetime(2026, 1, 15, 22, 0, tzinfo=UTC)
REGISTERS = 50


def bench_profile() -> DeviceProfile:
    """20 u16, 8 u32 and 7 f32 points: 35 points over input registers 0..49, no gaps."""
    points: dict[str, dict[str, Any]] = {}
    address = 0
    for type_, n, width in (("u16", 20, 1), ("u32", 8, 2), ("f32", 7, 2)):
        for i in range(n):
            points[f"{type_}_{i}"] = {"table": "input", "address": address, "type": type_}
            address += width
    assert address == REGISTERS
    return DeviceProfile.model_validate({"protocol": "modbus", "points": points})


def _device(device_id: str, port: int, unit_id: int) -> Device:
    endpoint = {"host": "127.0.0.1", "port": port, "unit_id": unit_id}
    return Device.model_validate({"id": device_id, "profile": "bench", "endpoint": endpoint})


async def run(ports: list[int], units: int, polls: int, max_in_flight: int) -> dict[str, Any]:
    prof = bench_profile()
    gateways = [
        ModbusGateway("127.0.0.1", p, timeout_s=2.0, max_in_flight=max_in_flight) for p in ports
    ]
    devices = [
        ModbusDevice(_device(f"d{g}-{u}", gw.port, u), prof, gw)
        for g, gw in enumerate(gateways)
        for u in range(1, units + 1)
    ]
    try:
        for _ in range(3):  # connect, warm up
            await asyncio.gather(*(d.read(NOW) for d in devices))
        requests_before = sum(getattr(gw, "requests", 0) for gw in gateways)
        samples: list[float] = []
        cpu: list[float] = []
        bad = 0
        for _ in range(polls):
            c0, t0 = time.process_time(), time.perf_counter()
            results = await asyncio.gather(*(d.read(NOW) for d in devices))
            samples.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            bad += sum(1 for r in results for p in r.values() if p.quality is not Quality.GOOD)
        requests = sum(getattr(gw, "requests", 0) for gw in gateways) - requests_before
    finally:
        for gw in gateways:
            await gw.close()
    median_s = float(np.median(samples))
    n_points = len(devices) * len(prof.points)
    return {
        "max_in_flight": max_in_flight,
        "connections": len(gateways) * max_in_flight,
        "devices": len(devices),
        "points_per_poll": n_points,
        "registers_per_poll": len(devices) * REGISTERS,
        "requests_per_poll": requests / polls,
        "poll": latency_ms(samples),
        # the client's own CPU time per poll: steadier than wall time on a shared machine
        "client_cpu_per_poll_ms_median": round(float(np.median(cpu)) * 1e3, 3),
        "points_per_s_median": round(n_points / median_s),
        "registers_per_s_median": round(len(devices) * REGISTERS / median_s),
        "bad_points": bad,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--polls", type=int, default=50)
    ap.add_argument("--gateways", type=int, default=10)
    ap.add_argument("--units", type=int, default=20)
    ap.add_argument("--in-flight", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    ports = free_ports(args.gateways)
    server = subprocess.Popen(
        [sys.executable, str(HERE / "_modbus_servers.py"), ",".join(map(str, ports)),
         str(args.units), str(REGISTERS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "READY":
            raise RuntimeError("the server process did not start")
        gc.collect()
        results = [await run(ports, args.units, args.polls, n) for n in args.in_flight]
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(
        json.dumps(
            {
                "benchmark": "modbus read throughput (servers in a separate process)",
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                f"python {platform.python_version()}",
                "gateways": args.gateways,
                "units_per_gateway": args.units,
                "registers_per_device": REGISTERS,
                "polls": args.polls,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
