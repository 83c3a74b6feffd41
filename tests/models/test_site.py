"""Site configuration: the demo loads; a broken file is refused with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from laterne.models.layout import SiteLayout
from laterne.models.site import SiteConfig, SiteConfigError, load_site, parse_site

from ..conftest import DEMO

TEXT = DEMO.read_text(encoding="utf-8")


def line_of(text: str, needle: str) -> int:
    """1-based line of the first occurrence of ``needle``."""
    return text[: text.index(needle)].count("\n") + 1


def test_demo_site_loads(demo_site: SiteConfig) -> None:
    assert len(demo_site.segments) == 3
    assert {s.road_type for s in demo_site.segments} == {"main", "collector", "residential"}
    assert all(s.luminaires >= 10 for s in demo_site.segments)
    assert len([d for d in demo_site.devices if d.profile == "traffic-counter-2lane"]) == 2
    assert len(demo_site.buildings) == 1 and len(demo_site.buildings[0].zones) == 2
    assert demo_site.point(demo_site.buildings[0].zones[0].setpoint).writable


def test_layout_bounds_intersect_site_and_profile(demo_layout: SiteLayout) -> None:
    assert demo_layout.seg_min_dim_pct.tolist() == [20, 20, 10]
    assert demo_layout.seg_max_dim_pct.tolist() == [100, 100, 100]
    assert demo_layout.seg_failsafe_dim_pct.tolist() == [100, 100, 80]
    # classrooms: zone says [12, 24], profile point says [10, 26] -> [12, 24]
    assert demo_layout.zone_min_c.tolist() == [12, 12]
    assert demo_layout.zone_max_c.tolist() == [24, 22]
    assert demo_layout.channel_wrap.tolist() == [2.0**32] * 4


@pytest.mark.parametrize(
    ("old", "new", "field", "message", "anchor"),
    [
        (
            "rated_power_w: 60",
            "rated_power_w: -60",
            "segments.1.rated_power_w",
            "greater than 0",
            "rated_power_w: -60",
        ),
        (
            "luminaires: 24",
            "luminaires: many",
            "segments.2.luminaires",
            "valid integer",
            "luminaires: many",
        ),
        (
            "profile: school-bms,",
            "profile: school-bsm,",
            "devices.5.profile",
            "unknown profile 'school-bsm'",
            "profile: school-bsm,",
        ),
        (
            "controller: seg-lindenweg.dim_pct",
            "controller: seg-lindenweg.power_w",
            "segments.2.controller",
            "not writable",
            "controller: seg-lindenweg.power_w",
        ),
        (
            "counters: [counter-east.lane2_veh]",
            "counters: [counter-east.lane3_veh]",
            "segments.2.counters.0",
            "has no point 'lane3_veh'",
            "counters: [counter-east.lane3",
        ),
        (
            "type: u32, word_order: big, kind: counter, unit: veh}\n      lane2",
            "type: u32, word_order: middle, kind: counter, unit: veh}\n      lane2",
            "profiles.traffic-counter-2lane.points.lane1_veh.word_order",
            "'big' or 'little'",
            "word_order: middle",
        ),
        (
            "failsafe: 19}",
            "failsafe: 40}",
            "profiles.school-bms.points.classrooms_setpoint_c",
            "failsafe 40.0 is outside",
            "classrooms_setpoint_c: {",
        ),
        (
            'start: "06:30"',
            'start: "6h30"',
            "buildings.0.zones.0.occupancy.0.start",
            "expected HH:MM",
            'start: "6h30"',
        ),
        (
            "timezone: Europe/Berlin",
            "timezone: Europe/Hagen",
            "site.timezone",
            "unknown time zone",
            "timezone: Europe/Hagen",
        ),
        (
            "  daylight_elevation_deg: -2.0\n",
            "  daylight_elevation_deg: -2.0\n  colour: blue\n",
            "policy.colour",
            "Extra inputs are not permitted",
            "colour: blue",
        ),
        (
            "unit_id: 3}",
            "unit_id: 2}",
            "devices.4.endpoint",
            "same host, port and unit_id",
            "unit_id: 2}}\n  - {id: school",
        ),
    ],
)
def test_broken_site_is_refused_with_line_and_field(
    tmp_path: Path, old: str, new: str, field: str, message: str, anchor: str
) -> None:
    assert old in TEXT, old
    broken = TEXT.replace(old, new, 1)
    path = tmp_path / "broken.yaml"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(SiteConfigError) as info:
        load_site(path)
    err = info.value
    assert err.file == str(path)
    hits = [i for i in err.issues if i.field == field]
    assert hits, f"no issue for {field}: {err}"
    assert message in hits[0].message
    assert hits[0].line == line_of(broken, anchor)
    assert f"{path}:{hits[0].line}: {field}: " in str(err)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    broken = TEXT.replace("  - id: gym\n", "  - id: gym\n   bad indent: [\n", 1)
    with pytest.raises(SiteConfigError) as info:
        parse_site(broken, "x.yaml")
    assert "YAML syntax" in str(info.value)
    assert info.value.issues[0].line is not None


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(SiteConfigError, match="cannot read file"):
        load_site(tmp_path / "nope.yaml")


def test_every_problem_is_reported_not_just_the_first() -> None:
    broken = TEXT.replace("rated_power_w: 60", "rated_power_w: -60").replace(
        "luminaires: 24", "luminaires: 0"
    )
    with pytest.raises(SiteConfigError) as info:
        parse_site(broken, "x.yaml")
    fields = {i.field for i in info.value.issues}
    assert {"segments.1.rated_power_w", "segments.2.luminaires"} <= fields


def test_overlapping_registers_refused() -> None:
    broken = TEXT.replace(
        "lane2_veh: {table: input, address: 2,", "lane2_veh: {table: input, address: 1,"
    )
    with pytest.raises(SiteConfigError, match="overlap"):
        parse_site(broken, "x.yaml")


def test_subscription_slower_than_staleness_refused() -> None:
    broken = TEXT.replace(
        'endpoint: {url: "opc.tcp://127.0.0.1:14840/laterne/"}',
        'endpoint: {url: "opc.tcp://127.0.0.1:14840/laterne/", publishing_interval_ms: 20000}',
    )
    with pytest.raises(SiteConfigError, match="too slow") as info:
        parse_site(broken, "x.yaml")
    assert info.value.issues[0].field == "devices.5.endpoint.publishing_interval_ms"


def test_writable_point_needs_bounds() -> None:
    broken = TEXT.replace("writable: true, min: 0, max: 100, failsafe: 100}", "writable: true}")
    with pytest.raises(SiteConfigError, match="needs min and max"):
        parse_site(broken, "x.yaml")
