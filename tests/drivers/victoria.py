"""A real VictoriaMetrics server on 127.0.0.1 for the InfluxDB tests and the history bench.

VictoriaMetrics implements the InfluxDB v2 write endpoint (``/api/v2/write``) and returns what it
stored through ``/api/v1/export``. Debian's package ``victoria-metrics`` installs it as
``/usr/bin/victoria-metrics``; ``scripts/install-test-services.sh`` installs it (``make test``
runs that script first).

Series names: a line ``reading,device=d,point=p,quality=good value=1.5 <ns>`` becomes the series
``reading_value{device="d", point="p", quality="good"}`` at millisecond precision.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Sample", "VictoriaMetrics", "find_binary", "free_port"]


def find_binary() -> str | None:
    """Path of the victoria-metrics binary, or None when it is not installed."""
    found = shutil.which("victoria-metrics")
    if found:
        return found
    return "/usr/bin/victoria-metrics" if os.access("/usr/bin/victoria-metrics", os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Sample:
    labels: tuple[tuple[str, str], ...]  # sorted, without __name__
    timestamp_ms: int
    value: float


class VictoriaMetrics:
    """One victoria-metrics process; :meth:`stop` and :meth:`start` again keep port and data."""

    def __init__(self, binary: str, data_dir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = data_dir.parent / f"victoria-metrics-{self.port}.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 20.0) -> None:
        """Start and wait (bounded) until ``/health`` answers."""
        assert not self.running
        log = self._log.open("ab")
        self._proc = subprocess.Popen(
            [
                self.binary,
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={self.data_dir}",
                "-retentionPeriod=100y",
                "-loggerLevel=ERROR",
                "-memory.allowedBytes=256MB",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"victoria-metrics exited with {self._proc.returncode}: "
                    + self._log.read_text(errors="replace")[-2000:]
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)  # polling a real server's readiness, bounded by the deadline
        self.stop()
        raise RuntimeError(f"victoria-metrics on port {self.port} not ready in {timeout_s} s")

    def stop(self) -> None:
        """SIGTERM and wait: VictoriaMetrics flushes what it accepted before it exits (SIGKILL
        would lose its last second of acknowledged samples, which is not what we test)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def export(self, match: str) -> dict[str, list[Sample]]:
        """Every stored sample of the series matching ``match``, by metric name."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10):
            pass
        query = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=30) as r:
            text = r.read().decode()
        out: dict[str, list[Sample]] = {}
        for row in text.splitlines():
            if not row.strip():
                continue
            series = json.loads(row)
            metric = dict(series["metric"])
            name = metric.pop("__name__")
            labels = tuple(sorted(metric.items()))
            out.setdefault(name, []).extend(
                Sample(labels, int(ts), float(v))
                for ts, v in zip(series["timestamps"], series["values"], strict=True)
            )
        return out
