"""Safety over real protocols: a counter gateway dies at night and comes back.

The emulated site runs on loopback; the test stops the Modbus server behind both traffic counters
mid-night. The controller must mark them offline (logged once), put every segment that depends on
them at its fail-safe level within the staleness limit, keep the other devices good, and go back
to traffic-adaptive dimming once the counters answer again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from laterne.controller.clock import ManualClock
from laterne.controller.runtime import Runtime
from laterne.drivers.field.factory import build_clients
from laterne.drivers.history.sqlite_store import SqliteHistory
from laterne.models.site import SiteConfig
from laterne.models.values import Quality, Reason
from laterne.simulations.emulator import SiteEmulator

from .test_end_to_end import CYCLE_S, accelerated


@dataclass
class Rig:
    site: SiteConfig
    clock: ManualClock
    emu: SiteEmulator
    runtime: Runtime
    history: SqliteHistory

    async def cycle(self) -> None:
        await self.emu.step(self.clock.now())
        await self.runtime.run_cycle()
        self.clock.advance(CYCLE_S)


@pytest.fixture
async def rig(demo_site: SiteConfig, tmp_path: Path) -> AsyncIterator[Rig]:
    site = accelerated(demo_site)
    clock = ManualClock(datetime(2026, 11, 25, 21, 0, tzinfo=ZoneInfo(site.site.timezone)))
    emu = SiteEmulator(site, start=clock.now(), seed=3)
    await emu.start()
    history = SqliteHistory(tmp_path / "h.sqlite")
    # the drivers' reconnect backoff runs on the same simulated clock as everything else
    clients = build_clients(site, monotonic=lambda: clock.now().timestamp())
    runtime = Runtime(site, clients, history, clock)
    try:
        yield Rig(site, clock, emu, runtime, history)
    finally:
        await runtime.close()
        await emu.stop()
        history.close()


async def test_counter_outage_drives_segments_to_failsafe_and_back(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(4):
        await rig.cycle()
    cmds = rig.runtime.commands
    assert cmds is not None and (cmds.dim_reason == Reason.TRAFFIC).all()
    traffic_dims = cmds.dim_pct.copy()
    assert (traffic_dims < rig.runtime.layout.segments.failsafe_dim_pct).any()

    caplog.set_level(logging.INFO, logger="laterne.runtime")
    down = await rig.emu.stop_device_server("counter-north")
    assert set(down) == {"counter-north", "counter-east"}  # one gateway, two unit ids

    outage_cycles = 5
    for _ in range(outage_cycles):
        await rig.cycle()
    states = rig.runtime.device_states
    assert states["counter-north"].quality is Quality.OFFLINE
    assert states["counter-east"].quality is Quality.OFFLINE
    assert states["counter-north"].last_error
    assert {states[d].quality for d in ("seg-bahnhofstr", "school")} == {Quality.GOOD}
    cmds = rig.runtime.commands
    assert cmds is not None
    assert cmds.dim_pct.tolist() == rig.runtime.layout.segments.failsafe_dim_pct.tolist()
    assert (cmds.dim_reason == Reason.FAILSAFE).all()
    # the controllers really were set to the fail-safe level
    assert rig.emu.plant.dim_pct.tolist() == rig.runtime.layout.segments.failsafe_dim_pct.tolist()
    # logged once per device when it went down, not once per failed poll
    went_down = [r for r in caplog.records if "counter-north: good -> offline" in r.getMessage()]
    assert len(went_down) == 1

    await rig.emu.start_device_server("counter-north")
    for _ in range(3):
        await rig.cycle()
    states = rig.runtime.device_states
    assert states["counter-north"].quality is Quality.GOOD
    cmds = rig.runtime.commands
    assert cmds is not None and (cmds.dim_reason == Reason.TRAFFIC).all()
    recovered = [r for r in caplog.records if "counter-north: offline -> good" in r.getMessage()]
    assert len(recovered) == 1
    # the history holds the state changes for the crew
    changes = rig.history.device_state_history("counter-north")
    assert [s.quality for s in changes[:2]] == [Quality.GOOD, Quality.OFFLINE]


async def test_building_outage_sets_default_setpoints(rig: Rig) -> None:
    for _ in range(2):
        await rig.cycle()
    await rig.emu.stop_device_server("school")
    for _ in range(4):
        await rig.cycle()
    assert rig.runtime.device_states["school"].quality is Quality.OFFLINE
    cmds = rig.runtime.commands
    assert cmds is not None
    assert cmds.setpoint_c.tolist() == rig.runtime.layout.zones.default_c.tolist()
    assert (cmds.setpoint_reason == Reason.FAILSAFE).all()
    snap = rig.runtime.read_model.snapshot()
    school = next(d for d in snap.devices if d.id == "school")
    assert school.quality is Quality.OFFLINE
    assert all(p.quality is Quality.OFFLINE for p in school.points)
    await rig.emu.start_device_server("school")
    for _ in range(3):
        await rig.cycle()
    assert rig.runtime.device_states["school"].quality is Quality.GOOD
    cmds = rig.runtime.commands
    assert cmds is not None and (cmds.setpoint_reason == Reason.SETBACK).all()
    # the setpoints were written again after the server came back
    assert rig.emu.plant.setpoint_c.tolist() == cmds.setpoint_c.tolist()
