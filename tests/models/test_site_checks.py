"""Checks that used to pass validation and fail only at run time: hosts and URLs, OPC-UA node
ids and browse paths, Modbus ``write_function``; each is refused on load with file, line, field."""

from __future__ import annotations

from pathlib import Path

import pytest

from laterne.models.hosts import check_host, check_url
from laterne.models.site import (
    DeviceProfile,
    InfluxConfig,
    ModbusEndpoint,
    OpcUaEndpoint,
    SiteConfig,
    SiteConfigError,
    load_site,
    parse_site,
)

from ..conftest import DEMO

TEXT = DEMO.read_text(encoding="utf-8")
MODBUS_EP = "endpoint: {host: 127.0.0.1, port: 15021, unit_id: 3}"  # devices.4
OPCUA_URL = '"opc.tcp://127.0.0.1:14840/laterne/"'  # devices.5
GYM_NODE = 'node: "ns=2;s=school.gym.temperature"'
GYM_FIELD = "profiles.school-bms.points.gym_temp_c"


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def refused(tmp_path: Path, old: str, new: str) -> tuple[str, SiteConfigError]:
    """Load the demo with ``old`` replaced by ``new``; the text and the error it raises."""
    assert old in TEXT, old
    broken = TEXT.replace(old, new, 1)
    path = tmp_path / "site.yaml"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(SiteConfigError) as info:
        load_site(path)
    return broken, info.value


def the_issue(err: SiteConfigError, field: str) -> tuple[int | None, str]:
    hits = [i for i in err.issues if i.field == field]
    assert len(hits) == 1, str(err)
    assert len(err.issues) == 1, str(err)  # one mistake, one message
    return hits[0].line, hits[0].message


# ----------------------------------------------------------------------------- hosts


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "192.168.10.254",
        "::1",
        "fe80::1%eth0",
        "2001:db8::17",
        "localhost",
        "gw-12.stadtwerke-hagen.de",
        "gw-12.stadtwerke-hagen.de.",
        "3com-gateway",
        "a" * 63 + ".example",
    ],
)
def test_addresses_and_host_names_are_accepted(host: str) -> None:
    assert check_host(host) == host
    assert ModbusEndpoint(host=host).host == host


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("127.0.0.300", "'127.0.0.300' is not a valid IPv4 address"),
        ("10.1", "'10.1' is not a valid IPv4 address"),
        ("010.0.0.1", "'010.0.0.1' is not a valid IPv4 address"),
        ("1.2.3.4.5", "'1.2.3.4.5' is not a valid IPv4 address"),
        (
            "127.0.0.1:15021",
            "host '127.0.0.1:15021' has a port in it; give the host alone (127.0.0.1) and the "
            "port as port: 15021",
        ),
        ("gw.local:502", "give the host alone (gw.local) and the port as port: 502"),
        ("[::1]:502", "host '[::1]:502' has a port in it; give the address alone (::1)"),
        ("[::1]", "write an IPv6 address without brackets: ::1"),
        ("::g", "'::g' is not a valid IPv6 address"),
        ("", "empty host"),
        (" gw", "has spaces around it"),
        ("gw_1.local", "label 'gw_1' may hold only letters, digits and hyphens"),
        ("-gw.local", "label '-gw'"),
        ("gw..local", "has an empty label"),
        ("a" * 64 + ".example", "is longer than 63"),
        ("straßenlicht.de", "is not ASCII; write its ASCII form (xn--…"),
        ("http://gw.local", "host 'http://gw.local' is a URL or path; give the host name"),
    ],
)
def test_bad_hosts_are_refused_with_a_reason(host: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check_host(host)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("127.0.0.300", "'127.0.0.300' is not a valid IPv4 address"),
        (
            "127.0.0.1:15021",
            "has a port in it; give the host alone (127.0.0.1) and the port as port: 15021",
        ),
    ],
)
def test_bad_modbus_host_names_file_line_and_field(
    tmp_path: Path, host: str, message: str
) -> None:
    new = MODBUS_EP.replace("127.0.0.1", host)
    broken, err = refused(tmp_path, MODBUS_EP, new)
    line, got = the_issue(err, "devices.4.endpoint.host")
    assert line == line_of(broken, new)
    assert message in got
    assert "Value error" not in str(err)


