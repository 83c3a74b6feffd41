"""InfluxHistory: golden line protocol, and sending through the outbox to real HTTP servers.

Two kinds of server, both real, on 127.0.0.1:

- ``ScriptedInflux``: a stdlib HTTP server that answers ``/api/v2/write`` as a test scripts it
  (204, 503, 401, 400 for a poison line), for the retry, split and dead-letter rules on a
  simulated clock (an injected ``monotonic`` and ``sleep``; no wall-clock sleeping).
- VictoriaMetrics (Debian package ``victoria-metrics``): a real InfluxDB v2 write endpoint that
  is stopped and restarted mid-run; every sample must arrive exactly once. Missing binary: the
  tests skip, or fail when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import random
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from laterne.drivers.history.influx import (
    InfluxHistory,
    InfluxWriteError,
    command_line,
    device_state_line,
    reading_line,
)
from laterne.drivers.history.outbox import Outbox
from laterne.drivers.history.sqlite_store import SqliteHistory
from laterne.models.site import InfluxConfig
from laterne.models.snapshot import CommandRecord
from laterne.models.values import DeviceState, PointReading, Quality

from ..victoria import Sample, VictoriaMetrics, find_binary, free_port

T0 = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)
T0_NS = 1795644000000000000
assert T0_NS == int(T0.timestamp()) * 10**9


def cmd(**kw: Any) -> CommandRecord:
    base: dict[str, Any] = dict(
        ts=T0,
        device_id="seg-1",
        point="dim_pct",
        value=40.0,
        reason="traffic",
        source="policy",
        ok=True,
    )
    return CommandRecord(**(base | kw))


# ------------------------------------------------------------------------------ golden lines


@pytest.mark.parametrize(
    ("record", "line"),
    [
        (
            PointReading("ctr-1", "count", 1234.0, Quality.GOOD, T0),
            f"reading,device=ctr-1,point=count,quality=good value=1234.0 {T0_NS}",
        ),
        (  # spaces, commas and equals signs in tag values
            PointReading("ctr 1,north", "a=b c", -0.5, Quality.STALE, T0, "slow"),
            "reading,device=ctr\\ 1\\,north,point=a\\=b\\ c,quality=stale "
            f'value=-0.5,error="slow" {T0_NS}',
        ),
        (  # NaN: no value field; the error says why
            PointReading("ctr-1", "count", math.nan, Quality.OFFLINE, T0, 'timeout "read" 2 s'),
            "reading,device=ctr-1,point=count,quality=offline "
            f'error="timeout \\"read\\" 2 s" {T0_NS}',
        ),
        (  # NaN without a message still has a field
            PointReading("ctr-1", "count", math.nan, Quality.FAULTY, T0),
            f'reading,device=ctr-1,point=count,quality=faulty error="" {T0_NS}',
        ),
        (  # infinity is not a line-protocol float either
            PointReading("m", "p", math.inf, Quality.FAULTY, T0, "overflow"),
            f'reading,device=m,point=p,quality=faulty error="overflow" {T0_NS}',
        ),
        (  # backslashes, newline in the error, microseconds, another time zone
            PointReading(
                "dev\\",
                "p",
                1e-7,
                Quality.GOOD,
                (T0 + timedelta(microseconds=1)).astimezone(
                    __import__("datetime").timezone(timedelta(hours=1))
                ),
                "C:\\x\nline 2",
            ),
            f'reading,device=dev\\\\,point=p,quality=good value=1e-07,error="C:\\\\x\\nline 2" '
            f"{T0_NS + 1000}",
        ),
        (
            cmd(),
            "command,device=seg-1,ok=true,point=dim_pct,reason=traffic,source=policy "
            f"value=40.0 {T0_NS}",
        ),
        (  # a failed write: ok=false and its error; an empty reason tag is left out
            cmd(ok=False, error="write mismatch: read 38", reason="", source="api user=ops"),
            "command,device=seg-1,ok=false,point=dim_pct,source=api\\ user\\=ops "
            f'value=40.0,error="write mismatch: read 38" {T0_NS}',
        ),
        (
            DeviceState("ctr-1", Quality.GOOD, T0, "", T0 + timedelta(seconds=1)),
            f"device_state,device=ctr-1,quality=good quality_code=0i,last_good_at={T0_NS}i "
            f"{T0_NS + 10**9}",
        ),
        (
            DeviceState("plc 7", Quality.OFFLINE, None, 'refused "no"', T0),
            "device_state,device=plc\\ 7,quality=offline "
            f'quality_code=3i,last_error="refused \\"no\\"" {T0_NS}',
        ),
    ],
)
def test_golden_lines(record: PointReading | CommandRecord | DeviceState, line: str) -> None:
    if isinstance(record, PointReading):
        got = reading_line(record)
    elif isinstance(record, CommandRecord):
        got = command_line(record)
    else:
        got = device_state_line(record)
    assert got == line
    assert "\n" not in got


def test_naive_datetimes_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        reading_line(PointReading("d", "p", 1.0, Quality.GOOD, datetime(2026, 1, 1)))
    with pytest.raises(ValueError, match="naive"):
        device_state_line(DeviceState("d", Quality.GOOD, datetime(2026, 1, 1), "", T0))


def test_same_recording_interface_as_sqlite_history() -> None:
    for name in ("record_readings", "record_commands", "record_device_state"):
        assert inspect.signature(getattr(InfluxHistory, name)) == inspect.signature(
            getattr(SqliteHistory, name)
        ), name


# ------------------------------------------------------------------- a scripted HTTP server


@dataclass
class WriteRequest:
    path: str
    query: dict[str, list[str]]
    lines: list[str]
    status: int


@dataclass
class ScriptedInflux:
    """A real HTTP server on 127.0.0.1 whose answer to each write the test decides."""

    answer: Callable[[list[str]], int] = lambda lines: 204
    requests: list[WriteRequest] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def delivered(self) -> list[str]:
        return [line for r in self.requests if r.status < 300 for line in r.lines]


@pytest.fixture
def scripted() -> Iterator[ScriptedInflux]:
    state = ScriptedInflux()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            lines = body.split("\n")
            status = state.answer(lines)
            url = urlparse(self.path)
            state.requests.append(WriteRequest(url.path, parse_qs(url.query), lines, status))
            payload = b"" if status < 300 else b'{"code":"x","message":"scripted %d"}' % status
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


class SimTime:
    """Injected monotonic clock and sleep: sleeping only advances the clock."""

    def __init__(self) -> None:
        self.now_s = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds
        await asyncio.sleep(0)


def make_influx(
    url: str,
    outbox: Outbox,
    sim: SimTime | None = None,
    batch_size: int = 10,
    flush_interval_s: float = 5.0,
    **kw: Any,
) -> InfluxHistory:
    cfg = InfluxConfig(
        url=url,
        org="laterne",
        bucket="site",
        batch_size=batch_size,
        flush_interval_s=flush_interval_s,
    )
    if sim is not None:
        kw |= {"monotonic": sim.monotonic, "sleep": sim.sleep}
    return InfluxHistory(cfg, "secret-token", outbox, rng=random.Random(1), **kw)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.sqlite")
    yield box
    box.close()


def readings(n: int, start: int = 0, device: str = "ctr-1") -> list[PointReading]:
    return [
        PointReading(device, "count", float(i), Quality.GOOD, T0 + timedelta(seconds=i))
        for i in range(start, start + n)
    ]


async def until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Await a condition that real servers and threads make true (bounded)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


# -------------------------------------------------------------- sending, on a simulated clock


async def test_batches_go_out_in_order_to_the_v2_endpoint(
    scripted: ScriptedInflux, outbox: Outbox
) -> None:
    influx = make_influx(scripted.url, outbox, SimTime(), batch_size=10)
    influx.record_readings(readings(25))
    influx.record_commands([cmd()])
    assert influx.pending == 26
    assert await influx.flush() == 26
    assert [len(r.lines) for r in scripted.requests] == [10, 10, 6]
    assert scripted.delivered() == [reading_line(r) for r in readings(25)] + [command_line(cmd())]
    first = scripted.requests[0]
    assert first.path == "/api/v2/write"
    assert first.query == {"org": ["laterne"], "bucket": ["site"], "precision": ["ns"]}
    assert influx.pending == 0
    assert influx.last_sent_seq == 26
    assert influx.last_error == ""
    influx.close()


async def test_outage_backs_off_exponentially_logs_once_and_loses_nothing(
    scripted: ScriptedInflux, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def answer(lines: list[str]) -> int:
        nonlocal calls
        calls += 1
        return 503 if calls <= 6 else 204

    scripted.answer = answer
    sim = SimTime()
    influx = make_influx(scripted.url, outbox, sim, batch_size=10, backoff_cap_s=4.0)
    influx.record_readings(readings(30))
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="laterne.drivers.history.influx")
    task = asyncio.create_task(influx.run(stop))
    await until(lambda: influx.pending == 0)
    stop.set()
    await task

    backoff = sim.sleeps[:6]
    for delay, nominal in zip(backoff, [0.5, 1.0, 2.0, 4.0, 4.0, 4.0], strict=True):
        assert nominal * 0.5 <= delay <= nominal  # jittered downwards, capped
    assert len(scripted.requests) == 6 + 3  # one attempt per backoff step: no busy loop
    assert all(r.lines == scripted.requests[0].lines for r in scripted.requests[:6])
    assert scripted.delivered() == [reading_line(r) for r in readings(30)]
    records = [r for r in caplog.records if r.name == "laterne.drivers.history.influx"]
    assert [r.levelname for r in records] == ["WARNING", "INFO"]
    assert "unavailable" in records[0].getMessage() and "503" in records[0].getMessage()
    assert "30 lines" in records[0].getMessage()
    assert "backlog 20 lines" in records[1].getMessage()
    assert influx.last_error == ""
    influx.close()


async def test_a_refused_line_is_isolated_and_dead_lettered(
    scripted: ScriptedInflux, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    scripted.answer = lambda lines: 400 if any("poison" in line for line in lines) else 204
    influx = make_influx(scripted.url, outbox, SimTime(), batch_size=16)
    good = readings(16)
    lines = [reading_line(r) for r in good]
    outbox.append([*lines[:5], "poison line", *lines[5:15]])
    with caplog.at_level(logging.ERROR, logger="laterne.drivers.history.influx"):
        assert await influx.flush() == 15
    assert scripted.delivered() == lines[:15]  # everything else, in order
    [dead] = outbox.dead_letters()
    assert (dead.seq, dead.line) == (6, "poison line")
    assert "400" in dead.error and "scripted 400" in dead.error
    assert outbox.pending() == 0
    assert any("dead letters" in r.getMessage() for r in caplog.records)
    influx.close()


async def test_auth_errors_are_retried_never_dead_lettered(
    scripted: ScriptedInflux, outbox: Outbox
) -> None:
    answers = iter([401, 403, 204])
    scripted.answer = lambda lines: next(answers)
    influx = make_influx(scripted.url, outbox, SimTime())
    influx.record_readings(readings(3))
    for status in (401, 403):
        with pytest.raises(InfluxWriteError) as info:
            await influx.flush()
        assert info.value.status == status
        assert str(status) in influx.last_error
        assert influx.pending == 3
    assert await influx.flush() == 3
    assert outbox.dead_letter_count() == 0
    influx.close()


async def test_no_server_recording_still_works_and_nothing_is_lost(
    outbox: Outbox, tmp_path: Path
) -> None:
    influx = make_influx(f"http://127.0.0.1:{free_port()}", outbox, SimTime(), timeout_s=2)
    influx.record_readings(readings(5))
    influx.record_device_state(DeviceState("ctr-1", Quality.OFFLINE, None, "refused", T0))
    with pytest.raises(InfluxWriteError) as info:
        await influx.flush()
    assert info.value.status is None and info.value.retryable
    assert influx.in_outage
    assert "refused" in influx.last_error.lower()
    assert influx.pending == 6
    influx.close()


async def test_stop_sends_what_is_pending(scripted: ScriptedInflux, outbox: Outbox) -> None:
    # a long flush interval on the real clock: only the final send on stop can deliver
    influx = make_influx(scripted.url, outbox, batch_size=1000, flush_interval_s=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(influx.run(stop))
    await asyncio.sleep(0.05)
    influx.record_readings(readings(7))
    stop.set()
    await asyncio.wait_for(task, 10)
    assert len(scripted.delivered()) == 7
    influx.close()


async def test_naive_time_refuses_the_whole_call(outbox: Outbox) -> None:
    influx = make_influx("http://127.0.0.1:9", outbox)
    bad = PointReading("d", "p", 1.0, Quality.GOOD, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        influx.record_readings([*readings(3), bad])
    assert influx.pending == 0
    influx.close()


# ------------------------------------------------------------------ VictoriaMetrics, for real


@pytest.fixture
async def victoria(tmp_path: Path) -> AsyncIterator[VictoriaMetrics]:
    binary = find_binary()
    if binary is None:
        message = (
            "victoria-metrics is not installed: run scripts/install-test-services.sh as root "
            "(apt-get install victoria-metrics)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    vm = VictoriaMetrics(binary, tmp_path / "vm-data")
    await asyncio.to_thread(vm.start)
    yield vm
    await asyncio.to_thread(vm.stop)


def district_readings(cycle: int, n_devices: int = 20) -> list[PointReading]:
    """One cycle: a counter and a power reading per device; every 7th device offline."""
    ts = T0 + timedelta(seconds=cycle)
    out: list[PointReading] = []
    for d in range(n_devices):
        dev = f"ctr {d},north" if d % 2 else f"ctr-{d}"
        if (d + cycle) % 7 == 0:
            out.append(PointReading(dev, "count", math.nan, Quality.OFFLINE, ts, "timeout"))
        else:
            out.append(PointReading(dev, "count", cycle * 0.25 + d, Quality.GOOD, ts))
        out.append(PointReading(dev, "power=w", 100.0 + d + cycle, Quality.STALE, ts))
    return out


def district_commands(cycle: int) -> list[CommandRecord]:
    ts = T0 + timedelta(seconds=cycle)
    return [
        cmd(ts=ts, device_id=f"seg-{s}", value=float(cycle % 100), ok=(cycle + s) % 5 != 0)
        for s in range(5)
    ]


def expected_samples(
    rs: list[PointReading], cs: list[CommandRecord], ss: list[DeviceState]
) -> dict[str, Counter[Sample]]:
    def ms(ts: datetime) -> int:
        return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)

    want: dict[str, Counter[Sample]] = {
        "reading_value": Counter(),
        "command_value": Counter(),
        "device_state_quality_code": Counter(),
    }
    labels: tuple[tuple[str, str], ...]
    for r in rs:
        if math.isfinite(r.value):
            labels = (("device", r.device_id), ("point", r.point), ("quality", r.quality.value))
            want["reading_value"][Sample(labels, ms(r.ts), r.value)] += 1
    for c in cs:
        labels = (
            ("device", c.device_id),
            ("ok", "true" if c.ok else "false"),
            ("point", c.point),
            ("reason", c.reason),
            ("source", c.source),
        )
        want["command_value"][Sample(labels, ms(c.ts), c.value)] += 1
    for s in ss:
        labels = (("device", s.device_id), ("quality", s.quality.value))
        code = float(list(Quality).index(s.quality))
        want["device_state_quality_code"][Sample(labels, ms(s.since), code)] += 1
    return want


async def assert_exactly_once(
    vm: VictoriaMetrics, want: dict[str, Counter[Sample]], timeout_s: float = 20.0
) -> None:
    match = '{__name__=~"reading_value|command_value|device_state_quality_code"}'
    deadline = time.monotonic() + timeout_s
    while True:
        got = await asyncio.to_thread(vm.export, match)
        counted = {name: Counter(got.get(name, [])) for name in want}
        if counted == want or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)  # the server makes fresh samples searchable within ~1 s
    for name in want:
        missing = want[name] - counted[name]
        extra = counted[name] - want[name]
        assert not missing and not extra, (name, list(missing)[:3], list(extra)[:3])


async def test_victoria_metrics_outage_mid_run_loses_nothing_and_duplicates_nothing(
    victoria: VictoriaMetrics, outbox: Outbox
) -> None:
    influx = make_influx(
        victoria.url,
        outbox,
        batch_size=500,
        flush_interval_s=0.05,
        backoff_initial_s=0.05,
        backoff_cap_s=0.3,
        timeout_s=2,
    )
    acked: list[int] = []
    real_ack = outbox.ack

    def spy_ack(up_to_seq: int) -> int:
        acked.append(up_to_seq)
        return real_ack(up_to_seq)

    outbox.ack = spy_ack  # type: ignore[method-assign]
    rs: list[PointReading] = []
    cs: list[CommandRecord] = []
    ss: list[DeviceState] = []

    def record(cycle: int) -> None:
        r, c = district_readings(cycle), district_commands(cycle)
        influx.record_readings(r)
        influx.record_commands(c)
        rs.extend(r)
        cs.extend(c)
        if cycle % 10 == 0:
            s = DeviceState(
                "ctr-3", list(Quality)[cycle // 10 % 4], T0, "", T0 + timedelta(seconds=cycle)
            )
            influx.record_device_state(s)
            ss.append(s)

    stop = asyncio.Event()
    task = asyncio.create_task(influx.run(stop))
    for cycle in range(60):  # before the outage: 60 cycles of 45 lines
        record(cycle)
    await until(lambda: influx.pending == 0)

    await asyncio.to_thread(victoria.stop)  # the server goes away mid-run
    attempts_before = influx.attempts
    outage_started = time.monotonic()
    for cycle in range(60, 120):  # recording goes on; nothing can be sent
        record(cycle)
        if cycle % 10 == 0:
            await asyncio.sleep(0.15)
    await until(lambda: influx.in_outage)
    outage_s = time.monotonic() - outage_started
    assert influx.pending == 60 * 45 + 6
    assert influx.last_error
    attempts = influx.attempts - attempts_before
    # backoff 0.05 s doubling to 0.3 s (jittered down to half): a handful of tries, no busy loop
    assert 1 <= attempts <= 8 + outage_s / 0.15, (attempts, outage_s)

    await asyncio.to_thread(victoria.start)  # back, same port and storage
    for cycle in range(120, 140):  # and still recording
        record(cycle)
    await until(lambda: influx.pending == 0)
    stop.set()
    await asyncio.wait_for(task, 10)

    assert not influx.in_outage and influx.last_error == ""
    assert acked == sorted(acked) and len(set(acked)) == len(acked)  # strictly in sequence
    assert influx.last_sent_seq == outbox.last_seq() == 140 * 45 + 14
    assert outbox.dead_letter_count() == 0
    await assert_exactly_once(victoria, expected_samples(rs, cs, ss))
    influx.close()


async def test_a_restarted_process_sends_what_the_last_one_left(
    victoria: VictoriaMetrics, tmp_path: Path
) -> None:
    path = tmp_path / "restart-outbox.sqlite"
    rs = [r for cycle in range(40) for r in district_readings(cycle)]
    cs = [c for cycle in range(40) for c in district_commands(cycle)]
    first_box = Outbox(path)
    first = make_influx(victoria.url, first_box, batch_size=200)
    first.record_readings(rs)
    first.record_commands(cs)
    await first.flush()  # the first process delivers what it has ...
    more_rs = [r for cycle in range(40, 80) for r in district_readings(cycle)]
    first.record_readings(more_rs)  # ... then records more and stops before sending it
    first.close()
    first_box.close()

    second_box = Outbox(path)
    second = make_influx(victoria.url, second_box, batch_size=200)
    assert second.pending == len(more_rs)
    stop = asyncio.Event()
    task = asyncio.create_task(second.run(stop))
    await until(lambda: second.pending == 0)
    stop.set()
    await asyncio.wait_for(task, 10)
    await assert_exactly_once(victoria, expected_samples(rs + more_rs, cs, []))
    second.close()
    second_box.close()
