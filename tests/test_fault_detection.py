"""Lamp and driver faults end to end: the emulated demo site on loopback (real Modbus TCP and
OPC-UA), the runtime, and the API. Faults are injected into the emulated plant; the runtime sees
nothing but the segment controllers' power readings, and the fault must appear in /api/faults.

A manual clock, 5-minute cycles, a November evening (dark throughout); no wall-clock sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from laterne.api.app import create_app
from laterne.controller.clock import ManualClock
from laterne.controller.runtime import Runtime
from laterne.drivers.field.factory import build_clients
from laterne.drivers.history.sqlite_store import SqliteHistory
from laterne.models.site import SiteConfig
from laterne.models.values import Override
from laterne.simulations.emulator import SiteEmulator

from .test_end_to_end import CYCLE_S, accelerated


@dataclass
class Rig:
    clock: ManualClock
    emu: SiteEmulator
    runtime: Runtime
    api: httpx.AsyncClient

    async def cycles(self, n: int) -> None:
        for _ in range(n):
            self.clock.advance(CYCLE_S)
            await self.emu.step(self.clock.now())
            await self.runtime.run_cycle()

    async def faults(self, segment: str | None = None) -> list[dict[str, object]]:
        params = {"segment": segment} if segment else {}
        r = await self.api.get("/api/faults", params=params)
        assert r.status_code == 200
        body: list[dict[str, object]] = r.json()
        return body

    def hold(self, segment: str, dim_pct: float) -> None:
        """A person's override: the segment at ``dim_pct`` for the next hour."""
        now = self.clock.now()
        self.runtime.set_overrides(
            [Override("segment", segment, dim_pct, now, now + timedelta(hours=1), "test")]
        )


@pytest.fixture
async def rig(demo_site: SiteConfig, tmp_path: Path) -> AsyncIterator[Rig]:
    site = accelerated(demo_site)
    start = datetime(2026, 11, 25, 19, 0, tzinfo=ZoneInfo(site.site.timezone))
    clock = ManualClock(start)
    emu = SiteEmulator(site, start=clock.now(), seed=3)
    await emu.start()
    history = SqliteHistory(tmp_path / "history.sqlite")
    runtime = Runtime(site, build_clients(site), history, clock)
    app = create_app(runtime.read_model)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://laterne") as api:
            yield Rig(clock, emu, runtime, api)
    finally:
        await runtime.close()
        await emu.stop()
        history.close()


async def test_lamps_out_appear_in_the_fault_list_and_clear_after_repair(rig: Rig) -> None:
    await rig.cycles(4)
    assert await rig.faults() == []
    lit = (await rig.api.get("/api/segments/bahnhofstr")).json()
    assert lit["dim_pct"] > 0 and lit["measured_power_w"] > 0
    assert lit["measured_power_w"] == pytest.approx(lit["expected_power_w"], rel=0.01)

    rig.emu.set_lamps_out("bahnhofstr", 10)  # of 42
    await rig.cycles(2)
    assert await rig.faults() == []  # two low readings are not yet a fault
    await rig.cycles(1)
    (fault,) = await rig.faults()
    assert fault["segment_id"] == "bahnhofstr" and fault["kind"] == "lamps_out"
    assert fault["lamps_out"] == 10
    assert await rig.faults("elberfelder") == []
    seg = (await rig.api.get("/api/segments/bahnhofstr")).json()
    assert seg["faults"] == ["lamps_out"]
    # lit from the first cycle's command on, counted over the six intervals since
    assert seg["burning_h"] == pytest.approx(6 * CYCLE_S / 3600)
    assert 0 < seg["full_power_h"] < seg["burning_h"]  # dimmed for part of it

    rig.emu.set_lamps_out("bahnhofstr", 0)
    await rig.cycles(3)
    assert await rig.faults() == []


async def test_a_stuck_driver_appears_as_stuck_dimming_not_as_lamps_out(rig: Rig) -> None:
    rig.emu.set_driver_stuck("elberfelder", 30.0)
    for level in (30.0, 100.0, 60.0, 100.0):
        rig.hold("elberfelder", level)
        await rig.cycles(2)
    faults = await rig.faults()
    assert [(f["segment_id"], f["kind"]) for f in faults] == [("elberfelder", "stuck_dimming")]
    seg = (await rig.api.get("/api/segments/elberfelder")).json()
    assert seg["actual_dim_pct"] == pytest.approx(100.0)  # the controller says it obeys


async def test_a_silent_power_meter_is_a_fault(rig: Rig) -> None:
    await rig.cycles(2)
    went = await rig.emu.stop_device_server("seg-bahnhofstr")  # the gateway of all three
    await rig.cycles(6)
    kinds = {(f["segment_id"], f["kind"]) for f in await rig.faults()}
    assert kinds == {(s, "no_power_reading") for s in ("bahnhofstr", "elberfelder", "lindenweg")}
    assert "seg-lindenweg" in went