@pytest.mark.parametrize(
    "url",
    [
        "opc.tcp://127.0.0.1:4840/",
        "opc.tcp://127.0.0.1:4840",
        "opc.tcp://bms.schule.hagen.de:4840/UA/Server",
        "opc.tcp://[::1]:4840/laterne/",
    ],
)
def test_opcua_urls_accepted(url: str) -> None:
    assert OpcUaEndpoint(url=url).url == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:4840/", "must begin with opc.tcp://"),
        ("opc.tcp://127.0.0.300:4840/", "'127.0.0.300' is not a valid IPv4 address"),
        ("opc.tcp://127.0.0.1:99999/", "port '99999' is not a number in 1..65535"),
        ("opc.tcp://127.0.0.1:0/", "port '0' is not a number in 1..65535"),
        ("opc.tcp://127.0.0.1:48a0/", "port '48a0' is not a number in 1..65535"),
        ("opc.tcp://127.0.0.1/laterne/", "needs a port"),
        ("opc.tcp://127.0.0.1:/laterne/", "needs a port"),
        ("opc.tcp://:4840/", "has no host"),
        ("opc.tcp://[::1:4840/", "Invalid IPv6 URL"),
        ("opc.tcp://::1:4840/", "write an IPv6 host in brackets"),
        ("opc.tcp://[127.0.0.1]:4840/", "brackets"),
        ("opc.tcp://user:secret@127.0.0.1:4840/", "has credentials in it"),
        ("opc.tcp://bms_1:4840/", "label 'bms_1'"),
    ],
)
def test_bad_opcua_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check_url(url, schemes=("opc.tcp",), require_port=True)
    assert message in str(info.value)


def test_bad_opcua_url_names_file_line_and_field(tmp_path: Path) -> None:
    new = '"opc.tcp://127.0.0.1:148400/laterne/"'
    broken, err = refused(tmp_path, OPCUA_URL, new)
    line, message = the_issue(err, "devices.5.endpoint.url")
    assert line == line_of(broken, new)
    assert message == (
        "url 'opc.tcp://127.0.0.1:148400/laterne/': port '148400' is not a number in 1..65535"
    )


@pytest.mark.parametrize("url", ["http://127.0.0.1:8428", "https://influx.example.org/"])
def test_influx_urls_accepted(url: str) -> None:
    assert InfluxConfig(url=url).url == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1:8428", "must begin with http:// or https://"),
        ("http://127.0.0.300:8428", "is not a valid IPv4 address"),
        ("http://127.0.0.1:84280", "port '84280' is not a number in 1..65535"),
        ("http://me:token@influx.example.org", "has credentials in it"),
    ],
)
def test_bad_influx_urls_refused_in_the_site(url: str, message: str) -> None:
    old = "  aggregate_minutes: 15\n"
    text = TEXT.replace(old, f"{old}  influxdb:\n    url: {url}\n", 1)
    with pytest.raises(SiteConfigError) as info:
        parse_site(text, "x.yaml")
    [issue] = info.value.issues
    assert issue.field == "history.influxdb.url"
    assert issue.line == line_of(text, f"url: {url}")
    assert message in issue.message


# ------------------------------------------------------------------- OPC-UA addresses


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("ns=x;s=school.gym.temperature", "namespace index 'x' is not a non-negative integer"),
        ("i=abc", "numeric identifier 'abc' is not a non-negative integer"),
        ("ns=2;q=gym", "identifier kind 'q' is not one of i (numeric), s (string)"),
        ("ns=2,s=gym", "the namespace must end with ';'"),
        ("school.gym.temperature", "is not '[ns=<index>;]<i|s|g|b>=<identifier>'"),
        ("ns=70000;i=1", "namespace index 70000 is above 65535"),
        ("ns=2;g=not-a-guid", "is not a GUID"),
    ],
)
def test_malformed_node_id_names_file_line_and_field(
    tmp_path: Path, node: str, message: str
) -> None:
    new = f'node: "{node}"'
    broken, err = refused(tmp_path, GYM_NODE, new)
    line, got = the_issue(err, f"{GYM_FIELD}.node")
    assert line == line_of(broken, new)
    assert got.startswith(f"NodeId {node!r}")
    assert message in got


