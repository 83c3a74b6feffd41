"""The `laterne` command as a user runs it: validate, and the demo's composition root."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from laterne.models.site import load_site
from laterne.simulations.ports import with_free_ports

from .conftest import DEMO

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


def test_demo_serves_the_api_and_stops_after_the_simulated_hours(tmp_path: Path) -> None:
    site = with_free_ports(load_site(DEMO))
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump(site.model_dump(mode="json")), encoding="utf-8")
    port = _free_port()
    cmd = [
        *LATERNE,
        "demo",
        str(cfg),
        "--port",
        str(port),
        "--speed",
        "1800",
        "--hours",
        "2",
        "--start",
        "2026-11-25T16:00+01:00",
        "--db",
        str(tmp_path / "h.sqlite"),
    ]
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
    assert {d["quality"] for d in snap["devices"]} == {"good"}
    assert [s["id"] for s in snap["segments"]] == ["bahnhofstr", "elberfelder", "lindenweg"]
    assert proc.returncode == 0, stderr
    assert "Laterne demo" in stdout and "bahnhofstr:" in stdout
    assert (tmp_path / "h.sqlite").exists()
    json.dumps(snap)  # the snapshot is plain JSON (no NaN)
