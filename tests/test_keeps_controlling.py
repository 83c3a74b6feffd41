"""The controller keeps controlling, over real protocols and a real SQLite file.

The emulated demo site runs on loopback (Modbus TCP and OPC-UA); the runtime polls it on a manual
clock. Each test does to it what the field does: a segment controller resets behind Laterne's
back, a register is left at 150 %, a setpoint is changed at the BMS, one device's client raises
something nobody expected, a DB browser holds a lock on the history, the controller restarts.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from laterne.controller.clock import ManualClock
from laterne.controller.overrides import OverrideRefused
from laterne.controller.runtime import (
    OVERRIDES_RELOAD_EVERY_S,
    RESEND_MAX_DELAY_S,
    RESENDS_BEFORE_FAULTY,
    Runtime,
)
from laterne.drivers.field.base import DeviceClient
from laterne.drivers.field.factory import build_clients
from laterne.drivers.field.opcua import OpcUaDevice
from laterne.drivers.history.sqlite_store import SqliteHistory
from laterne.models.site import ModbusEndpoint, OpcUaEndpoint, SiteConfig
from laterne.models.values import OverrideRequest, PointReading, Quality, Reason
from laterne.simulations.emulator import SiteEmulator

from .test_end_to_end import CYCLE_S, accelerated

NIGHT = datetime(2026, 11, 25, 21, 0, tzinfo=ZoneInfo("Europe/Berlin"))


@dataclass
class Rig:
    site: SiteConfig
    clock: ManualClock
    emu: SiteEmulator
    runtime: Runtime
    history: SqliteHistory
    path: Path

    async def cycle(self) -> None:
        await self.emu.step(self.clock.now())
        await self.runtime.run_cycle()
        self.clock.advance(CYCLE_S)

    async def restart(self, clients: dict[str, DeviceClient] | None = None) -> None:
        """Stop the controller (history closed) and start a new one on the same file."""
        await self.runtime.close()
        self.history.close()
        self.history = SqliteHistory(self.path)
        self.runtime = Runtime(
            self.site, clients or self._clients(), self.history, self.clock
        )

    def _clients(self) -> dict[str, DeviceClient]:
        return build_clients(self.site, monotonic=lambda: self.clock.now().timestamp())

    def modbus(self, device_id: str) -> tuple[int, int]:
        ep = self.site.device(device_id).endpoint
        assert isinstance(ep, ModbusEndpoint)
        return ep.port, ep.unit_id


@pytest.fixture
async def rig(demo_site: SiteConfig, tmp_path: Path) -> AsyncIterator[Rig]:
    site = accelerated(demo_site)
    clock = ManualClock(NIGHT)
    emu = SiteEmulator(site, start=clock.now(), seed=5)
    await emu.start()
    path = tmp_path / "h.sqlite"
    history = SqliteHistory(path)
    clients = build_clients(site, monotonic=lambda: clock.now().timestamp())
    r = Rig(site, clock, emu, Runtime(site, clients, history, clock), history, path)
    try:
        yield r
    finally:
        await r.runtime.close()
        await emu.stop()
        r.history.close()


async def _technician_writes(rig: Rig, device_id: str, raw: int) -> None:
    """A handheld on the segment controller's Modbus port writes its dim register."""
    port, unit = rig.modbus(device_id)
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        rr = await client.write_register(0, raw, device_id=unit)
        assert not rr.isError()
    finally:
        client.close()


async def _dim_register(rig: Rig, device_id: str) -> int:
    port, unit = rig.modbus(device_id)
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        rr = await client.read_holding_registers(0, count=1, device_id=unit)
        return int(rr.registers[0])
    finally:
        client.close()


# -- commands the device no longer holds --------------------------------------------------------


