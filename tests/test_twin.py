"""Two shells around one decision: the live runtime on real protocols and the in-process runner
decide identically, cycle by cycle.

One trace — the demo site, an afternoon into the night of Wednesday 25 November 2026, a cycle
every 5 simulated minutes — runs twice from the same plant seed:

* live: the emulated devices on real Modbus TCP and OPC-UA servers on loopback, the runtime
  polling them through the real drivers, deciding, writing back, on a manual clock;
* in process: :func:`laterne.simulations.runner.run`, no sockets at all.

The commands (dim levels, setpoints and every reason) must be *identical*, not close: the span
covers the daylight switch at dusk, the flow estimate warming up from a cold start, the u32
counters wrapping (the emulator starts them just below 2³²), band changes with hysteresis and
the classrooms' setback at 16:30 and the gym's at 21:00. Identity holds because the runner
reproduces what the live shell sees and what the devices hold, not a loosened comparison:

* counts are the emulator's encoding (floor, modulo 2³²) decoded by the driver;
* the sun comes from one ephemeris computed by the function the live shell's scalar call runs;
* a dim command is held as the driver writes it into a register of 0.1 % steps (rounded half
  away from zero) and the emulator decodes it; that held level, not the command, sets the
  plant's power — so the plants agree too, to the bit, which the test also checks. A ramp limit
  of 12.345 % per cycle makes commands off that grid (the ramp counts from the level last
  *written*, in both shells).

The school's BMS is read twice over: polled (OPC-UA Read each cycle), where the temperatures
the live shell observed are compared with the runner's too, and by data-change subscription (the
default), where only the commands are: a subscription's table may still hold the previous
value for a publishing interval after the emulator wrote a new one — sub-second in real time,
but a whole cycle on a manual clock. No decision depends on a temperature's value yet (only on
whether it is usable), and that lag is timing, not something the runner could reproduce.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from laterne.controller.clock import ManualClock
from laterne.controller.policy import Policy
from laterne.controller.runtime import Runtime
from laterne.drivers.field.factory import build_clients
from laterne.drivers.history.sqlite_store import SqliteHistory
from laterne.models.layout import SiteLayout
from laterne.models.site import OpcUaEndpoint, SiteConfig
from laterne.models.values import Reason
from laterne.simulations.emulator import SiteEmulator
from laterne.simulations.runner import params_for_step, run

from .test_end_to_end import CYCLE_S, accelerated

START = datetime(2026, 11, 25, 15, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # Wednesday
CYCLES = 78  # to 21:30 local
SEED = 11
RAMP_PCT = 12.345


def _with_opcua(site: SiteConfig, *, subscribe: bool) -> SiteConfig:
    devices = [
        d.model_copy(update={"endpoint": d.endpoint.model_copy(update={"subscribe": subscribe})})
        if isinstance(d.endpoint, OpcUaEndpoint)
        else d
        for d in site.devices
    ]
    return site.model_copy(update={"devices": devices})


@pytest.mark.parametrize("subscribe", [False, True], ids=["opcua-polling", "opcua-subscription"])
async def test_the_live_runtime_and_the_runner_decide_alike(
    demo_site: SiteConfig, tmp_path: Path, subscribe: bool
) -> None:
    site = _with_opcua(accelerated(demo_site), subscribe=subscribe)
    # a ramp limit that makes levels off the controllers' 0.1 % grid (42.345 % is held as 42.3 %)
    site = site.model_copy(
        update={"policy": site.policy.model_copy(update={"max_dim_step_pct": RAMP_PCT})}
    )
    layout = SiteLayout.from_config(site)
    assert params_for_step(site.policy, CYCLE_S) == site.policy  # the runner's own default

    # ---- live: emulated devices on loopback, real drivers, the runtime on a manual clock
    clock = ManualClock(START)
    emu = SiteEmulator(site, start=clock.now(), seed=SEED)
    await emu.start()
    history = SqliteHistory(tmp_path / "twin.sqlite")
    clients = build_clients(site)
    runtime = Runtime(site, clients, history, clock)
    live: list[dict[str, np.ndarray]] = []
    try:
        for _ in range(CYCLES):
            plant = await emu.step(clock.now())
            await runtime.run_cycle()
            cmds, state = runtime.commands, runtime.policy_state
            assert cmds is not None
            snap = runtime.read_model.snapshot()
            live.append(
                {
                    "dim": cmds.dim_pct.copy(),
                    "dim_reason": cmds.dim_reason.copy(),
                    "sp": cmds.setpoint_c.copy(),
                    "sp_reason": cmds.setpoint_reason.copy(),
                    "sun": np.array(state.sun_elevation_deg),
                    "flow": state.segment_flow_veh_h.copy(),
                    "zone_temp": plant.zone_temp_c.copy(),
                    "energy_wh": plant.segment_energy_wh.copy(),
                    "counter": plant.counter_veh.copy(),
                    "seen_zone_temp": np.array(
                        [z.temperature_c for b in snap.buildings for z in b.zones], dtype=float
                    ),
                    "seen_outdoor": np.array([b.outdoor_temp_c for b in snap.buildings], float),
                }
            )
            clock.advance(CYCLE_S)
        final = await emu.step(clock.now())  # the plant under the last commands
        assert {s.quality.value for s in runtime.device_states.values()} == {"good"}
    finally:
        await runtime.close()
        await emu.stop()
        history.close()

    # ---- in process: the same site, plant seed and span
    sim = run(
        site,
        Policy(layout, site.policy),
        start=START,
        end=START + timedelta(seconds=CYCLES * CYCLE_S),
        step_s=CYCLE_S,
        seed=SEED,
        layout=layout,
    )
    assert sim.n_steps == CYCLES

    for k, cycle in enumerate(live):
        at = f"cycle {k} ({(START + timedelta(seconds=k * CYCLE_S)).time()})"
        assert np.array_equal(sim.dim_pct[k], cycle["dim"]), at
        assert np.array_equal(sim.dim_reason[k], cycle["dim_reason"]), at
        assert np.array_equal(sim.setpoint_c[k], cycle["sp"]), at
        assert np.array_equal(sim.setpoint_reason[k], cycle["sp_reason"]), at
        # what the decision saw: the same sun
        assert sim.sun_elevation_deg[k] == cycle["sun"], at
        # the same plant
        assert np.array_equal(sim.zone_temp_c[k], cycle["zone_temp"]), at
        if not subscribe:  # what the live shell read (polled, so of this very cycle)
            assert np.array_equal(cycle["seen_zone_temp"], sim.zone_temp_c[k]), at
            assert (cycle["seen_outdoor"] == sim.outdoor_temp_c[k]).all(), at
        if k:
            step_wh = cycle["energy_wh"] - live[k - 1]["energy_wh"]
            np.testing.assert_allclose(sim.segment_energy_wh[k - 1], step_wh, rtol=1e-12)
    assert np.array_equal(sim.final_state.segment_flow_veh_h, live[-1]["flow"], equal_nan=True)
    assert np.array_equal(sim.final_plant.segment_energy_wh, final.segment_energy_wh)
    assert np.array_equal(sim.final_plant.zone_temp_c, final.zone_temp_c)
    assert np.array_equal(sim.final_plant.counter_veh, final.counter_veh)

    # and the trace is the one the docstring promises: it is worth comparing
    reasons = sim.dim_reason
    day = (reasons == Reason.DAYLIGHT).all(axis=1)
    assert day[0] and not day[-1] and np.count_nonzero(np.diff(day.astype(int))) == 1
    assert (reasons[day.argmin() :] != Reason.DAYLIGHT).all()  # dusk: off -> lit, once
    lit = sim.dim_pct[~day]
    assert len({tuple(r) for r in lit}) >= 3  # the bands moved
    assert (reasons == Reason.RAMPED).any()
    off_grid = np.abs(lit * 10 - np.round(lit * 10)) > 1e-6
    assert off_grid.any()  # commands the controllers hold rounded to 0.1 %
    counters = np.array([c["counter"] for c in live])
    assert (counters.max(axis=0)[:2] > 2**32).all()  # the main road's u32 counters wrapped
    sp_reason = sim.setpoint_reason
    assert sp_reason[0].tolist() == [Reason.OCCUPIED, Reason.OCCUPIED]
    assert sp_reason[-1].tolist() == [Reason.SETBACK, Reason.SETBACK]