@pytest.mark.parametrize(
    "node",
    [
        "nsu=urn:laterne:test;s=school.gym.temperature",
        "nsu=http://opcfoundation.org/UA/;i=2258",
        "i=2258",
        "ns=3;g=09087e75-8e5e-499b-954f-f2a9603db28a",
        "ns=1;b=M/RbKBsRVkePCePcx24oRA==",
    ],
)
def test_valid_node_ids_load(node: str) -> None:
    site = parse_site(TEXT.replace(GYM_NODE, f'node: "{node}"', 1), "x.yaml")
    assert site.profiles["school-bms"].points["gym_temp_c"].node == node


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("School/2:Gym/2:Temperature", "step 'School' is not '<namespace index>:<browse name>'"),
        ("2:School//2:Temperature", "step '' is not '<namespace index>:<browse name>'"),
        ("x:School", "namespace index 'x' is not a non-negative integer"),
        ("2:", "has an empty browse name"),
    ],
)
def test_malformed_browse_path_names_file_line_and_field(
    tmp_path: Path, path: str, message: str
) -> None:
    new = f'browse_path: "{path}"'
    broken, err = refused(tmp_path, GYM_NODE, new)
    line, got = the_issue(err, f"{GYM_FIELD}.browse_path")
    assert line == line_of(broken, new)
    assert got.startswith(f"browse path {path!r}")
    assert message in got


def test_browse_path_alone_loads() -> None:
    text = TEXT.replace(GYM_NODE, 'browse_path: "2:School/2:Gym/2:Temperature"', 1)
    point = parse_site(text, "x.yaml").profiles["school-bms"].points["gym_temp_c"]
    assert (point.node, point.browse_path) == (None, "2:School/2:Gym/2:Temperature")


def test_node_and_browse_path_together_say_so(tmp_path: Path) -> None:
    new = f'{GYM_NODE}, browse_path: "2:School/2:Gym/2:Temperature"'
    broken, err = refused(tmp_path, GYM_NODE, new)
    line, message = the_issue(err, GYM_FIELD)
    assert message == "give either node or browse_path, not both"
    assert line == line_of(broken, "gym_temp_c:")


def test_neither_node_nor_browse_path_says_so(tmp_path: Path) -> None:
    broken, err = refused(tmp_path, GYM_NODE + ", ", "")
    line, message = the_issue(err, GYM_FIELD)
    assert message == "an opcua point needs node or browse_path (neither is given)"
    assert line == line_of(broken, "gym_temp_c:")


# ------------------------------------------------------------------- write_function


def modbus_profile(write_function: str, points: dict[str, object]) -> DeviceProfile:
    return DeviceProfile.model_validate(
        {"protocol": "modbus", "write_function": write_function, "points": points}
    )


def test_single_register_writes_load() -> None:
    text = TEXT.replace(
        "  segment-controller:\n    protocol: modbus\n",
        "  segment-controller:\n    protocol: modbus\n    write_function: single\n",
        1,
    )
    site = parse_site(text, "x.yaml")
    assert site.profiles["segment-controller"].write_function == "single"
    assert site.profiles["traffic-counter-2lane"].write_function == "multiple"


def test_single_refuses_a_writable_point_of_two_registers(tmp_path: Path) -> None:
    old = "  segment-controller:\n    protocol: modbus\n"
    broken, err = refused(
        tmp_path,
        old,
        old + "    write_function: single\n    points:\n"
        "      dim_pct: {table: holding, address: 0, type: u32, scale: 0.1, kind: setpoint,\n"
        "                writable: true, min: 0, max: 100, failsafe: 100}\n"
        "      power_w: {table: input, address: 0, type: u32}\n"
        "      energy_wh: {table: input, address: 2, type: u32, kind: counter}\n"
        "      failed_lamps: {table: input, address: 4, type: u16}\n"
        "  unused:\n    protocol: modbus\n",
    )
    line, message = the_issue(err, "profiles.segment-controller")
    assert message == (
        "point 'dim_pct' (u32) spans 2 registers, but write_function single (function code 06) "
        "writes one register; use write_function: multiple, or a 16-bit type"
    )
    assert line == line_of(broken, "segment-controller:")


