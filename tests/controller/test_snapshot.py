"""controller/snapshot.py: the read-only view the API serves. NaN never leaves (None instead);
commanded vs. actually held levels and setpoints; failed lamps; "not started" before the first
cycle; the site's time zone beside UTC times."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from laterne.controller.health import initial_device_state, next_device_state
from laterne.controller.observe import ReadingKey
from laterne.controller.policy import Policy, PolicyState
from laterne.controller.snapshot import build_snapshot
from laterne.models.layout import SiteLayout
from laterne.models.site import PointRef, SiteConfig
from laterne.models.snapshot import SiteSnapshot
from laterne.models.values import Commands, DeviceState, PointReading, Quality, Reason

NOW = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)
SEGMENTS = ("bahnhofstr", "elberfelder", "lindenweg")


@pytest.fixture
def state(demo_site: SiteConfig, demo_layout: SiteLayout) -> PolicyState:
    return Policy(demo_layout, demo_site.policy).initial_state()


def devices(site: SiteConfig, quality: Quality = Quality.GOOD) -> dict[str, DeviceState]:
    out = {}
    for d in site.devices:
        st = initial_device_state(d.id, NOW - timedelta(minutes=5))
        if quality is not Quality.OFFLINE:
            st = next_device_state(st, quality, "", NOW - timedelta(minutes=1))
        out[d.id] = st
    return out


def safe_commands() -> Commands:
    """What the safety filter hands on: finite values with a reason each."""
    return Commands(
        dim_pct=np.array([75.0, 30.0, 20.0]),
        dim_reason=np.array([Reason.TRAFFIC, Reason.FAILSAFE, Reason.RAMPED], dtype=np.int8),
        setpoint_c=np.array([21.0, 14.0]),
        setpoint_reason=np.array([Reason.OCCUPIED, Reason.SETBACK], dtype=np.int8),
    )


def at(ref: PointRef, value: float, quality: Quality = Quality.GOOD) -> dict[ReadingKey, Any]:
    return {(ref.device, ref.point): PointReading(ref.device, ref.point, value, quality, NOW)}


def floats_in(obj: Any) -> list[float]:
    if isinstance(obj, float):
        return [obj]
    if isinstance(obj, dict):
        return [f for v in obj.values() for f in floats_in(v)]
    if isinstance(obj, list | tuple):
        return [f for v in obj for f in floats_in(v)]
    return []


def assert_no_nan(snap: SiteSnapshot) -> None:
    found = floats_in(snap.model_dump())
    assert found and all(math.isfinite(f) for f in found)
    json.loads(snap.model_dump_json(), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))


# -------------------------------------------------------------------------- not started


def test_before_the_first_cycle_every_output_says_not_started(
    demo_site: SiteConfig, demo_layout: SiteLayout, state: PolicyState
) -> None:
    devs = devices(demo_site, Quality.OFFLINE)
    snap = build_snapshot(demo_site, demo_layout, None, 0, state, None, {}, devs)
    assert (snap.ts, snap.cycle, snap.sun_elevation_deg) == (None, 0, None)
    assert [s.id for s in snap.segments] == list(SEGMENTS)
    for s, failsafe in zip(snap.segments, demo_layout.segments.failsafe_dim_pct, strict=True):
        assert s.reason == "not started"
        assert s.dim_pct == failsafe  # what the site falls back to, not a made-up 0
        assert (s.flow_veh_h, s.lighting_class, s.actual_dim_pct) == (None, "", None)
        assert (s.measured_power_w, s.failed_lamps, s.online) == (None, None, False)
    zones = [z for b in snap.buildings for z in b.zones]
    assert [z.reason for z in zones] == ["not started"] * 2
    assert [z.setpoint_c for z in zones] == demo_layout.zones.default_c.tolist()
    assert all(z.temperature_c is None and z.actual_setpoint_c is None for z in zones)
    assert all(not z.occupied for z in zones)
    for d in snap.devices:
        assert d.quality is Quality.OFFLINE and d.last_good_at is None
        assert all(p.value is None and p.quality is Quality.OFFLINE for p in d.points)
        assert all(p.ts is None for p in d.points)
    assert_no_nan(snap)


# --------------------------------------------------------------------------- NaN leaves not


def test_nan_in_state_and_readings_becomes_none(
    demo_site: SiteConfig, demo_layout: SiteLayout, state: PolicyState
) -> None:
    seg0, zone0 = demo_site.segments[0], demo_site.buildings[0].zones[0]
    assert seg0.power is not None and seg0.failed_lamps is not None
    latest = (
        at(seg0.controller, math.nan, Quality.FAULTY)
        | at(seg0.power, math.nan, Quality.GOOD)  # a GOOD NaN cannot happen; still no NaN out
        | at(seg0.failed_lamps, math.inf, Quality.GOOD)
        | at(zone0.temperature, math.nan, Quality.OFFLINE)
    )
    nan_state = replace(state, sun_elevation_deg=math.nan)  # NaN flows: the initial state's
    assert np.isnan(nan_state.segment_flow_veh_h).all()
    snap = build_snapshot(
        demo_site, demo_layout, NOW, 3, nan_state, safe_commands(), latest, devices(demo_site)
    )
    s0 = snap.segments[0]
    assert (s0.flow_veh_h, s0.actual_dim_pct, s0.measured_power_w, s0.failed_lamps) == (
        None, None, None, None,
    )  # fmt: skip
    assert snap.sun_elevation_deg is None
    assert snap.buildings[0].zones[0].temperature_c is None
    dev = next(d for d in snap.devices if d.id == seg0.controller.device)
    dim = next(p for p in dev.points if p.point == seg0.controller.point)
    assert (dim.value, dim.quality, dim.ts) == (None, Quality.FAULTY, NOW)
    assert_no_nan(snap)


def test_nan_in_commands_never_leaves(
    demo_site: SiteConfig, demo_layout: SiteLayout, state: PolicyState
) -> None:
    cmds = Commands(
        dim_pct=np.array([math.nan, 30.0, 20.0]),
        dim_reason=np.zeros(3, dtype=np.int8),
        setpoint_c=np.array([math.nan, 14.0]),
        setpoint_reason=np.zeros(2, dtype=np.int8),
    )
    snap = build_snapshot(demo_site, demo_layout, NOW, 1, state, cmds, {}, devices(demo_site))
    assert_no_nan(snap)


# ------------------------------------------------------------------- commanded and actual


def test_commanded_and_actually_held_levels_and_setpoints(
    demo_site: SiteConfig, demo_layout: SiteLayout, state: PolicyState
) -> None:
    s0, s1, s2 = demo_site.segments
    z0, z1 = demo_site.buildings[0].zones
    latest = (
        at(s0.controller, 74.9)  # holds (nearly) its command
        | at(s1.controller, 0.0)  # reset to 0 %: a drift, shown as it is
        | at(s2.controller, 20.0, Quality.STALE)  # not fresh: not what it holds now
        | at(z0.setpoint, 21.0)
        | at(z1.setpoint, 16.5, Quality.FAULTY)
    )
    snap = build_snapshot(
        demo_site, demo_layout, NOW, 7, state, safe_commands(), latest, devices(demo_site)
    )
    assert [s.dim_pct for s in snap.segments] == [75.0, 30.0, 20.0]
    assert [s.reason for s in snap.segments] == ["traffic", "failsafe", "ramped"]
    assert [s.actual_dim_pct for s in snap.segments] == [74.9, 0.0, None]
    zones = snap.buildings[0].zones
    assert [(z.setpoint_c, z.reason) for z in zones] == [(21.0, "occupied"), (14.0, "setback")]
    assert [z.actual_setpoint_c for z in zones] == [21.0, None]
    assert snap.cycle == 7 and snap.ts == NOW


@pytest.mark.parametrize(
    ("value", "quality", "shown"),
    [
        (0.0, Quality.GOOD, 0),
        (3.0, Quality.GOOD, 3),
        (2.6, Quality.GOOD, 3),  # a scaled count rounds to whole lamps
        (7.0, Quality.STALE, None),
        (math.nan, Quality.FAULTY, None),
    ],
)
def test_failed_lamps_are_a_whole_number_or_none(
    demo_site: SiteConfig,
    demo_layout: SiteLayout,
    state: PolicyState,
    value: float,
    quality: Quality,
    shown: int | None,
) -> None:
    ref = demo_site.segments[1].failed_lamps
    assert ref is not None
    latest = at(ref, value, quality)
    snap = build_snapshot(
        demo_site, demo_layout, NOW, 1, state, safe_commands(), latest, devices(demo_site)
    )
    got = snap.segments[1].failed_lamps
    assert got == shown and (got is None or type(got) is int)
    assert snap.segments[0].failed_lamps is None  # no reading of its own


def test_flow_and_lighting_class_come_from_the_policy_state(
    demo_site: SiteConfig, demo_layout: SiteLayout, state: PolicyState
) -> None:
    st = replace(
        state,
        segment_flow_veh_h=np.array([500.0, math.nan, 10.0]),
        segment_band=np.array([2, 1, 0], dtype=np.intp),
        sun_elevation_deg=-12.5,
        zone_occupied=np.array([True, False]),
    )
    snap = build_snapshot(
        demo_site, demo_layout, NOW, 1, st, safe_commands(), {}, devices(demo_site)
    )
    assert [s.flow_veh_h for s in snap.segments] == [500.0, None, 10.0]
    assert [s.lighting_class for s in snap.segments] == ["M3", "", "P5"]  # unknown: no class
    assert snap.sun_elevation_deg == -12.5
    assert [z.occupied for z in snap.buildings[0].zones] == [True, False]


def test_required_and_delivered_class_judge_the_command_by_the_measured_flow(
    demo_site: SiteConfig, demo_layout: SiteLayout, state: PolicyState
) -> None:
    # 500 veh/h on bahnhofstr needs M3 (planned at 75 %, which with design class M1 delivers
    # M2); 30 % on elberfelder with unknown flow; 20 % on lindenweg at 70 veh/h, which needs P4
    # (33.4 % of its P1 design): under-lit, whatever the policy's band says
    st = replace(state, segment_flow_veh_h=np.array([500.0, math.nan, 70.0]))
    snap = build_snapshot(
        demo_site, demo_layout, NOW, 1, st, safe_commands(), {}, devices(demo_site)
    )
    got = [(s.required_class, s.delivered_class, s.below_required_class) for s in snap.segments]
    assert got == [("M3", "M2", False), ("", "M5", False), ("P4", "P5", True)]
    c = safe_commands()
    day = Commands(
        dim_pct=c.dim_pct,
        dim_reason=np.full(3, Reason.DAYLIGHT, dtype=np.int8),
        setpoint_c=c.setpoint_c,
        setpoint_reason=c.setpoint_reason,
    )
    snap = build_snapshot(demo_site, demo_layout, NOW, 1, st, day, {}, devices(demo_site))
    assert [s.required_class for s in snap.segments] == ["", "", ""]  # by day nothing is needed
    assert not any(s.below_required_class for s in snap.segments)


def test_a_segment_is_online_unless_its_controller_is_offline(
    demo_site: SiteConfig, demo_layout: SiteLayout, state: PolicyState
) -> None:
    devs = devices(demo_site)
    s0, s1, _ = demo_site.segments
    devs[s0.controller.device] = next_device_state(devs[s0.controller.device], Quality.OFFLINE,
                                                   "refused", NOW)  # fmt: skip
    devs[s1.controller.device] = next_device_state(devs[s1.controller.device], Quality.FAULTY,
                                                   "bad value", NOW)  # fmt: skip
    snap = build_snapshot(demo_site, demo_layout, NOW, 1, state, safe_commands(), {}, devs)
    assert [s.online for s in snap.segments] == [False, True, True]


# --------------------------------------------------------------------- devices, time zone


def test_devices_with_endpoint_quality_and_times(
    demo_site: SiteConfig, demo_layout: SiteLayout, state: PolicyState
) -> None:
    devs = devices(demo_site)
    snap = build_snapshot(demo_site, demo_layout, NOW, 1, state, safe_commands(), {}, devs)
    by_id = {d.id: d for d in snap.devices}
    assert list(by_id) == [d.id for d in demo_site.devices]
    assert by_id["counter-east"].endpoint == "127.0.0.1:15020/2"
    assert by_id["school"].endpoint == "opc.tcp://127.0.0.1:14840/laterne/"
    assert by_id["school"].protocol == "opcua" and by_id["counter-east"].protocol == "modbus"
    for d in snap.devices:
        assert d.quality is Quality.GOOD
        assert d.since == d.last_good_at == NOW - timedelta(minutes=1)
    assert [p.point for p in by_id["counter-east"].points] == ["lane1_veh", "lane2_veh", "status"]
    assert [p.unit for p in by_id["counter-east"].points] == ["veh", "veh", ""]


def test_times_stay_utc_beside_the_site_time_zone(
    demo_site: SiteConfig, demo_layout: SiteLayout, state: PolicyState
) -> None:
    ref = demo_site.buildings[0].zones[0].temperature
    latest = at(ref, 20.5)
    snap = build_snapshot(
        demo_site, demo_layout, NOW, 1, state, safe_commands(), latest, devices(demo_site)
    )
    assert snap.timezone == "Europe/Berlin" == demo_site.site.timezone
    assert snap.site == demo_site.site.name
    assert snap.ts is not None and snap.ts.utcoffset() == timedelta(0)
    data = json.loads(snap.model_dump_json())
    assert data["ts"] == "2026-01-05T22:00:00Z"  # 23:00 in Berlin, labelled by the page
    school = next(d for d in data["devices"] if d["id"] == "school")
    temp = next(p for p in school["points"] if p["point"] == ref.point)
    assert (temp["value"], temp["ts"]) == (20.5, "2026-01-05T22:00:00Z")