@pytest.mark.parametrize(("raw", "shown"), [(0, 0.0), (1500, None)])
async def test_a_dim_level_lost_behind_our_back_is_back_within_one_poll(
    rig: Rig, raw: int, shown: float | None
) -> None:
    """A controller that reset to 0 % (or was left at an impossible 150 %) between two polls
    holds the commanded level again after the next poll, and the history says what happened."""
    for _ in range(4):
        await rig.cycle()
    cmds = rig.runtime.commands
    assert cmds is not None and cmds.dim_reason[0] == Reason.TRAFFIC
    commanded = float(cmds.dim_pct[0])
    assert await _dim_register(rig, "seg-bahnhofstr") == round(commanded * 10)

    await _technician_writes(rig, "seg-bahnhofstr", raw)
    await rig.cycle()

    assert await _dim_register(rig, "seg-bahnhofstr") == round(commanded * 10)
    drifts = rig.runtime.read_model.drift_events("seg-bahnhofstr")
    assert len(drifts) == 1
    assert (drifts[0].commanded, drifts[0].actual, drifts[0].resent) == (commanded, shown, True)
    resent = [c for c in rig.history.recent_commands(device_id="seg-bahnhofstr") if c.ok]
    assert resent[0].source == "resend" and resent[0].value == commanded
    state = rig.runtime.device_states["seg-bahnhofstr"]
    assert "dim_pct: commanded" in state.last_error
    seg = rig.runtime.read_model.snapshot().segments[0]
    assert seg.dim_pct == commanded
    assert seg.actual_dim_pct == shown  # what the poll found, beside what was commanded
    await rig.cycle()
    seg = rig.runtime.read_model.snapshot().segments[0]
    assert seg.actual_dim_pct == seg.dim_pct  # holds it again
    assert rig.runtime.device_states["seg-bahnhofstr"].quality is Quality.GOOD


async def test_a_setpoint_changed_at_the_bms_above_the_zone_max_is_rewritten(rig: Rig) -> None:
    for _ in range(2):
        await rig.cycle()
    cmds = rig.runtime.commands
    assert cmds is not None
    commanded = float(cmds.setpoint_c[0])  # the classrooms' setback at night
    ep = rig.site.device("school").endpoint
    assert isinstance(ep, OpcUaEndpoint)
    node_id = rig.site.profile_of("school").points["classrooms_setpoint_c"].node
    assert node_id is not None
    before = _notifications(rig, "school")
    async with Client(ep.url) as bms:  # someone at the BMS panel
        node = bms.get_node(node_id)
        await node.write_value(ua.DataValue(ua.Variant(25.0, ua.VariantType.Double)))
        await _notified(rig, "school", before)
        await rig.cycle()
        assert await node.read_value() == commanded
    drift = rig.runtime.read_model.drift_events("school")[0]
    assert (drift.point, drift.actual) == ("classrooms_setpoint_c", 25.0)
    assert drift.commanded == commanded


def _notifications(rig: Rig, device_id: str) -> int:
    client = rig.runtime._clients[device_id]
    assert isinstance(client, OpcUaDevice)
    return client.notifications


async def _notified(rig: Rig, device_id: str, before: int) -> None:
    """Wait (bounded) until the subscription delivered a change: it arrives on its own time."""
    for _ in range(200):
        if _notifications(rig, device_id) > before:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no data-change notification within 10 s")


class _NeverHolds:
    """A real client whose device resets its dim level right after every write."""

    def __init__(self, inner: DeviceClient, rig: Rig) -> None:
        self._inner = inner
        self._rig = rig
        self.writes = 0

    @property
    def device_id(self) -> str:
        return self._inner.device_id

    async def read(self, now: datetime) -> dict[str, PointReading]:
        return await self._inner.read(now)

    async def write(self, point: str, value: float) -> float:
        self.writes += 1
        held = await self._inner.write(point, value)
        await _technician_writes(self._rig, self.device_id, 0)  # and it forgets again
        return held

    async def close(self) -> None:
        await self._inner.close()


async def test_a_device_that_never_holds_its_command_is_faulty_and_not_hammered(
    rig: Rig,
) -> None:
    clients = rig._clients()
    flaky = _NeverHolds(clients["seg-elberfelder"], rig)
    clients["seg-elberfelder"] = flaky
    await rig.restart(clients)
    n = 14
    for _ in range(n):
        await rig.cycle()
    state = rig.runtime.device_states["seg-elberfelder"]
    assert state.quality is Quality.FAULTY
    assert "does not hold its command" in state.last_error
    # re-sent with a doubling back-off, capped at RESEND_MAX_DELAY_S: not once per poll
    await rig.runtime.flush_history(10)
    sent = rig.history.recent_commands(device_id="seg-elberfelder", limit=100)[::-1]
    times = [c.ts.timestamp() for c in sent if c.source == "resend"]
    gaps = [b - a for a, b in pairwise(times)]
    assert len(times) > RESENDS_BEFORE_FAULTY
    assert gaps[0] == CYCLE_S and all(g == RESEND_MAX_DELAY_S for g in gaps[1:]), gaps
    assert flaky.writes == len(sent)
    others = rig.runtime.device_states
    assert others["seg-bahnhofstr"].quality is Quality.GOOD