def test_single_allows_wide_read_only_points_and_coils() -> None:
    prof = modbus_profile(
        "single",
        {
            "energy_wh": {"table": "holding", "address": 0, "type": "u64", "kind": "counter"},
            "relay": {"table": "coil", "address": 0, "type": "bool", "writable": True,
                      "min": 0, "max": 1},
        },
    )  # fmt: skip
    assert prof.write_function == "single"


def test_write_function_is_refused_on_opcua_profiles() -> None:
    with pytest.raises(ValueError, match="write_function is for modbus profiles only"):
        DeviceProfile.model_validate(
            {"protocol": "opcua", "write_function": "single", "points": {"x": {"node": "i=1"}}}
        )


# ----------------------------------------------------------------------- lookups


def test_device_lookup_follows_copies(demo_site: SiteConfig) -> None:
    assert demo_site.device("school").id == "school"
    assert demo_site.device("seg-lindenweg").endpoint == ModbusEndpoint(
        host="127.0.0.1", port=15021, unit_id=3
    )
    moved = demo_site.devices[4].model_copy(
        update={"endpoint": ModbusEndpoint(host="127.0.0.1", port=16000, unit_id=3)}
    )
    copy = demo_site.model_copy(
        update={"devices": [moved, *demo_site.devices[:4], demo_site.devices[5]]}
    )
    assert copy.device("seg-lindenweg") is moved
    assert copy.device("school").id == "school"
    assert demo_site.device("seg-lindenweg").endpoint.port == 15021  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        copy.device("nope")


# ----------------------------------------------------------------------------- curfews

CURFEW = '      - {start: "01:00", end: "05:00", lighting_class: P6}'


@pytest.mark.parametrize(
    ("new", "field", "message"),
    [
        ('      - {start: "01:00", end: "05:00", lighting_class: M6}', "lighting_class",
         "M6 is not of the segment's family P"),
        ('      - {start: "01:00", end: "05:00", lighting_class: P9}', "lighting_class", "P9"),
        ('      - {start: "01:00", end: "05:00", max_dim_pct: 5}', "max_dim_pct",
         "outside the segment's [10, 100] %"),
        ('      - {start: "01:00", end: "05:00"}', "", "exactly one of max_dim_pct and"),
        ('      - {start: "01:00", end: "05:00", max_dim_pct: 50, lighting_class: P6}', "",
         "exactly one of max_dim_pct and"),
        ('      - {start: 1:00, end: "05:00", lighting_class: P6}', "start",
         "YAML reads an unquoted 1:00 as 60"),
        ('      - {start: "01:00", end: "01:00", lighting_class: P6}', "", "an empty window"),
        ('      - {start: "01:00", end: "24:00", lighting_class: P6}', "end", "00:00 to 23:59"),
    ],
)  # fmt: skip
def test_a_bad_curfew_names_file_line_and_field(
    tmp_path: Path, new: str, field: str, message: str
) -> None:
    text, err = refused(tmp_path, CURFEW, new)
    where = "segments.2.curfews.0" + (f".{field}" if field else "")
    hits = [i for i in err.issues if i.field == where]
    assert len(hits) == 1, str(err)
    assert message in hits[0].message
    assert hits[0].line == line_of(text, new.strip())


def test_a_curfew_by_class_needs_the_design_class(tmp_path: Path) -> None:
    old = "    design_class: P1\n"
    assert old in TEXT
    path = tmp_path / "site.yaml"
    path.write_text(TEXT.replace(old, "", 1), encoding="utf-8")
    with pytest.raises(SiteConfigError) as info:
        load_site(path)
    hits = [i for i in info.value.issues if i.field == "segments.2.curfews.0.lighting_class"]
    assert len(hits) == 1 and "needs the segment's design_class" in hits[0].message


def test_light_sensor_thresholds_must_leave_a_gap(tmp_path: Path) -> None:
    old = "    design_class: P1\n"
    _text, err = refused(tmp_path, old, old + "    lux_on_below: 50\n    lux_off_above: 40\n")
    hits = [i for i in err.issues if i.field.startswith("segments.2")]
    assert len(hits) == 1 and "lux_on_below must be below lux_off_above" in hits[0].message
