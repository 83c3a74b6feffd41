"""The `laterne` command as a user runs it: validate, and the demo's composition root."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from laterne.models.site import InfluxConfig, SiteConfig, load_site
from laterne.simulations.ports import with_free_ports

from .conftest import DEMO
from .drivers.victoria import VictoriaMetrics, find_binary

LATERNE = [sys.executable, "-m", "laterne"]


def test_validate_good_file_exits_zero() -> None:
    out = subprocess.run([*LATERNE, "validate", str(DEMO)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "ok — 6 devices, 3 segments (96 luminaires), 2 zones in 1 buildings" in out.stdout


def test_validate_broken_file_names_file_line_field(tmp_path: Path) -> None:
    text = DEMO.read_text(encoding="utf-8").replace("luminaires: 30", "luminaires: -30")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text, encoding="utf-8")
    line = text[: text.index("luminaires: -30")].count("\n") + 1
    out = subprocess.run([*LATERNE, "validate", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert f"{bad}:{line}: segments.1.luminaires: Input should be greater than 0" in out.stderr


def test_demo_with_a_broken_file_starts_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: {name: x}\n", encoding="utf-8")
    out = subprocess.run(
        [*LATERNE, "demo", str(bad), "--hours", "1"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "site.latitude: Field required" in out.stderr
    assert "Laterne demo" not in out.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_demo(tmp_path: Path, site: SiteConfig, hours: float = 2) -> tuple[dict[str, Any], str]:
    """Run `laterne demo` on free ports until it stops by itself; the API snapshot seen mid-run."""
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump(site.model_dump(mode="json")), encoding="utf-8")
    port = _free_port()
    cmd = [
        *LATERNE, "demo", str(cfg), "--port", str(port), "--speed", "1800", "--hours", str(hours),
        "--start", "2026-11-25T16:00+01:00", "--db", str(tmp_path / "h.sqlite"),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    snap = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/site", timeout=2)
                if r.status_code == 200 and r.json()["cycle"] > 5:
                    snap = r.json()
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # waiting for another process to come up, not for simulated time
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert snap is not None, stderr
    assert proc.returncode == 0, stderr
    return snap, stdout


def test_demo_serves_the_api_and_stops_after_the_simulated_hours(tmp_path: Path) -> None:
    snap, stdout = run_demo(tmp_path, with_free_ports(load_site(DEMO)))
    assert {d["quality"] for d in snap["devices"]} == {"good"}
    assert [s["id"] for s in snap["segments"]] == ["bahnhofstr", "elberfelder", "lindenweg"]
    assert "Laterne demo" in stdout and "bahnhofstr:" in stdout
    assert (tmp_path / "h.sqlite").exists()
    json.dumps(snap)  # the snapshot is plain JSON (no NaN)


def test_demo_mirrors_its_history_to_influxdb(tmp_path: Path) -> None:
    binary = find_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("victoria-metrics is not installed (scripts/install-test-services.sh)")
        pytest.skip("victoria-metrics is not installed")
    vm = VictoriaMetrics(binary, tmp_path / "vm")
    vm.start()
    try:
        demo = with_free_ports(load_site(DEMO))
        influx = {"url": vm.url, "outbox_path": str(tmp_path / "outbox.sqlite")}
        hist = demo.history.model_copy(update={"influxdb": InfluxConfig(**influx)})
        run_demo(tmp_path, demo.model_copy(update={"history": hist}), hours=1)
        exported = vm.export('{__name__=~"reading_value|command_value"}')
    finally:
        vm.stop()
    con = sqlite3.connect(tmp_path / "h.sqlite")
    n_readings = con.execute("select count(*) from readings where value is not null").fetchone()
    n_commands = con.execute("select count(*) from commands").fetchone()
    con.close()
    assert n_readings[0] > 100
    assert len(exported["reading_value"]) == n_readings[0]
    assert len(exported["command_value"]) == n_commands[0]


def test_demo_refuses_a_missing_influx_token(tmp_path: Path) -> None:
    demo = load_site(DEMO)
    influx = InfluxConfig(url="http://127.0.0.1:9", token_env="LATERNE_TEST_NO_SUCH_TOKEN")
    site = demo.model_copy(update={"history": demo.history.model_copy(update={"influxdb": influx})})
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump(site.model_dump(mode="json")), encoding="utf-8")
    out = subprocess.run([*LATERNE, "demo", str(cfg)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "LATERNE_TEST_NO_SUCH_TOKEN is not set" in out.stderr
    assert "Laterne demo" not in out.stdout
