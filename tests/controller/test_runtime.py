"""The runtime's own logic with in-memory devices (the protocols are tested against real
servers in tests/drivers and tests/test_failover.py): staleness, faults, failed writes,
history mirrors and compaction."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from laterne.api.app import create_app
from laterne.controller.clock import ManualClock
from laterne.controller.runtime import COMPACT_EVERY_S, Runtime
from laterne.drivers.field.errors import DeviceOffline, WriteMismatch
from laterne.drivers.history.sqlite_store import SqliteHistory
from laterne.models.site import SiteConfig
from laterne.models.snapshot import CommandRecord, DriftRecord, MirrorStatus
from laterne.models.values import DeviceState, PointReading, Quality, Reason

NIGHT = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)


@dataclass
class FakeDevice:
    """An in-memory device: answers with ``values``, or raises ``fail`` when set."""

    device_id: str
    values: dict[str, float]
    fail: Exception | None = None
    faulty: set[str] = field(default_factory=set)
    reject_writes: bool = False
    written: list[tuple[str, float]] = field(default_factory=list)
    lag_s: float = 0.0  # readings are stamped this long before ``now``

    async def read(self, now: datetime) -> dict[str, PointReading]:
        if self.fail is not None:
            raise self.fail
        return {
            p: PointReading(self.device_id, p, math.nan, Quality.FAULTY, now, "out of range")
            if p in self.faulty
            else PointReading(
                self.device_id, p, v, Quality.GOOD, now - timedelta(seconds=self.lag_s)
            )
            for p, v in self.values.items()
        }

    async def write(self, point: str, value: float) -> float:
        if self.fail is not None:
            raise self.fail
        if self.reject_writes:
            raise WriteMismatch(point, value, 0.0)
        self.written.append((point, value))
        self.values[point] = value
        return value

    async def close(self) -> None:
        return None


@dataclass
class Mirror:
    readings: list[PointReading] = field(default_factory=list)
    commands: list[CommandRecord] = field(default_factory=list)
    states: list[DeviceState] = field(default_factory=list)

    def record_readings(self, readings: Sequence[PointReading]) -> None:
        self.readings += readings

    def record_commands(self, records: Sequence[CommandRecord]) -> None:
        self.commands += records

    def record_device_state(self, state: DeviceState) -> None:
        self.states.append(state)

    def status(self) -> MirrorStatus:
        return MirrorStatus(
            target="memory", pending_lines=len(self.readings), in_outage=False, last_error="",
            dead_letters=0,
        )  # fmt: skip


def fakes(site: SiteConfig) -> dict[str, FakeDevice]:
    out = {}
    for d in site.devices:
        pts = site.profiles[d.profile].points
        out[d.id] = FakeDevice(d.id, {p: (s.failsafe or 0.0) + 20.0 for p, s in pts.items()})
    return out


@pytest.fixture
def setup(demo_site: SiteConfig, tmp_path: Path):  # type: ignore[no-untyped-def]
    clock = ManualClock(NIGHT)
    devices = fakes(demo_site)
    history = SqliteHistory(tmp_path / "h.sqlite")
    mirror = Mirror()
    runtime = Runtime(demo_site, devices, history, clock, mirrors=[mirror])
    yield clock, devices, history, mirror, runtime
    history.close()


async def cycles(runtime: Runtime, clock: ManualClock, n: int, step_s: float = 10.0) -> None:
    for _ in range(n):
        await runtime.run_cycle()
        clock.advance(step_s)


async def test_unchanged_commands_are_written_once(setup) -> None:  # type: ignore[no-untyped-def]
    clock, devices, _history, _mirror, runtime = setup
    await cycles(runtime, clock, 5)
    # fail-safe until two counts give a flow, then the traffic band; never the same value twice
    assert devices["seg-bahnhofstr"].written == [("dim_pct", 100.0), ("dim_pct", 30.0)]
    assert len(devices["school"].written) == 2  # two zone setpoints, once each


async def test_counter_outage_rides_through_a_blip_then_failsafe(setup) -> None:  # type: ignore[no-untyped-def]
    clock, devices, _history, _mirror, runtime = setup
    await cycles(runtime, clock, 3)
    devices["counter-north"].fail = DeviceOffline("gone")
    await cycles(runtime, clock, 1)
    cmds = runtime.commands
    assert cmds is not None and cmds.dim_reason[0] == Reason.TRAFFIC  # rides through a blip
    await cycles(runtime, clock, 1, step_s=runtime.site.policy.stale_after_s)
    await runtime.run_cycle()
    assert runtime.device_states["counter-north"].quality is Quality.OFFLINE
    cmds = runtime.commands
    assert cmds is not None
    assert cmds.dim_reason[0] == Reason.FAILSAFE
    assert cmds.dim_pct[0] == runtime.layout.segments.failsafe_dim_pct[0]


async def test_old_values_are_stale_not_good(setup) -> None:  # type: ignore[no-untyped-def]
    """A driver may return a value last updated long ago (a subscription that went quiet):
    older than stale_after_polls poll intervals, it is shown as STALE and never acted on."""
    clock, devices, _history, _mirror, runtime = setup
    await cycles(runtime, clock, 2)
    stale_s = runtime.site.device("school").stale_after_s
    devices["school"].lag_s = stale_s + 1
    await cycles(runtime, clock, 1)
    school = next(d for d in runtime.read_model.snapshot().devices if d.id == "school")
    assert school.quality is Quality.STALE
    assert {p.quality for p in school.points} == {Quality.STALE}
    assert all(p.value is not None for p in school.points)  # the last value is still shown
    cmds = runtime.commands
    assert cmds is not None
    assert (cmds.setpoint_reason == Reason.FAILSAFE).all()  # zone temperatures not trusted


async def test_faulty_point_marks_device_faulty_and_logs_state(setup) -> None:  # type: ignore[no-untyped-def]
    clock, devices, history, mirror, runtime = setup
    await cycles(runtime, clock, 1)
    devices["counter-east"].faulty = {"lane1_veh"}
    await cycles(runtime, clock, 2)
    st = runtime.device_states["counter-east"]
    assert st.quality is Quality.FAULTY
    assert "lane1_veh: out of range" in st.last_error
    changes = history.device_state_history("counter-east")
    assert [c.quality for c in changes[:2]] == [Quality.FAULTY, Quality.GOOD]
    assert [s.quality for s in mirror.states if s.device_id == "counter-east"] == [
        Quality.OFFLINE,  # recorded at start
        Quality.GOOD,
        Quality.FAULTY,
    ]


async def test_rejected_write_is_recorded_and_retried(setup) -> None:  # type: ignore[no-untyped-def]
    clock, devices, history, _mirror, runtime = setup
    devices["seg-lindenweg"].reject_writes = True
    await cycles(runtime, clock, 2)
    failed = [c for c in history.recent_commands(device_id="seg-lindenweg") if not c.ok]
    assert len(failed) == 2  # tried again next cycle
    assert "mismatch" in failed[0].error.lower() or failed[0].error
    assert runtime.device_states["seg-lindenweg"].quality is Quality.FAULTY
    devices["seg-lindenweg"].reject_writes = False
    # backing off: after two failures the next attempt waits two cycles, not one
    await cycles(runtime, clock, 1)
    assert len(history.recent_commands(device_id="seg-lindenweg")) == 2
    await cycles(runtime, clock, 1)
    last = history.recent_commands(device_id="seg-lindenweg", limit=1)[0]
    assert last.ok and devices["seg-lindenweg"].values["dim_pct"] == last.value


async def test_mirror_receives_everything_the_history_gets(setup) -> None:  # type: ignore[no-untyped-def]
    clock, _devices, history, mirror, runtime = setup
    await cycles(runtime, clock, 3)
    assert len(mirror.readings) == 3 * sum(
        len(runtime.site.profile_of(d.id).points) for d in runtime.site.devices
    )
    assert len(mirror.commands) == len(history.recent_commands(limit=1000))
    assert {s.device_id for s in mirror.states} == {d.id for d in runtime.site.devices}


async def test_old_raw_readings_are_compacted(demo_site: SiteConfig, tmp_path: Path) -> None:
    hist_cfg = demo_site.history.model_copy(update={"raw_retention_days": 1 / 24})  # 1 h
    site = demo_site.model_copy(update={"history": hist_cfg})
    clock = ManualClock(NIGHT)
    history = SqliteHistory(tmp_path / "h.sqlite")
    runtime = Runtime(site, fakes(site), history, clock)
    step_s = 300.0
    n = int(3 * 3600 / step_s)  # three hours of cycles
    await cycles(runtime, clock, n, step_s=step_s)
    await cycles(runtime, clock, 1, step_s=COMPACT_EVERY_S)
    await runtime.run_cycle()
    raw = history.readings("counter-north", "lane1_veh", limit=10_000)
    assert raw, "recent raw readings are kept"
    cutoff = clock.now() - timedelta(hours=1) - timedelta(seconds=COMPACT_EVERY_S)
    assert min(r.ts for r in raw) >= cutoff
    aggs = history.aggregates("counter-north", "lane1_veh")
    assert aggs and sum(a.count for a in aggs) + len(raw) == n + 2
    # the API side sees the same buckets, NaN turned into None
    seen = runtime.read_model.aggregates("counter-north", "lane1_veh")
    assert [(a.start, a.count) for a in seen] == [(a.start, a.count) for a in aggs]
    history.close()


async def test_history_status_reports_file_and_mirrors(setup) -> None:  # type: ignore[no-untyped-def]
    clock, _devices, _history, mirror, runtime = setup
    await cycles(runtime, clock, 2)
    status = runtime.read_model.history_status()
    assert status.sqlite_bytes > 0
    assert status.mirrors[0].pending_lines == len(mirror.readings) > 0


class _BrokenPolicy:
    """A policy with a bug: every step raises."""

    def __init__(self, real: object) -> None:
        self.real = real

    def step(self, *_args: object) -> None:
        raise RuntimeError("bug in the policy")


async def _run_until(runtime: Runtime, done: Callable[[], bool]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    for _ in range(10_000):
        if done():
            break
        await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_health_tells_failing_then_stalled_then_ok(setup) -> None:  # type: ignore[no-untyped-def]
    _clock, _devices, _history, _mirror, runtime = setup
    app = create_app(runtime.read_model)
    loop = runtime.read_model.loop_status
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        await _run_until(runtime, lambda: loop().cycles >= 2)
        assert (await http.get("/api/health")).json()["status"] == "ok"

        real = runtime.policy
        runtime.policy = _BrokenPolicy(real)  # type: ignore[assignment]
        await _run_until(runtime, lambda: loop().consecutive_failures >= 1)
        r = await http.get("/api/health")
        assert (r.status_code, r.json()["status"]) == (200, "failing")
        assert "RuntimeError: bug in the policy" in r.json()["loop"]["last_error"]

        await _run_until(runtime, lambda: loop().consecutive_failures >= 4)
        r = await http.get("/api/health")
        assert (r.status_code, r.json()["status"]) == (503, "stalled")
        # the devices were still polled while deciding failed
        assert runtime.device_states["counter-north"].quality is Quality.GOOD

        runtime.policy = real
        await _run_until(runtime, lambda: loop().consecutive_failures == 0)
        r = await http.get("/api/health")
        assert (r.status_code, r.json()["status"]) == (200, "ok")


async def test_each_device_is_polled_on_its_own_interval_and_phase(
    demo_site: SiteConfig, tmp_path: Path
) -> None:
    """Counters at 30 s on the 10 s cycle: every third cycle each, at their own phases (from
    their ids), not all on one tick; the 10 s devices every cycle; the first cycle reads all."""
    devices = [
        d.model_copy(update={"poll_interval_s": 30.0}) if d.id.startswith("counter") else d
        for d in demo_site.devices
    ]
    site = demo_site.model_copy(update={"devices": devices})
    clock = ManualClock(NIGHT)
    history = SqliteHistory(tmp_path / "h.sqlite")
    runtime = Runtime(site, fakes(site), history, clock)
    polled = []
    for _ in range(10):
        polled.append((await runtime.run_cycle()).polled)
        clock.advance(site.policy.cycle_s)
    # counter-east is due at cycles 2, 5, 8 and counter-north at 3, 6, 9 (their phases)
    assert polled == [6, 4, 5, 5, 4, 5, 5, 4, 5, 5]
    north = history.readings("counter-north", "lane1_veh", limit=100)
    assert [round((r.ts - NIGHT).total_seconds()) for r in north] == [0, 30, 60, 90]
    assert runtime.device_states["counter-north"].quality is Quality.GOOD
    await runtime.close()
    history.close()


@dataclass
class MemoryHistory:
    """A HistoryStore in lists: the runtime needs no SQLite, only the Protocol."""

    path: Path = Path("memory")
    readings_: list[PointReading] = field(default_factory=list)
    commands: list[CommandRecord] = field(default_factory=list)
    states: list[DeviceState] = field(default_factory=list)
    drifts: list[DriftRecord] = field(default_factory=list)
    saved: tuple[datetime, str, str] | None = None
    compactions: int = 0

    def record_readings(self, readings: Sequence[PointReading]) -> None:
        self.readings_ += readings

    def record_commands(self, records: Sequence[CommandRecord]) -> None:
        self.commands += records

    def record_device_state(self, state: DeviceState) -> None:
        self.states.append(state)

    def record_drifts(self, drifts: Sequence[DriftRecord]) -> None:
        self.drifts += drifts

    def save_policy_state(self, ts: datetime, fingerprint: str, payload: str) -> None:
        self.saved = (ts, fingerprint, payload)

    def saved_policy_state(self) -> None:
        return None

    def file_size_bytes(self) -> int:
        return 0

    def recent_commands(
        self, limit: int = 100, device_id: str | None = None
    ) -> list[CommandRecord]:
        found = [c for c in self.commands if device_id in (None, c.device_id)]
        return found[::-1][:limit]

    def readings(self, device_id: str, point: str, since: datetime | None = None,
                 until: datetime | None = None, limit: int = 1000,
                 newest_first: bool = False) -> list[PointReading]:  # fmt: skip
        found = [r for r in self.readings_ if (r.device_id, r.point) == (device_id, point)]
        return (found[::-1] if newest_first else found)[:limit]

    def device_state_history(
        self, device_id: str | None = None, limit: int = 100
    ) -> list[DeviceState]:
        return [s for s in self.states if device_id in (None, s.device_id)][::-1][:limit]

    def aggregates(self, *_args: object, **_kwargs: object) -> list[object]:
        return []

    def drift_events(self, device_id: str | None = None, limit: int = 100) -> list[DriftRecord]:
        return [d for d in self.drifts if device_id in (None, d.device_id)][::-1][:limit]

    def compact(self, *_args: object) -> object:
        self.compactions += 1
        return type("Report", (), {"rows_aggregated": 0, "aggregates_deleted": 0})()

    def add_override(self, request: object, created_at: datetime) -> object:
        raise NotImplementedError

    def overrides(
        self, at: datetime | None = None, *, upcoming: bool = False, limit: int = 1000
    ) -> list[object]:
        return []

    def cancel_override(self, override_id: int, now: datetime) -> object:
        raise NotImplementedError


async def test_the_runtime_needs_only_a_history_store(demo_site: SiteConfig) -> None:
    clock = ManualClock(NIGHT)
    store = MemoryHistory()
    runtime = Runtime(demo_site, fakes(demo_site), store, clock)
    await cycles(runtime, clock, 3)
    assert runtime.read_model.readings("counter-north", "lane1_veh", newest_first=True)[
        0
    ].ts == NIGHT + timedelta(seconds=20)
    assert runtime.read_model.recent_commands(device_id="seg-bahnhofstr")[0].value == 30.0
    assert [s.quality for s in runtime.read_model.device_state_changes("school")] == [
        Quality.GOOD,
        Quality.OFFLINE,
    ]
    assert runtime.read_model.history_status().sqlite_path == "memory"
    assert store.saved is not None and store.compactions == 1
    await runtime.close()
