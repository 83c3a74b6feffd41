"""The writer with in-memory clients and health: each command once, drifts re-sent with a
doubling back-off, failed writes backed off, offline devices left alone."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import numpy as np
import pytest

from laterne.controller.writer import (
    RESEND_MAX_DELAY_S,
    RESENDS_BEFORE_FAULTY,
    Writer,
    commands_to_writes,
)
from laterne.drivers.field.errors import DeviceOffline, OutOfBounds, WriteMismatch
from laterne.models.layout import SiteLayout
from laterne.models.site import SiteConfig
from laterne.models.values import Commands, PointReading, PointWrite, Quality

T0 = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)
SEG = "seg-bahnhofstr"


@dataclass
class Health:
    qualities: dict[str, Quality] = field(default_factory=dict)
    marks: list[tuple[str, Quality, str]] = field(default_factory=list)

    def quality_of(self, device_id: str) -> Quality:
        return self.qualities.get(device_id, Quality.GOOD)

    def mark(self, device_id: str, quality: Quality, error: str, now: datetime) -> None:
        self.marks.append((device_id, quality, error))
        self.qualities[device_id] = quality


@dataclass
class Client:
    device_id: str
    fail: Exception | None = None
    written: list[tuple[str, float]] = field(default_factory=list)

    async def read(self, now: datetime) -> dict[str, PointReading]:
        return {}

    async def write(self, point: str, value: float) -> float:
        if self.fail is not None:
            raise self.fail
        self.written.append((point, value))
        return value

    async def close(self) -> None:
        return None


@pytest.fixture
def rig(demo_site: SiteConfig) -> tuple[Writer, dict[str, Client], Health]:
    clients = {d.id: Client(d.id) for d in demo_site.devices}
    health = Health()
    return Writer(demo_site, clients, health), clients, health


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def dim(value: float) -> list[PointWrite]:
    return [PointWrite(SEG, "dim_pct", value, "traffic")]


def holds(value: float, ts: datetime) -> dict[str, PointReading]:
    return {"dim_pct": PointReading(SEG, "dim_pct", value, Quality.GOOD, ts)}


async def test_an_unchanged_command_is_written_once(rig) -> None:  # type: ignore[no-untyped-def]
    writer, clients, _health = rig
    assert [r.value for r in await writer.write(dim(40.0), at(0))] == [40.0]
    assert await writer.write(dim(40.0), at(10)) == []
    assert await writer.write(dim(40.0), at(20)) == []
    records = await writer.write(dim(55.0), at(30))
    assert [(r.value, r.source, r.ok) for r in records] == [(55.0, "policy", True)]
    assert clients[SEG].written == [("dim_pct", 40.0), ("dim_pct", 55.0)]


async def test_a_point_that_holds_its_command_is_no_drift(rig) -> None:  # type: ignore[no-untyped-def]
    writer, _clients, _health = rig
    await writer.write(dim(40.0), at(0))
    found = writer.check_readback(SEG, holds(40.04, at(10)), at(10))  # within half a 0.1 step
    assert (found.drift, found.hopeless) == ("", "")
    assert writer.take_drifts() == []
    assert await writer.write(dim(40.0), at(10)) == []


async def test_a_drift_is_resent_at_once_then_with_a_doubling_back_off(rig) -> None:  # type: ignore[no-untyped-def]
    """A controller that forgets its level after every write: re-sent at once, then after
    cycle_s, 2 cycle_s, 4 cycle_s …; FAULTY-worthy after RESENDS_BEFORE_FAULTY re-sends."""
    writer, clients, _health = rig
    cycle_s = 10.0
    await writer.write(dim(40.0), at(0))
    resent_at, hopeless_at = [], []
    for k in range(1, 17):
        now = at(k * cycle_s)
        found = writer.check_readback(SEG, holds(0.0, now), now)
        assert "dim_pct: commanded 40 but the device holds 0" in found.drift
        if found.hopeless:
            hopeless_at.append(k)
        records = await writer.write(dim(40.0), now)
        for r in records:
            assert (r.source, r.value, r.ok) == ("resend", 40.0, True)
            resent_at.append(k)
        assert found.drift.endswith("; re-sending" if records else "; re-sending later")
    assert resent_at == [1, 2, 4, 8, 16]  # gaps of 1, 2, 4, 8 cycles
    assert hopeless_at[0] == 5  # three re-sends (at 1, 2, 4) did not hold
    assert (
        f"after {RESENDS_BEFORE_FAULTY} re-sends"
        in writer.check_readback(SEG, holds(0.0, at(170)), at(170)).hopeless
    )
    drifts = writer.take_drifts()
    # recorded when first seen and at each re-send, not at every poll while backing off
    assert [(d.attempt, d.resent) for d in drifts] == [(k, True) for k in (1, 2, 4, 8, 16)]
    assert writer.take_drifts() == []  # taken once
    assert len(clients[SEG].written) == 1 + len(resent_at)


async def test_the_resend_back_off_is_capped(rig) -> None:  # type: ignore[no-untyped-def]
    writer, _clients, _health = rig
    await writer.write(dim(40.0), at(0))
    times = []
    now = at(0)
    while len(times) < 12:
        now += timedelta(seconds=10)
        writer.check_readback(SEG, holds(0.0, now), now)
        if await writer.write(dim(40.0), now):
            times.append((now - T0).total_seconds())
    gaps = [b - a for a, b in pairwise(times)]
    assert max(gaps) == RESEND_MAX_DELAY_S and gaps[-1] == RESEND_MAX_DELAY_S


async def test_a_drift_that_is_gone_ends_the_back_off(rig) -> None:  # type: ignore[no-untyped-def]
    writer, _clients, _health = rig
    await writer.write(dim(40.0), at(0))
    writer.check_readback(SEG, holds(0.0, at(10)), at(10))
    assert writer.retrying((SEG, "dim_pct"))
    await writer.write(dim(40.0), at(10))
    assert writer.check_readback(SEG, holds(40.0, at(20)), at(20)).drift == ""
    assert not writer.retrying((SEG, "dim_pct"))


async def test_a_failed_write_is_recorded_reported_and_backed_off(rig) -> None:  # type: ignore[no-untyped-def]
    writer, clients, health = rig
    clients[SEG].fail = WriteMismatch("dim_pct", 40.0, 0.0)
    tried = []
    for k in range(6):
        for r in await writer.write(dim(40.0), at(10 * k)):
            assert not r.ok and r.error
            tried.append(k)
    assert tried == [0, 1, 3]  # back-off: 1 cycle, then 2, then 4 (next at 7)
    assert health.marks[0][:2] == (SEG, Quality.FAULTY)
    clients[SEG].fail = None
    assert [r.ok for r in await writer.write(dim(40.0), at(70))] == [True]


async def test_a_communication_failure_marks_the_device_offline(rig) -> None:  # type: ignore[no-untyped-def]
    writer, clients, health = rig
    clients[SEG].fail = DeviceOffline("gone")
    await writer.write(dim(40.0), at(0))
    assert health.marks == [(SEG, Quality.OFFLINE, "gone")]
    assert await writer.write(dim(40.0), at(10)) == []  # nothing is written to it while offline


async def test_a_refused_command_is_not_backed_off(rig) -> None:  # type: ignore[no-untyped-def]
    """The driver refused it before sending (out of bounds): the field never saw it."""
    writer, clients, _health = rig
    clients[SEG].fail = OutOfBounds("dim_pct", 140.0, 0.0, 100.0)
    for k in range(3):
        assert len(await writer.write(dim(140.0), at(10 * k))) == 1


async def test_an_unexpected_exception_is_this_writes_failure_only(rig) -> None:  # type: ignore[no-untyped-def]
    writer, clients, health = rig
    clients[SEG].fail = ZeroDivisionError()  # type: ignore[assignment]
    writes = [*dim(40.0), PointWrite("seg-lindenweg", "dim_pct", 30.0, "traffic")]
    records = await writer.write(writes, at(0))
    assert [(r.device_id, r.ok) for r in records] == [(SEG, False), ("seg-lindenweg", True)]
    assert "unexpected ZeroDivisionError" in records[0].error
    assert health.marks[0][:2] == (SEG, Quality.FAULTY)


async def test_a_device_that_went_offline_is_rewritten_once_back(rig) -> None:  # type: ignore[no-untyped-def]
    writer, clients, _health = rig
    await writer.write(dim(40.0), at(0))
    writer.forget(SEG)  # it went offline (and may have rebooted to its defaults)
    assert [r.value for r in await writer.write(dim(40.0), at(10))] == [40.0]
    assert clients[SEG].written == [("dim_pct", 40.0), ("dim_pct", 40.0)]


async def test_last_written_is_nan_until_written(  # type: ignore[no-untyped-def]
    rig, demo_layout: SiteLayout
) -> None:
    writer, _clients, _health = rig
    before = writer.last_written(demo_layout)
    assert all(math.isnan(v) for v in before.dim_pct) and len(before.dim_pct) == 3
    await writer.write(dim(40.0), at(0))
    after = writer.last_written(demo_layout)
    i = [r.device for r in demo_layout.segments.controller].index(SEG)
    assert after.dim_pct[i] == 40.0
    assert sum(math.isnan(v) for v in after.dim_pct) == 2
    assert all(math.isnan(v) for v in after.setpoint_c)


def test_commands_to_writes_is_one_write_per_actuator(demo_layout: SiteLayout) -> None:
    cmds = Commands(
        dim_pct=np.full(demo_layout.n_segments, 50.0),
        dim_reason=np.zeros(demo_layout.n_segments, dtype=np.int8),
        setpoint_c=np.full(demo_layout.n_zones, 20.0),
        setpoint_reason=np.zeros(demo_layout.n_zones, dtype=np.int8),
    )
    writes = commands_to_writes(demo_layout, cmds)
    refs = [*demo_layout.segments.controller, *demo_layout.zones.setpoint]
    assert [(w.device_id, w.point) for w in writes] == [(r.device, r.point) for r in refs]
    assert [w.value for w in writes] == [50.0] * demo_layout.n_segments + [
        20.0
    ] * demo_layout.n_zones
