"""The `laterne` command as a user runs it: validate, and the demo's composition root."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from laterne.drivers.history.sqlite_store import SqliteHistory
from laterne.models.site import InfluxConfig, ModbusEndpoint, OpcUaEndpoint, SiteConfig, load_site
from laterne.simulations.ports import with_free_ports

from .conftest import DEMO
from .drivers.victoria import VictoriaMetrics, find_binary

LATERNE = [sys.executable, "-m", "laterne"]


def test_validate_good_file_exits_zero() -> None:
    out = subprocess.run([*LATERNE, "validate", str(DEMO)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "ok — 6 devices, 3 segments (96 luminaires), 2 zones in 1 building\n" in out.stdout


def test_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import version

    out = subprocess.run([*LATERNE, "--version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"laterne {version('laterne')}\n"


def test_help_shows_each_command_in_one_complete_sentence() -> None:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    out = subprocess.run([*LATERNE, "--help"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "--version" in out.stdout
    for line in out.stdout.splitlines():
        text = line.strip(" │")
        if text.startswith(("validate ", "demo ", "run ", "emulate ")):
            assert text.endswith("."), line


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


def write_site(tmp_path: Path, site: SiteConfig) -> Path:
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump(site.model_dump(mode="json")), encoding="utf-8")
    return cfg


@contextmanager
def occupied(port: int) -> Iterator[None]:
    """Another program listening on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        yield


def assert_one_line_error(out: subprocess.CompletedProcess[str], expected: str) -> None:
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.count(expected) == 1, out.stderr


def run_demo(tmp_path: Path, site: SiteConfig, hours: float = 2) -> tuple[dict[str, Any], str]:
    """Run `laterne demo` on free ports until it stops by itself; the API snapshot seen mid-run."""
    cfg = write_site(tmp_path, site)
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
    # a previous run's history (and WAL) is moved aside whole; an older .previous is replaced
    (tmp_path / "h.sqlite").write_bytes(b"last run")
    (tmp_path / "h.sqlite-wal").write_bytes(b"last run's wal")
    (tmp_path / "h.sqlite.previous").write_bytes(b"the run before")
    (tmp_path / "h.sqlite.previous-shm").write_bytes(b"the run before's shm")
    snap, stdout = run_demo(tmp_path, with_free_ports(load_site(DEMO)))
    assert {d["quality"] for d in snap["devices"]} == {"good"}
    assert [s["id"] for s in snap["segments"]] == ["bahnhofstr", "elberfelder", "lindenweg"]
    assert "Laterne demo" in stdout and "bahnhofstr:" in stdout
    assert f"previous run's history moved to {tmp_path / 'h.sqlite.previous'}" in stdout
    assert (tmp_path / "h.sqlite.previous").read_bytes() == b"last run"
    assert (tmp_path / "h.sqlite.previous-wal").read_bytes() == b"last run's wal"
    assert not (tmp_path / "h.sqlite.previous-shm").exists()
    con = sqlite3.connect(tmp_path / "h.sqlite")  # a fresh history of this run only
    assert con.execute("select count(*) from commands").fetchone()[0] > 0
    con.close()
    json.dumps(snap)  # the snapshot is plain JSON (no NaN)


@pytest.mark.parametrize("protocol", ["modbus", "opcua"])
def test_demo_with_an_emulated_port_in_use_says_so_in_one_line(
    tmp_path: Path, protocol: str
) -> None:
    site = with_free_ports(load_site(DEMO))
    cfg = write_site(tmp_path, site)
    if protocol == "modbus":
        ep = next(d.endpoint for d in site.devices if isinstance(d.endpoint, ModbusEndpoint))
        port = ep.port
        what = f"cannot listen for Modbus on 127.0.0.1:{port}"
    else:
        url = next(d.endpoint.url for d in site.devices if isinstance(d.endpoint, OpcUaEndpoint))
        port = int(url.split(":")[2].split("/")[0])
        what = f"cannot listen for OPC-UA at {url}"
    history = tmp_path / "h.sqlite"
    history.write_bytes(b"the running demo's history")
    cmd = [*LATERNE, "demo", str(cfg), "--port", str(_free_port()), "--db", str(history)]
    with occupied(port):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert_one_line_error(
        out,
        f"cannot start the emulated site: {what} (address in use) — is another demo running?\n",
    )
    assert len(out.stderr.splitlines()) == 1, out.stderr
    # the demo holding those ports keeps its history
    assert history.read_bytes() == b"the running demo's history"
    assert not (tmp_path / "h.sqlite.previous").exists()


