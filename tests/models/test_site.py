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
    assert demo_layout.segments.min_dim_pct.tolist() == [20, 20, 10]
    assert demo_layout.segments.max_dim_pct.tolist() == [100, 100, 100]
    assert demo_layout.segments.failsafe_dim_pct.tolist() == [100, 100, 80]
    # classrooms: zone says [12, 24], profile point says [10, 26] -> [12, 24]
    assert demo_layout.zones.min_c.tolist() == [12, 12]
    assert demo_layout.zones.max_c.tolist() == [24, 22]
    assert demo_layout.channels.wrap.tolist() == [2.0**32] * 4


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
        # a controller or setpoint point has one master
        (
            "controller: seg-lindenweg.dim_pct",
            "controller: seg-elberfelder.dim_pct",
            "segments.2.controller",
            "point seg-elberfelder.dim_pct is already controlled by segment 'elberfelder'",
            "controller: seg-elberfelder.dim_pct\n    power: seg-lindenweg",
        ),
        (
            "setpoint: school.gym_setpoint_c",
            "setpoint: school.classrooms_setpoint_c",
            "buildings.0.zones.1.setpoint",
            "point school.classrooms_setpoint_c is already controlled by zone 'school.classrooms'",
            "setpoint: school.classrooms_setpoint_c\n        occupied_setpoint_c: 18",
        ),
        # the same channel twice would double the flow
        (
            "counters: [counter-east.lane2_veh]",
            "counters: [counter-east.lane2_veh,\n               counter-east.lane2_veh]",
            "segments.2.counters.1",
            "counter counter-east.lane2_veh is listed twice",
            "counter-east.lane2_veh]",
        ),
        # EN 13201-2 classes: known, one family, and each band's level delivering its class
        (
            "lighting_class: P4, dim_pct: 40}",
            "lighting_class: P7, dim_pct: 40}",
            "segments.2.bands.1.lighting_class",
            "unknown lighting class 'P7': EN 13201-2 has M1, M2",
            "lighting_class: P7",
        ),
        (
            "lighting_class: P4, dim_pct: 40}",
            "lighting_class: M4, dim_pct: 40}",
            "segments.2.bands",
            "a segment's classes must be of one family (M, C or P); these bands mix P (band 0), "
            "M (band 1)",
            "bands:   # EN 13201 P classes",
        ),
        (
            "design_class: P1",
            "design_class: C2",
            "segments.2.design_class",
            "design_class C2 is not of the bands' family P",
            "design_class: C2",
        ),
        (
            "lighting_class: P4, dim_pct: 40}",
            "lighting_class: P4, dim_pct: 30}",
            "segments.2.bands.1.dim_pct",
            "dim_pct 30 delivers P5 with design class P1, less than the band's P4, which needs "
            "at least 33.4 %",
            "lighting_class: P4, dim_pct: 30}",
        ),
        (
            "    design_class: P1\n    bands:   # EN 13201 P classes for a residential street\n"
            "      - {min_flow_veh_h: 0,  lighting_class: P5, dim_pct: 20}",
            "    bands:\n      - {min_flow_veh_h: 0,  lighting_class: P5}",
            "segments.2.bands.0.dim_pct",
            "dim_pct is required unless the segment gives its design_class",
            "lighting_class: P5}",
        ),
        (
            "lighting_class: P5, dim_pct: 20}",
            "lighting_class: unlit}",
            "segments.2.bands.0.lighting_class",
            "`unlit` switches the segment off, which min_dim_pct 10 forbids",
            "lighting_class: unlit}",
        ),
        (
            "lighting_class: P5, dim_pct: 20}",
            "lighting_class: P5, dim_pct: 5}",
            "segments.2.bands.0.dim_pct",
            "dim_pct 5 is below min_dim_pct 10 and would be clamped to 10",
            "lighting_class: P5, dim_pct: 5}",
        ),
        (
            "lighting_class: P5, dim_pct: 20}",
            "lighting_class: P5, dim_pct: 0}",
            "segments.2.bands.0.dim_pct",
            "dim_pct 0 switches the segment off, which min_dim_pct 10 forbids",
            "lighting_class: P5, dim_pct: 0}",
        ),
        (
            "    failsafe_dim_pct: 80\n",
            "    failsafe_dim_pct: 40\n    max_dim_pct: 40\n",
            "segments.2.bands.2.dim_pct",
            "dim_pct 70 is above max_dim_pct 40 and would be clamped to 40",
            "lighting_class: P3, dim_pct: 70}",
        ),
        # duplicate keys: PyYAML would keep the last one silently
        (
            "    luminaires: 24\n",
            "    luminaires: 24\n    luminaires: 48\n",
            "segments.2.luminaires",
            "duplicate key 'luminaires'",
            "luminaires: 48",
        ),
        (
            "  # A building management system reached over OPC-UA.\n",
            "  segment-controller:\n    protocol: modbus\n"
            "    points: {dim_pct: {table: holding, address: 0}}\n",
            "profiles.segment-controller",
            "duplicate key 'segment-controller'",
            "segment-controller:\n    protocol: modbus\n    points: {dim_pct: {table: holding,",
        ),
        # YAML 1.1 reads an unquoted 21:00 as the number 1260
        (
            'end: "21:00"',
            "end: 21:00",
            "buildings.0.zones.1.occupancy.0.end",
            "got the number 1260 (YAML reads an unquoted 21:00 as 1260); write times in quotes, "
            'e.g. "21:00"',
            "end: 21:00",
        ),
        # the time zone is never guessed
        (
            "  timezone: Europe/Berlin\n",
            "",
            "site.timezone",
            "Field required",
            "site:",
        ),
        (
            "    rated_power_w: 60\n",
            "    rated_power_w: 60\n    standby_share: 1.2\n",
            "segments.1.standby_share",
            "less than 1",
            "standby_share: 1.2",
        ),
        (
            "    rated_power_w: 35\n",
            "    rated_power_w: 35\n    constant_light_output: true\n    clo_start_share: 0\n",
            "segments.2.clo_start_share",
            "greater than 0",
            "clo_start_share: 0",
        ),
        # only the errors of the endpoint kind that was meant, without union tags in the field
        (
            "port: 15020, unit_id: 1}",
            "port: 150200, unit_id: 1}",
            "devices.0.endpoint.port",
            "less than or equal to 65535",
            "port: 150200",
        ),
        (
            'endpoint: {url: "opc.tcp://127.0.0.1:14840/laterne/"}',
            'endpoint: {url: "opc.tcp://127.0.0.1:14840/laterne/", security: sign}',
            "devices.5.endpoint",
            "security sign needs certificate and private_key",
            "security: sign}",
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
    for issue in err.issues:
        assert not issue.message.startswith("Value error"), issue
        assert not {"modbus", "opcua"} & set(issue.path), issue  # no union tags in the field
        assert "function-after" not in issue.field and "Endpoint" not in issue.field, issue


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


def test_endpoint_error_is_reported_once(tmp_path: Path) -> None:
    broken = TEXT.replace("port: 15020, unit_id: 1}", "port: 150200, unit_id: 1}", 1)
    path = tmp_path / "broken.yaml"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(SiteConfigError) as info:
        load_site(path)
    [issue] = info.value.issues
    assert issue.field == "devices.0.endpoint.port"
    assert issue.line == line_of(broken, "port: 150200")
    assert issue.message == "Input should be less than or equal to 65535"
    assert str(info.value).endswith(
        f"{path}:{issue.line}: devices.0.endpoint.port: Input should be less than or equal to 65535"
    )


def test_value_error_prefix_is_stripped() -> None:
    broken = TEXT.replace("failsafe: 19}", "failsafe: 40}", 1)
    with pytest.raises(SiteConfigError) as info:
        parse_site(broken, "x.yaml")
    [issue] = info.value.issues
    assert issue.message == "failsafe 40.0 is outside [10.0, 26.0]"
    assert "Value error" not in str(info.value)


def test_an_endpoint_that_is_not_a_mapping_says_what_it_needs() -> None:
    broken = TEXT.replace(
        "endpoint: {host: 127.0.0.1, port: 15021, unit_id: 3}", "endpoint: 15021", 1
    )
    with pytest.raises(SiteConfigError) as info:
        parse_site(broken, "x.yaml")
    [issue] = info.value.issues
    assert issue.field == "devices.4.endpoint"
    assert "host/port/unit_id (Modbus) or url (OPC-UA)" in issue.message
    assert issue.line == line_of(broken, "endpoint: 15021")


def test_band_of_zero_is_allowed_with_min_dim_zero() -> None:
    text = TEXT.replace("lighting_class: P5, dim_pct: 20}", "lighting_class: unlit}", 1)
    text = text.replace("    min_dim_pct: 10\n", "    min_dim_pct: 0\n", 1)
    site = parse_site(text, "x.yaml")
    assert site.segments[2].band_levels_pct() == [0.0, 40.0, 70.0]


def test_bands_without_levels_get_the_lowest_that_delivers_their_class() -> None:
    text = TEXT
    for cls, pct in (("P5", 20), ("P4", 40), ("P3", 70)):
        text = text.replace(f"lighting_class: {cls}, dim_pct: {pct}}}", f"lighting_class: {cls}}}")
    text = text.replace("design_class: P1", "design_class: P2")
    site = parse_site(text, "x.yaml")
    # P2 delivers 10 lx at 100 %: P5 3 lx -> 30 %, P4 5 lx -> 50 %, P3 7.5 lx -> 75 %
    assert site.segments[2].band_levels_pct() == [30.0, 50.0, 75.0]
    assert SiteLayout.from_config(site).segments.band_dim_pct[2, :3].tolist() == [30, 50, 75]
    # the level rises to min_dim_pct when the class needs less
    text = text.replace("    min_dim_pct: 10\n", "    min_dim_pct: 35\n", 1)
    assert parse_site(text, "x.yaml").segments[2].band_levels_pct() == [35.0, 50.0, 75.0]


def test_same_counter_in_two_segments_is_fine() -> None:
    text = TEXT.replace("counters: [counter-east.lane2_veh]", "counters: [counter-east.lane1_veh]")
    site = parse_site(text, "x.yaml")
    assert str(site.segments[1].counters[0]) == str(site.segments[2].counters[0])


def test_duplicate_key_in_a_flow_mapping() -> None:
    broken = TEXT.replace("unit_id: 3}", "unit_id: 3, unit_id: 4}", 1)
    with pytest.raises(SiteConfigError) as info:
        parse_site(broken, "x.yaml")
    [issue] = info.value.issues
    assert issue.field == "devices.4.endpoint.unit_id"
    assert issue.message == "duplicate key 'unit_id'"
    assert issue.line == line_of(broken, "unit_id: 3, unit_id: 4}")
