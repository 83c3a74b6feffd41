"""The whole loop over real protocols: emulated site on loopback, runtime, history, API.

A simulated night (Wednesday 15:00 to Thursday 11:00 local) on a manual clock: every cycle the
emulated plant advances, the runtime polls it over Modbus TCP and OPC-UA, decides and writes back.
No wall-clock sleeping: the clock moves only when the test advances it.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from laterne.api.app import create_app
from laterne.controller.clock import ManualClock
from laterne.controller.runtime import Runtime
from laterne.drivers.field.factory import build_clients
from laterne.drivers.history.sqlite_store import SqliteHistory
from laterne.models.site import SiteConfig
from laterne.simulations.emulator import SiteEmulator
from laterne.simulations.ports import with_free_ports

CYCLE_S = 300.0  # one cycle per 5 simulated minutes keeps the night to ~190 cycles


def accelerated(site: SiteConfig) -> SiteConfig:
    """The demo site with a 5-minute cycle (poll intervals and staleness scaled along)."""
    policy = site.policy.model_copy(update={"cycle_s": CYCLE_S, "stale_after_s": 2 * CYCLE_S})
    devices = [d.model_copy(update={"poll_interval_s": CYCLE_S}) for d in site.devices]
    return with_free_ports(site.model_copy(update={"policy": policy, "devices": devices}))


@pytest.fixture
async def night(demo_site: SiteConfig, tmp_path: Path):  # type: ignore[no-untyped-def]
    site = accelerated(demo_site)
    tz = site.site.timezone
    from zoneinfo import ZoneInfo

    start = datetime(2026, 11, 25, 15, 0, tzinfo=ZoneInfo(tz))
    clock = ManualClock(start)
    emu = SiteEmulator(site, start=clock.now(), seed=1)
    await emu.start()
    history = SqliteHistory(tmp_path / "history.sqlite")
    runtime = Runtime(site, build_clients(site), history, clock)
    log: list[dict[str, object]] = []
    try:
        end = start + timedelta(hours=20)
        while clock.now() < end:
            await emu.step(clock.now())
            await runtime.run_cycle()
            cmds = runtime.commands
            assert cmds is not None
            log.append(
                {
                    "ts": clock.now(),
                    "sun": runtime.policy_state.sun_elevation_deg,
                    "dim": cmds.dim_pct.copy(),
                    "setpoint": cmds.setpoint_c.copy(),
                    "plant_setpoint": emu.plant.setpoint_c.copy(),
                    "plant_dim": emu.plant.dim_pct.copy(),
                    "zone_temp": emu.plant.zone_temp_c.copy(),
                }
            )
            clock.advance(CYCLE_S)
        yield site, runtime, emu, log, tmp_path / "history.sqlite"
    finally:
        await runtime.close()
        await emu.stop()
        history.close()


async def test_a_simulated_night(night) -> None:  # type: ignore[no-untyped-def]
    site, runtime, _emu, log, db = night
    dark = [e for e in log if e["sun"] < -6]
    day = [e for e in log if e["sun"] > 2]
    assert len(dark) > 100 and len(day) > 10

    # lights off by day, on at night
    assert all((e["dim"] == 0).all() for e in day)
    assert all((e["dim"] > 0).all() for e in dark)

    # the busy main road was lit brighter than the quiet residential street, on average and
    # in every dark cycle after the flow estimate settled
    dims = np.array([e["dim"] for e in dark])
    busy, quiet = site.segments[0].id, site.segments[2].id
    assert (busy, quiet) == ("bahnhofstr", "lindenweg")
    assert dims[:, 0].mean() > dims[:, 2].mean() + 10
    assert (dims[3:, 0] >= dims[3:, 2]).all()
    # the main road's level followed its traffic: dimmer in the small hours than in the evening
    by_hour = {e["ts"].astimezone(runtime.layout.timezone).hour: e["dim"][0] for e in dark}
    assert by_hour[3] < by_hour[18]

    # what the controller commanded is what the field devices were set to
    last = log[-1]
    np.testing.assert_allclose(last["plant_dim"], last["dim"], atol=0.05)

    # heating: setback at night, comfort in the morning (Thursday, occupied from 06:30)
    def at(hour: int) -> dict[str, object]:
        return next(e for e in log if e["ts"].astimezone(runtime.layout.timezone).hour == hour)

    assert at(23)["setpoint"].tolist() == [16, 14]
    assert at(10)["setpoint"].tolist() == [21, 18]
    np.testing.assert_allclose(at(10)["plant_setpoint"], [21, 18])
    # and the building followed: cooler at 06:00 than at 15:00
    assert at(6)["zone_temp"][0] < log[0]["zone_temp"][0]

    # every device stayed good
    assert {s.quality.value for s in runtime.device_states.values()} == {"good"}

    # the API reports it
    transport = httpx.ASGITransport(app=create_app(runtime.read_model))
    async with httpx.AsyncClient(transport=transport, base_url="http://laterne") as client:
        snap = (await client.get("/api/site")).json()
        assert snap["cycle"] == len(log)
        segs = {s["id"]: s for s in (await client.get("/api/segments")).json()}
        assert segs["bahnhofstr"]["dim_pct"] == 0 and segs["bahnhofstr"]["reason"] == "daylight"
        assert segs["bahnhofstr"]["flow_veh_h"] > segs["lindenweg"]["flow_veh_h"]
        devices = (await client.get("/api/devices")).json()
        assert {d["quality"] for d in devices} == {"good"}
        school = (await client.get("/api/buildings/school")).json()
        assert [z["setpoint_c"] for z in school["zones"]] == [21, 18]
        commands = (await client.get("/api/commands", params={"limit": 1000})).json()
        assert any(c["reason"] == "setback" for c in commands)
        assert any(
            c["reason"] == "traffic" and c["device_id"] == "seg-bahnhofstr" for c in commands
        )

    # the history file holds every reading and every command
    con = sqlite3.connect(db)
    n_readings = con.execute("select count(*) from readings").fetchone()[0]
    n_commands = con.execute("select count(*) from commands").fetchone()[0]
    con.close()
    points = sum(len(site.profile_of(d.id).points) for d in site.devices)
    assert n_readings == points * len(log)
    assert n_commands >= 20
