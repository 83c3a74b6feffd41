"""Benchmark: OPC-UA read throughput and freshness, polling vs subscription, over loopback.

An asyncua server in its own process (so that it does not share the client's event loop or
core) holds N Double nodes and rewrites every one of them each ``--period-ms`` with a fresh
source timestamp. One :class:`~laterne.drivers.field.opcua.OpcUaDevice` reads all N points:

* polling: ``read()`` is one Read service call over N nodes; we time it (median/p99) and derive
  points per second;
* subscription: one subscription with N monitored items; we count data-change notifications per
  second, time ``read()`` (answered from the table, no round trip) and measure the freshness of
  what it returns: the age of each value at read time, ``now - source timestamp``. That age
  includes up to one server update period (the value is only renewed that often) and up to one
  publishing interval.

Prints JSON. Usage: python bench/opcua_throughput.py [--nodes 1000] [--period-ms 100]
[--reads 200] [--seconds 10] [--publishing-ms 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import socket
import time
from datetime import UTC, datetime
from multiprocessing.synchronize import Event as EventType
from typing import Any

import numpy as np
from _stats import latency_ms  # bench/ is on sys.path when run as a script

from laterne.drivers.field.opcua import OpcUaDevice
from laterne.models.site import Device, DeviceProfile


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _node(i: int) -> str:
    return f"ns=2;s=bench.n{i:04d}"


# ------------------------------------------------------------------------- server process


async def _serve(
    port: int, nodes: int, period_s: float, ready: EventType, stop: EventType, out: Any
) -> None:
    from asyncua import ua
    from asyncua.server.server import Server

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:laterne:bench")
    folder = await server.nodes.objects.add_folder(ua.NodeId.from_string(f"ns={idx};s=bench"),
                                                   f"{idx}:Bench")  # fmt: skip
    ids = []
    for i in range(nodes):
        node = await folder.add_variable(ua.NodeId.from_string(_node(i)), f"{idx}:n{i:04d}", 0.0)
        ids.append(node.nodeid)
    await server.start()
    ready.set()
    cycles = 0
    late_s: list[float] = []
    start = time.monotonic()
    next_s = start
    try:
        while not stop.is_set():
            now = datetime.now(UTC)
            for i, nid in enumerate(ids):
                dv = ua.DataValue(ua.Variant(cycles + i / nodes, ua.VariantType.Double))
                dv.SourceTimestamp = dv.ServerTimestamp = now  # type: ignore[assignment]
                await server.write_attribute_value(nid, dv)
            cycles += 1
            next_s += period_s
            delay_s = next_s - time.monotonic()
            late_s.append(max(0.0, -delay_s))
            await asyncio.sleep(max(0.0, delay_s))
    finally:
        elapsed = time.monotonic() - start
        out.put({"update_cycles": cycles, "updates_per_s": round(cycles * nodes / elapsed, 1),
                 "cycles_late_pct": round(100 * float(np.mean(np.array(late_s) > 0)), 1)
                 if late_s else 0.0})  # fmt: skip
        await server.stop()


def _server_main(
    port: int, nodes: int, period_s: float, ready: EventType, stop: EventType, out: Any
) -> None:
    asyncio.run(_serve(port, nodes, period_s, ready, stop, out))


# -------------------------------------------------------------------------------- client


def _device(url: str, nodes: int, subscribe: bool, publishing_ms: float) -> OpcUaDevice:
    prof = DeviceProfile.model_validate(
        {"protocol": "opcua", "points": {f"p{i:04d}": {"node": _node(i)} for i in range(nodes)}}
    )
    dev = Device.model_validate(
        {
            "id": "bench",
            "profile": "bench",
            "timeout_s": 5.0,
            "endpoint": {"url": url, "subscribe": subscribe,
                         "publishing_interval_ms": publishing_ms},
        }
    )  # fmt: skip
    return OpcUaDevice(dev, prof)


async def bench_polling(url: str, nodes: int, reads: int) -> dict[str, Any]:
    dev = _device(url, nodes, subscribe=False, publishing_ms=1000.0)
    try:
        first = await dev.read(datetime.now(UTC))  # connect
        assert dev.mode == "polling" and len(first) == nodes
        durations: list[float] = []
        t0 = time.perf_counter()
        for _ in range(reads):
            t = time.perf_counter()
            readings = await dev.read(datetime.now(UTC))
            durations.append(time.perf_counter() - t)
        total_s = time.perf_counter() - t0
        good = sum(r.quality.value == "good" for r in readings.values())
    finally:
        await dev.close()
    return {
        "reads": reads,
        "read": latency_ms(durations),
        "points_per_s_median": round(nodes / float(np.median(durations))),
        "points_per_s_sustained": round(nodes * reads / total_s),
        "good_points_last_read": good,
    }


async def bench_subscription(
    url: str, nodes: int, seconds: float, publishing_ms: float, read_every_s: float
) -> dict[str, Any]:
    dev = _device(url, nodes, subscribe=True, publishing_ms=publishing_ms)
    try:
        t = time.perf_counter()
        first = await dev.read(datetime.now(UTC))  # connect, subscribe, one full read
        setup_s = time.perf_counter() - t
        assert dev.mode == "subscription" and len(first) == nodes
        await asyncio.sleep(1.0)  # let the initial burst settle
        n0, t0 = dev.notifications, time.perf_counter()
        durations: list[float] = []
        ages: list[float] = []
        while time.perf_counter() - t0 < seconds:
            await asyncio.sleep(read_every_s)
            t = time.perf_counter()
            now = datetime.now(UTC)
            readings = await dev.read(now)
            durations.append(time.perf_counter() - t)
            for name in readings:
                ts = dev.source_timestamp(name)
                if ts is not None:
                    ages.append((now - ts).total_seconds())
        elapsed = time.perf_counter() - t0
        notifications = dev.notifications - n0
        good = sum(r.quality.value == "good" for r in readings.values())
    finally:
        await dev.close()
    return {
        "publishing_interval_ms": publishing_ms,
        "setup_ms": round(setup_s * 1e3, 1),
        "seconds": round(elapsed, 2),
        "notifications_per_s": round(notifications / elapsed),
        "reads": len(durations),
        "read": latency_ms(durations),
        "points_per_s_median": round(nodes / float(np.median(durations))),
        "value_age_at_read": latency_ms(ages),
        "good_points_last_read": good,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    port = _free_port()
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(
        target=_server_main, args=(port, args.nodes, args.period_ms / 1e3, ready, stop, out)
    )
    proc.start()
    try:
        if not await asyncio.to_thread(ready.wait, 60.0):
            raise RuntimeError("the OPC-UA server did not start within 60 s")
        url = f"opc.tcp://127.0.0.1:{port}/bench/"
        polling = await bench_polling(url, args.nodes, args.reads)
        subscription = await bench_subscription(
            url, args.nodes, args.seconds, args.publishing_ms, args.read_every_ms / 1e3
        )
    finally:
        stop.set()
        server_stats = await asyncio.to_thread(out.get, True, 30.0)
        await asyncio.to_thread(proc.join, 30.0)
    return {
        "bench": "opcua_throughput",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "nodes": args.nodes,
        "server_update_period_ms": args.period_ms,
        "server": server_stats,
        "polling": polling,
        "subscription": subscription,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--period-ms", type=float, default=100.0, help="server update period")
    parser.add_argument("--reads", type=int, default=200, help="polling reads to time")
    parser.add_argument("--seconds", type=float, default=10.0, help="subscription run time")
    parser.add_argument("--publishing-ms", type=float, default=100.0)
    parser.add_argument("--read-every-ms", type=float, default=100.0)
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
