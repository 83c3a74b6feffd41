"""The write-behind recorder with an in-memory store that can be made to fail (pure logic; the
real SQLite lock is in tests/test_keeps_controlling.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from laterne.controller.recorder import Recorder, StoreQueue
from laterne.models.snapshot import CommandRecord
from laterne.models.values import DeviceState, PointReading, Quality

T0 = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)


@dataclass
class Store:
    failing: bool = False
    log: list[tuple[str, object]] = field(default_factory=list)

    def _check(self) -> None:
        if self.failing:
            raise OSError("database is locked")

    def record_readings(self, readings: Sequence[PointReading]) -> None:
        self._check()
        self.log += [("reading", r.value) for r in readings]

    def record_commands(self, records: Sequence[CommandRecord]) -> None:
        self._check()
        self.log += [("command", c.value) for c in records]

    def record_device_state(self, state: DeviceState) -> None:
        self._check()
        self.log.append(("state", state.quality.value))

    def save_policy_state(self, ts: datetime, fingerprint: str, payload: str) -> None:
        self._check()
        self.log.append(("policy", payload))


def reading(i: int) -> PointReading:
    return PointReading("d", "p", float(i), Quality.GOOD, T0 + timedelta(seconds=i))


def command(i: int) -> CommandRecord:
    return CommandRecord(
        ts=T0, device_id="d", point="p", value=float(i), reason="traffic", source="policy", ok=True
    )


async def no_wait(_s: float) -> None:
    await asyncio.sleep(0)


async def test_everything_arrives_in_the_order_it_was_queued_after_an_outage() -> None:
    store = Store(failing=True)
    q = StoreQueue("mem", store, sleep=no_wait)
    rec = Recorder([q])
    rec.readings([reading(1), reading(2)])
    rec.commands([command(10)])
    rec.device_state(DeviceState("d", Quality.OFFLINE, None, "", T0))
    await rec.settle(1.0)  # returns although nothing could be written
    assert not q.writable and q.status().last_error == "database is locked"
    rec.readings([reading(3)])
    store.failing = False
    assert await rec.flush(5.0)
    assert store.log == [
        ("reading", 1.0), ("reading", 2.0), ("command", 10.0), ("state", "offline"),
        ("reading", 3.0),
    ]  # fmt: skip
    assert q.writable and q.status().queued_readings == 0


async def test_beyond_its_bound_the_oldest_readings_go_and_the_audit_trail_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store(failing=True)
    q = StoreQueue("mem", store, max_readings=4, sleep=no_wait)
    rec = Recorder([q])
    for i in range(5):
        rec.readings([reading(2 * i), reading(2 * i + 1)])
        rec.commands([command(i)])
        await asyncio.sleep(0)
    st = q.status()
    assert st.queued_readings <= 2 * 4  # the bound, plus at most one batch being written
    assert st.dropped_readings >= 2
    assert sum("queue full" in r.getMessage() for r in caplog.records) == 1  # once, not per drop
    store.failing = False
    assert await rec.flush(5.0)
    commands = [v for k, v in store.log if k == "command"]
    readings = [v for k, v in store.log if k == "reading"]
    assert commands == [0.0, 1.0, 2.0, 3.0, 4.0]  # every command kept, in order
    assert readings == sorted(readings) and readings[-1] == 9.0  # the newest readings kept


async def test_only_the_newest_policy_state_waits() -> None:
    store = Store(failing=True)
    q = StoreQueue("mem", store, sleep=no_wait)
    rec = Recorder([q])
    for i in range(3):
        rec.policy_state(T0, "f", f"state {i}")
    store.failing = False
    assert await rec.flush(5.0)
    assert [v for k, v in store.log if k == "policy"] == ["state 2"]


async def test_a_failed_maintenance_job_is_skipped_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store()
    rec = Recorder([StoreQueue("mem", store, sleep=no_wait)])
    runs: list[int] = []

    def compact() -> None:
        runs.append(1)
        raise OSError("disk full")

    rec.maintenance(compact)
    rec.readings([reading(1)])
    assert await rec.flush(5.0)
    assert runs == [1] and store.log == [("reading", 1.0)]
    assert "compact failed" in caplog.text