# -- one device's client raises something unexpected --------------------------------------------


class _Broken:
    """A client whose library raises an exception type no driver maps (as asyncua did with an
    AssertionError when a server refused the certificate)."""

    def __init__(self, device_id: str, exc: BaseException) -> None:
        self._id = device_id
        self._exc = exc

    @property
    def device_id(self) -> str:
        return self._id

    async def read(self, now: datetime) -> dict[str, PointReading]:
        raise self._exc

    async def write(self, point: str, value: float) -> float:
        raise self._exc

    async def close(self) -> None:
        raise self._exc


@pytest.mark.parametrize(
    "exc", [AssertionError(), KeyError("nodes"), RuntimeError("handshake"), ZeroDivisionError()]
)
async def test_an_unexpected_exception_in_one_client_leaves_the_others_controlled(
    rig: Rig, exc: Exception
) -> None:
    clients = rig._clients()
    clients["school"] = _Broken("school", exc)
    await rig.restart(clients)
    for _ in range(3):
        await rig.cycle()
    states = rig.runtime.device_states
    assert states["school"].quality is Quality.FAULTY
    assert type(exc).__name__ in states["school"].last_error
    assert {q.quality for d, q in states.items() if d != "school"} == {Quality.GOOD}
    assert rig.runtime.read_model.loop_status().cycles == 0  # run_cycle() called, not run()
    assert rig.runtime.read_model.snapshot().cycle == 3
    cmds = rig.runtime.commands
    assert cmds is not None and (cmds.dim_reason == Reason.TRAFFIC).all()
    plant = await rig.emu.step(rig.clock.now())  # the plant takes up the last cycle's writes
    assert np.array_equal(plant.dim_pct, cmds.dim_pct)  # the segments were commanded
    assert (cmds.setpoint_reason == Reason.FAILSAFE).all()


# -- a locked history ----------------------------------------------------------------------------


async def test_a_locked_history_never_stops_control(rig: Rig) -> None:
    """A DB browser holds a write lock for longer than several cycles: every cycle runs, every
    command sent is in the history afterwards, and health shows the queue meanwhile."""
    for _ in range(2):
        await rig.cycle()
    before = len(rig.history.recent_commands(limit=1000))
    browser = sqlite3.connect(rig.path, isolation_level=None)
    browser.execute("BEGIN IMMEDIATE")  # a write lock, as a DB browser's open transaction
    try:
        for _ in range(6):  # dusk → night: the school goes to setback, bands move
            await rig.cycle()
        status = rig.runtime.read_model.history_status().queues[0]
        assert not status.writable and "locked" in status.last_error
        assert status.queued_readings > 0
        assert rig.runtime.read_model.snapshot().cycle == 8
        # a write the devices received is queued, not lost
        await _technician_writes(rig, "seg-lindenweg", 0)
        await rig.cycle()
    finally:
        browser.execute("ROLLBACK")
        browser.close()
    assert await rig.runtime.flush_history(timeout_s=30)
    recorded = rig.history.recent_commands(limit=1000)
    assert len(recorded) > before
    assert any(c.source == "resend" and c.device_id == "seg-lindenweg" for c in recorded)
    readings = rig.history.readings("counter-north", "lane1_veh", limit=100)
    assert len(readings) == 9  # one per cycle, none lost, in order
    assert [r.ts for r in readings] == sorted(r.ts for r in readings)
    assert rig.runtime.read_model.history_status().queues[0].writable


async def test_the_history_queue_is_bounded(rig: Rig) -> None:
    from laterne.controller import recorder

    queue = rig.runtime._recorder.queues[0]
    queue._max_readings = 30  # a small bound: the demo polls 28 points per cycle
    browser = sqlite3.connect(rig.path, isolation_level=None)
    browser.execute("BEGIN IMMEDIATE")
    try:
        for _ in range(3):
            await rig.cycle()
        st = queue.status()
        assert st.queued_readings <= 2 * 30 and st.dropped_readings > 0  # bound + a batch in flight
        assert st.queued_records > 0  # commands and states are kept
    finally:
        browser.execute("ROLLBACK")
        browser.close()
    assert await rig.runtime.flush_history(timeout_s=30)
    assert recorder  # the module under test


# -- restarts ------------------------------------------------------------------------------------


def _bands(rig: Rig) -> list[int]:
    return [int(b) for b in rig.runtime.policy_state.segment_band]


