"""models/layout.py on a small site built for it: indices, bounds, bands, channel pairs, counter
wraps (in engineering units, so a scaled counter's wrap is not a reset) and the occupancy grid."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from laterne.controller.policy import Policy
from laterne.models.layout import WEEKDAYS, SiteLayout
from laterne.models.site import PointRef, SiteConfig, validate_site
from laterne.models.values import Observation

SITE: dict[str, Any] = {
    "site": {"name": "layout test", "timezone": "Europe/Berlin", "latitude": 51.36,
             "longitude": 7.47},
    "profiles": {
        "counter": {
            "protocol": "modbus",
            "points": {
                # an axle counter: two axles a vehicle
                "axles16": {"table": "input", "address": 0, "type": "u16", "kind": "counter",
                            "scale": 0.5},
                "veh32": {"table": "input", "address": 10, "type": "u32", "kind": "counter"},
                "veh64": {"table": "input", "address": 20, "type": "u64", "kind": "counter",
                          "scale": 0.5},
                "vehf": {"table": "input", "address": 30, "type": "f32", "kind": "counter"},
            },
        },
        "ctl": {
            "protocol": "modbus",
            "points": {"dim": {"table": "holding", "address": 0, "type": "u16", "scale": 0.1,
                               "writable": True, "min": 0, "max": 100, "failsafe": 100}},
        },
        "ctl-10-90": {
            "protocol": "modbus",
            "points": {"dim": {"table": "holding", "address": 0, "type": "u16",
                               "writable": True, "min": 10, "max": 90}},
        },
        "bms": {
            "protocol": "opcua",
            "points": {
                **{f"t{k}": {"node": f"ns=2;s=t{k}", "type": "f64"} for k in (1, 2, 3)},
                **{f"sp{k}": {"node": f"ns=2;s=sp{k}", "type": "f64", "writable": True,
                              "min": 10, "max": 26} for k in (1, 2, 3)},
                "outdoor": {"node": "ns=2;s=outdoor", "type": "f64"},
            },
        },
    },
    "devices": [
        {"id": "c1", "profile": "counter", "endpoint": {"host": "127.0.0.1", "unit_id": 1}},
        {"id": "k1", "profile": "ctl", "endpoint": {"host": "127.0.0.1", "unit_id": 2}},
        {"id": "k2", "profile": "ctl", "endpoint": {"host": "127.0.0.1", "unit_id": 3}},
        {"id": "k3", "profile": "ctl-10-90", "endpoint": {"host": "127.0.0.1", "unit_id": 4}},
        {"id": "bms", "profile": "bms", "endpoint": {"url": "opc.tcp://127.0.0.1:4840/"}},
    ],
    "segments": [
        {"id": "s-a", "road_type": "main", "luminaires": 10, "rated_power_w": 50,
         "controller": "k1.dim", "counters": ["c1.axles16", "c1.veh32"], "min_dim_pct": 20,
         "failsafe_dim_pct": 100,
         "bands": [{"min_flow_veh_h": 0, "lighting_class": "M5", "dim_pct": 30},
                   {"min_flow_veh_h": 100, "lighting_class": "M4", "dim_pct": 60}]},
        {"id": "s-b", "road_type": "collector", "luminaires": 20, "rated_power_w": 60,
         "controller": "k2.dim", "counters": ["c1.veh32", "c1.veh64", "c1.vehf"],
         "bands": [{"min_flow_veh_h": 0, "lighting_class": "M5", "dim_pct": 20},
                   {"min_flow_veh_h": 50, "lighting_class": "M4", "dim_pct": 40},
                   {"min_flow_veh_h": 200, "lighting_class": "M3", "dim_pct": 80}]},
        {"id": "s-c", "road_type": "residential", "luminaires": 5, "rated_power_w": 35,
         "controller": "k3.dim", "max_dim_pct": 95, "failsafe_dim_pct": 95,
         "bands": [{"min_flow_veh_h": 0, "lighting_class": "P5", "dim_pct": 50}]},
    ],
    "buildings": [
        {"id": "school", "outdoor_temperature": "bms.outdoor",
         "zones": [
             {"id": "z1", "area_m2": 100, "temperature": "bms.t1", "setpoint": "bms.sp1",
              "occupied_setpoint_c": 21, "setback_setpoint_c": 16, "default_setpoint_c": 19,
              "min_setpoint_c": 12, "max_setpoint_c": 30,
              "occupancy": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "07:00",
                             "end": "16:00"}]},
             {"id": "z2", "area_m2": 200, "temperature": "bms.t2", "setpoint": "bms.sp2",
              "occupied_setpoint_c": 20, "setback_setpoint_c": 15, "default_setpoint_c": 18,
              "min_setpoint_c": 5, "max_setpoint_c": 24,
              "occupancy": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "07:00",
                             "end": "16:00"}]},
         ]},
        {"id": "hall",
         "zones": [
             {"id": "z3", "area_m2": 300, "temperature": "bms.t3", "setpoint": "bms.sp3",
              "occupied_setpoint_c": 18, "setback_setpoint_c": 14, "default_setpoint_c": 17,
              "occupancy": [{"days": ["sat"], "start": "09:00", "end": "24:00"},
                            {"days": ["sun"], "start": "00:00", "end": "12:00"}]},
         ]},
    ],
}  # fmt: skip


def site(edit: dict[str, Any] | None = None) -> SiteConfig:
    data = copy.deepcopy(SITE)
    for dotted, value in (edit or {}).items():
        *parents, last = dotted.split(".")
        node: Any = data
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[last] = value
    return validate_site(data)


@pytest.fixture(scope="module")
def cfg() -> SiteConfig:
    return site()


@pytest.fixture(scope="module")
def layout(cfg: SiteConfig) -> SiteLayout:
    return SiteLayout.from_config(cfg)


# ------------------------------------------------------------------------------ indices


def test_segments_zones_and_buildings_keep_the_order_of_the_file(layout: SiteLayout) -> None:
    assert layout.segments.ids == ("s-a", "s-b", "s-c")
    assert layout.zones.ids == ("school.z1", "school.z2", "hall.z3")
    assert layout.buildings.ids == ("school", "hall")
    assert layout.zones.building.tolist() == [0, 0, 1]
    assert (layout.n_segments, layout.n_channels, layout.n_zones) == (3, 4, 3)
    assert layout.segments.controller == tuple(
        PointRef(device=d, point="dim") for d in ("k1", "k2", "k3")
    )
    assert layout.zones.setpoint == tuple(PointRef(device="bms", point=f"sp{k}") for k in (1, 2, 3))
    assert layout.buildings.outdoor == (PointRef(device="bms", point="outdoor"), None)
    assert layout.segments.luminaires.tolist() == [10, 20, 5]
    assert layout.segments.has_counter.tolist() == [True, True, False]


def test_a_channel_is_listed_once_in_first_seen_order(layout: SiteLayout) -> None:
    assert [f"{c.device}.{c.point}" for c in layout.channels.refs] == [
        "c1.axles16", "c1.veh32", "c1.veh64", "c1.vehf",
    ]  # fmt: skip


def test_a_channel_feeding_two_segments_is_one_channel_in_two_pairs(layout: SiteLayout) -> None:
    ch = layout.channels
    pairs = sorted(zip(ch.pair_segment.tolist(), ch.pair_channel.tolist(), strict=True))
    assert pairs == [(0, 0), (0, 1), (1, 1), (1, 2), (1, 3)]
    assert ch.pair_segment.dtype == np.intp and ch.pair_channel.dtype == np.intp
    # what the policy does with the pairs: channel 1 counts in both segments' sums
    per_channel = np.array([1.0, 10.0, 100.0, 1000.0])
    sums = np.bincount(ch.pair_segment, weights=per_channel[ch.pair_channel], minlength=3)
    assert sums.tolist() == [11.0, 1110.0, 0.0]


def test_a_site_without_counters_has_empty_pair_arrays() -> None:
    cfg = site({"segments.0.counters": [], "segments.1.counters": []})
    lay = SiteLayout.from_config(cfg)
    assert lay.n_channels == 0 and lay.channels.wrap.shape == (0,)
    assert lay.channels.pair_segment.shape == (0,) and lay.channels.pair_channel.shape == (0,)
    assert not lay.segments.has_counter.any()


# ------------------------------------------------------------------------------- bands


def test_bands_are_padded_with_inf_so_a_missing_band_is_never_reached(
    layout: SiteLayout,
) -> None:
    inf = np.inf
    assert layout.segments.band_min_flow_veh_h.shape == (3, 3)
    assert layout.segments.band_min_flow_veh_h.tolist() == [
        [0, 100, inf], [0, 50, 200], [0, inf, inf],
    ]  # fmt: skip
    assert layout.segments.band_dim_pct.tolist() == [[30, 60, 0], [20, 40, 80], [50, 0, 0]]
    assert layout.segments.band_class == (("M5", "M4"), ("M5", "M4", "M3"), ("P5",))
    # the highest reached band, as the policy computes it, never lands in the padding
    huge = np.array([1e9, 1e9, 1e9])
    reached = (layout.segments.band_min_flow_veh_h <= huge[:, None]).sum(axis=1) - 1
    assert reached.tolist() == [1, 2, 0]


# ------------------------------------------------------------------------------ bounds


def test_dim_bounds_are_the_intersection_of_site_and_profile(layout: SiteLayout) -> None:
    assert layout.segments.min_dim_pct.tolist() == [20, 0, 10]  # site 20; profile 0; profile 10
    assert layout.segments.max_dim_pct.tolist() == [100, 100, 90]  # profile max 90 below site 95
    assert layout.segments.failsafe_dim_pct.tolist() == [100, 100, 90]  # clipped into the bounds
    assert layout.segments.off_allowed.tolist() == [True, True, False]  # profile min 10: never off


def test_setpoint_bounds_are_the_intersection_of_site_and_profile(layout: SiteLayout) -> None:
    # z1: site 12..30, profile 10..26; z2: site 5..24; z3: the site's defaults 12..24
    assert layout.zones.min_c.tolist() == [12, 10, 12]
    assert layout.zones.max_c.tolist() == [26, 24, 24]
    assert layout.zones.default_c.tolist() == [19, 18, 17]
    assert layout.zones.occupied_c.tolist() == [21, 20, 18]
    assert layout.zones.setback_c.tolist() == [16, 15, 14]
    assert layout.zones.area_m2.tolist() == [100, 200, 300]


# --------------------------------------------------------------------------- counter wrap


def test_counter_wrap_is_in_engineering_units(layout: SiteLayout) -> None:
    # u16 × 0.5 wraps at 32,768 veh; u32 × 1 at 2**32; u64 × 0.5 at 2**63; floats never
    assert layout.channels.wrap.tolist() == [32768.0, 2.0**32, 2.0**63, 0.0]


@pytest.mark.parametrize(
    ("type_", "scale", "wrap"),
    [
        ("u16", 1.0, 2.0**16),
        ("u16", 10.0, 655_360.0),
        ("u16", 0.1, 6553.6),
        ("u16", -2.0, 131_072.0),  # the modulus is positive whatever the sign of scale
        ("u32", 2.0, 2.0**33),
        ("u64", 1.0, 2.0**64),
        ("f32", 10.0, 0.0),
        ("f64", 1.0, 0.0),
    ],
)
def test_counter_wrap_by_type_and_scale(type_: str, scale: float, wrap: float) -> None:
    cfg = site({"profiles.counter.points.axles16.type": type_,
                "profiles.counter.points.axles16.scale": scale})  # fmt: skip
    lay = SiteLayout.from_config(cfg)
    assert lay.channels.wrap[0] == pytest.approx(wrap, rel=1e-12)


def _counts(layout: SiteLayout, first_veh: float) -> np.ndarray:
    counts = np.full(layout.n_channels, 1000.0)
    counts[0] = first_veh
    return counts


def _obs(layout: SiteLayout, ts: datetime, counts: np.ndarray) -> Observation:
    return Observation(
        ts=ts,
        counter_veh=counts,
        counter_ok=np.ones(layout.n_channels, dtype=bool),
        zone_temp_c=np.full(layout.n_zones, 20.0),
        zone_ok=np.ones(layout.n_zones, dtype=bool),
        segment_ok=np.ones(layout.n_segments, dtype=bool),
        sun_elevation_deg=-30.0,
    )


def _flow_across_the_wrap(cfg: SiteConfig, layout: SiteLayout) -> float:
    """Channel 0's flow after raw 65534 → 2 in 60 s on the u16 axle counter (scale 0.5):
    32,767 → 1 veh, i.e. 4 axles, 2 vehicles, 120 veh/h."""
    policy = Policy(layout, cfg.policy)
    t0 = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)
    t1 = t0 + timedelta(seconds=60)
    s, _ = policy.step(policy.initial_state(), _obs(layout, t0, _counts(layout, 32_767.0)), t0)
    s, _ = policy.step(s, _obs(layout, t1, _counts(layout, 1.0)), t1)
    assert s.last_count_veh[0] == 1.0
    return float(s.flow_veh_h[0])


def test_the_policy_reads_a_scaled_wrap_as_traffic(cfg: SiteConfig, layout: SiteLayout) -> None:
    assert _flow_across_the_wrap(cfg, layout) == pytest.approx(120.0)


def test_a_wrap_in_raw_units_would_lose_that_interval(cfg: SiteConfig, layout: SiteLayout) -> None:
    """What the raw modulus (2**16 for any u16) made of it: (1 - 32,767) mod 65,536 = 32,770 veh
    in a minute, refused as implausible, so the channel has no flow yet."""
    raw_wrap = replace(
        layout, channels=replace(layout.channels, wrap=np.array([2.0**16, 2.0**32, 2.0**64, 0.0]))
    )
    assert np.isnan(_flow_across_the_wrap(cfg, raw_wrap))


# ---------------------------------------------------------------------------- occupancy


def minute(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def test_occupancy_grid_start_inclusive_end_exclusive(layout: SiteLayout) -> None:
    occ = layout.zones.occupancy
    assert occ.shape == (3, 7, 1440) and occ.dtype == np.bool_
    mon, sat, sun = WEEKDAYS.index("mon"), WEEKDAYS.index("sat"), WEEKDAYS.index("sun")
    z1 = occ[0]
    assert not z1[mon, minute("06:59")]
    assert z1[mon, minute("07:00")]
    assert z1[mon, minute("15:59")]
    assert not z1[mon, minute("16:00")]
    assert z1[:5].sum() == 5 * 9 * 60  # 9 h on each weekday
    assert not z1[[sat, sun]].any()


def test_zones_with_the_same_schedule_have_equal_but_separate_grids(layout: SiteLayout) -> None:
    occ = layout.zones.occupancy
    assert np.array_equal(occ[0], occ[1])
    assert not np.array_equal(occ[0], occ[2])


def test_occupancy_until_24_00_and_from_00_00(layout: SiteLayout) -> None:
    z3 = layout.zones.occupancy[2]
    sat, sun = WEEKDAYS.index("sat"), WEEKDAYS.index("sun")
    assert z3[sat, minute("09:00") :].all() and not z3[sat, : minute("09:00")].any()
    assert z3[sun, : minute("12:00")].all() and not z3[sun, minute("12:00") :].any()
    assert not z3[:5].any()


def test_a_zone_without_occupancy_is_never_occupied() -> None:
    lay = SiteLayout.from_config(site({"buildings.1.zones.0.occupancy": []}))
    assert not lay.zones.occupancy[2].any()
    assert lay.zones.occupancy[0].any()


def test_a_site_without_buildings_has_an_empty_grid() -> None:
    lay = SiteLayout.from_config(site({"buildings": []}))
    assert lay.zones.occupancy.shape == (0, 7, 1440)
    assert lay.zones.min_c.shape == (0,) and lay.zones.building.shape == (0,)