def test_demo_with_the_api_port_in_use_hints_at_port(tmp_path: Path) -> None:
    cfg = write_site(tmp_path, with_free_ports(load_site(DEMO)))
    port = _free_port()
    cmd = [*LATERNE, "demo", str(cfg), "--port", str(port), "--db", str(tmp_path / "h.sqlite")]
    with occupied(port):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert_one_line_error(out, f"cannot serve the API on 127.0.0.1:{port}")
    assert "another port with --port" in out.stderr


def test_run_keeps_its_history_where_it_is(tmp_path: Path) -> None:
    # `laterne run` never moves a history aside (here it stops at a busy API port)
    cfg = write_site(tmp_path, with_free_ports(load_site(DEMO)))
    history = tmp_path / "h.sqlite"
    SqliteHistory(history).close()
    inode = history.stat().st_ino
    port = _free_port()
    cmd = [*LATERNE, "run", str(cfg), "--port", str(port), "--db", str(history)]
    with occupied(port):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert_one_line_error(out, "another port with --port")
    assert "Laterne demo" not in out.stdout
    assert history.stat().st_ino == inode  # the same file, not a fresh one
    assert not (tmp_path / "h.sqlite.previous").exists()


def test_emulate_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    site = with_free_ports(load_site(DEMO))
    cfg = write_site(tmp_path, site)
    proc = subprocess.Popen(
        [*LATERNE, "emulate", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the servers listen (or the process ends)
        assert line.startswith("emulating 6 devices on loopback"), proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    ep = next(d.endpoint for d in site.devices if isinstance(d.endpoint, ModbusEndpoint))
    with occupied(ep.port):  # the servers let go of their ports
        pass


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
        con = sqlite3.connect(tmp_path / "h.sqlite")
        n_readings = con.execute("select count(*) from readings where value is not null")
        want_readings = n_readings.fetchone()[0]
        want_commands = con.execute("select count(*) from commands").fetchone()[0]
        con.close()
        assert want_readings > 100
        # The demo has sent everything before it exits; the server makes fresh samples
        # searchable on its own time (its in-memory buffers): wait on the counts, bounded.
        deadline = time.monotonic() + 60
        while True:
            exported = vm.export('{__name__=~"reading_value|command_value"}')
            got = (len(exported.get("reading_value", [])), len(exported.get("command_value", [])))
            if got == (want_readings, want_commands) or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # polling a real server for a condition, bounded by the deadline
    finally:
        vm.stop()
    assert got == (want_readings, want_commands)


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


def test_a_second_controller_on_the_same_site_is_refused_with_the_first_ones_pid(
    tmp_path: Path,
) -> None:
    cfg = write_site(tmp_path, with_free_ports(load_site(DEMO)))
    history = tmp_path / "h.sqlite"
    port = _free_port()
    first = subprocess.Popen(
        [*LATERNE, "demo", str(cfg), "--port", str(port), "--db", str(history)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and first.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code:
                    break
            except httpx.TransportError:
                time.sleep(0.2)  # waiting for another process to come up
        assert first.poll() is None, first.communicate()[1]
        cmd = [*LATERNE, "run", str(cfg), "--port", str(_free_port()), "--db", str(history)]
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert_one_line_error(second, f"another Laterne (PID {first.pid}) is running this site")
        assert len(second.stderr.splitlines()) == 1, second.stderr
        assert first.poll() is None  # the first one runs on, untouched
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == 0


@pytest.mark.parametrize("command", ["demo", "run"])
def test_a_non_loopback_host_needs_the_explicit_insecure_flag(
    tmp_path: Path, command: str
) -> None:
    cfg = write_site(tmp_path, with_free_ports(load_site(DEMO)))
    out = subprocess.run(
        [*LATERNE, command, str(cfg), "--host", "0.0.0.0", "--db", str(tmp_path / "h.sqlite")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "no authentication yet" in out.stderr and "--insecure-no-auth" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "h.sqlite").exists()  # refused before anything started


def test_run_prints_where_its_api_is(tmp_path: Path) -> None:
    site = with_free_ports(load_site(DEMO))
    cfg = write_site(tmp_path, site)
    port = _free_port()
    emu = subprocess.Popen(
        [*LATERNE, "emulate", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert emu.stdout is not None
    try:
        assert emu.stdout.readline().startswith("emulating")
        proc = subprocess.Popen(
            [*LATERNE, "run", str(cfg), "--port", str(port), "--db", str(tmp_path / "h.sqlite")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        try:
            banner = [proc.stdout.readline() for _ in range(2)]
            assert f"API   http://127.0.0.1:{port}/api/site" in banner[1], banner
            deadline = time.monotonic() + 60
            health = None
            while time.monotonic() < deadline:
                try:
                    health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).json()
                    if health["cycle"] >= 1:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)  # waiting for another process's first cycle
            assert health is not None and health["loop"]["cycles"] >= 1
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        emu.send_signal(signal.SIGTERM)
        emu.communicate(timeout=30)