async def test_a_restart_mid_night_resumes_without_flicker(rig: Rig) -> None:
    for _ in range(12):  # an hour of night
        await rig.cycle()
    bands, cmds = _bands(rig), rig.runtime.commands
    assert cmds is not None
    dims = cmds.dim_pct.copy()
    await rig.restart()
    await rig.cycle()
    after = rig.runtime.commands
    assert after is not None
    assert (after.dim_reason == Reason.TRAFFIC).all()  # no fail-safe step on restart
    assert np.abs(after.dim_pct - dims).max() <= 30  # at most one band's change
    assert all(abs(a - b) <= 1 for a, b in zip(_bands(rig), bands, strict=True))


async def test_a_cold_start_steps_no_band_down_in_the_first_window(rig: Rig) -> None:
    """Without a saved state (or an old one) the estimate starts cold: bands may go up but not
    down until it covers the flow window."""
    window_cycles = int(rig.site.policy.flow_window_s // CYCLE_S)
    seen: list[list[int]] = []
    for _ in range(window_cycles + 1):
        await rig.cycle()
        seen.append(_bands(rig))
    for earlier, later in pairwise(seen):
        assert all(b >= a for a, b in zip(earlier, later, strict=True)), seen


async def test_a_saved_state_of_another_layout_is_not_resumed(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        await rig.cycle()
    await rig.runtime.flush_history(5)
    rig.history.save_policy_state(rig.clock.now(), "0123456789abcdef", "{}")
    caplog.set_level("INFO", logger="laterne.runtime")
    await rig.restart()
    assert "segments, counters or zones changed" in caplog.text
    assert np.isnan(rig.runtime.policy_state.flow_veh_h).all()
    await asyncio.sleep(0)


# -- overrides -----------------------------------------------------------------------------------


async def test_an_override_stored_before_a_restart_is_applied_after_it(rig: Rig) -> None:
    """An operator's overrides live in the history: the controller that starts on the same file
    applies them from its first cycle, level and class alike, and the lamps follow."""
    for _ in range(2):
        await rig.cycle()
    now = rig.clock.now()
    until = now + timedelta(hours=3)
    rig.runtime.add_override(
        OverrideRequest("segment", "bahnhofstr", now, until, 88.0, None, "event", "ops")
    )
    rig.runtime.add_override(
        OverrideRequest("segment", "lindenweg", now, until, None, "P2", "police", "ops")
    )
    with pytest.raises(OverrideRefused, match="outside the bounds"):
        rig.runtime.add_override(OverrideRequest("segment", "elberfelder", now, until, 120.0))
    await rig.restart()
    assert [(o.id, o.value) for o in rig.runtime.overrides] == [
        ("bahnhofstr", 88.0),
        ("lindenweg", pytest.approx(100 * 10 / 15, abs=0.1)),  # P2 of design P1
    ]
    await rig.cycle()
    cmds = rig.runtime.commands
    assert cmds is not None
    index = rig.runtime.layout.segments.ids.index
    for seg in ("bahnhofstr", "lindenweg"):
        assert cmds.dim_reason[index(seg)] == Reason.OVERRIDE
    assert cmds.dim_reason[index("elberfelder")] != Reason.OVERRIDE
    assert await _dim_register(rig, "seg-bahnhofstr") == 880
    assert await _dim_register(rig, "seg-lindenweg") == round(cmds.dim_pct[index("lindenweg")] * 10)


async def test_an_override_from_another_process_reaches_the_running_controller(rig: Rig) -> None:
    """`laterne override` writes to the history file from another process; the running
    controller picks it up within OVERRIDES_RELOAD_EVERY_S, and a cancel ends it."""
    await rig.cycle()
    now = rig.clock.now()
    with SqliteHistory(rig.path) as other:
        stored = other.add_override(
            OverrideRequest("zone", "school.gym", now, now + timedelta(hours=2), 22.0), now
        )
    cycles = int(OVERRIDES_RELOAD_EVERY_S // CYCLE_S) + 1
    for _ in range(cycles):
        await rig.cycle()
    cmds = rig.runtime.commands
    gym = rig.runtime.layout.zones.ids.index("school.gym")
    assert cmds is not None and cmds.setpoint_reason[gym] == Reason.OVERRIDE
    assert cmds.setpoint_c[gym] == 22.0
    rig.runtime.cancel_override(stored.id)
    assert rig.runtime.overrides == ()
    await rig.cycle()
    cmds = rig.runtime.commands
    assert cmds is not None and cmds.setpoint_reason[gym] != Reason.OVERRIDE
