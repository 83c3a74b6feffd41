"""Points, profiles and endpoints are tagged by protocol: one model per protocol, the tag taken
from the profile when a file does not name it, and a clear file:line: field: message where the
protocols disagree. Files written before the tags load unchanged."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from laterne.models.site import (
    Device,
    DeviceProfile,
    ModbusEndpoint,
    ModbusPoint,
    ModbusProfile,
    OpcUaEndpoint,
    OpcUaPoint,
    OpcUaProfile,
    PointSpec,
    SiteConfig,
    SiteConfigError,
    load_site,
    parse_site,
    validate_site,
)

from ..conftest import DEMO

TEXT = DEMO.read_text(encoding="utf-8")
SCHOOL_EP = 'endpoint: {url: "opc.tcp://127.0.0.1:14840/laterne/"}'  # devices.5
LINDENWEG_EP = "endpoint: {host: 127.0.0.1, port: 15021, unit_id: 3}"  # devices.4


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def one_issue(tmp_path: Path, old: str, new: str) -> tuple[str, str, int | None, str]:
    """Load the demo with ``old`` replaced by ``new``: the text and its one issue."""
    assert old in TEXT, old
    broken = TEXT.replace(old, new, 1)
    path = tmp_path / "site.yaml"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(SiteConfigError) as info:
        load_site(path)
    assert len(info.value.issues) == 1, str(info.value)
    [issue] = info.value.issues
    assert f"{path}:{issue.line}: {issue.field}: {issue.message}" in str(info.value)
    return broken, issue.field, issue.line, issue.message


# ------------------------------------------------------------------- files without tags


def test_the_demo_gets_its_tags_from_the_profiles(demo_site: SiteConfig) -> None:
    assert isinstance(demo_site.profiles["segment-controller"], ModbusProfile)
    assert isinstance(demo_site.profiles["school-bms"], OpcUaProfile)
    segment, school = demo_site.profiles["segment-controller"], demo_site.profiles["school-bms"]
    assert all(isinstance(p, ModbusPoint) for p in segment.points.values())
    assert all(isinstance(p, OpcUaPoint) for p in school.points.values())
    for d in demo_site.devices:
        assert d.endpoint.protocol == demo_site.profiles[d.profile].protocol
    assert isinstance(demo_site.device("school").endpoint, OpcUaEndpoint)
    assert isinstance(demo_site.device("counter-east").endpoint, ModbusEndpoint)


def test_a_dumped_site_loads_again_as_it_was(demo_site: SiteConfig) -> None:
    data = demo_site.model_dump(mode="json")
    assert data["profiles"]["school-bms"]["points"]["gym_temp_c"]["protocol"] == "opcua"
    assert data["devices"][0]["endpoint"]["protocol"] == "modbus"
    assert "table" not in data["profiles"]["school-bms"]["points"]["gym_temp_c"]
    assert "write_function" not in data["profiles"]["school-bms"]
    assert validate_site(data).model_dump() == demo_site.model_dump()


def test_a_dump_of_the_untagged_schema_loads_unchanged(demo_site: SiteConfig) -> None:
    """Before the tags, every point carried every protocol's fields (null or default) and an
    OPC-UA profile the Modbus settings; such a file means the same site."""
    data = demo_site.model_dump(mode="json")
    for prof in data["profiles"].values():
        for point in prof["points"].values():
            del point["protocol"]
            if prof["protocol"] == "modbus":
                point.update(node=None, browse_path=None)
            else:
                point.update(table=None, address=None, bit=None, word_order="big",
                             byte_order="big")  # fmt: skip
        if prof["protocol"] == "opcua":
            prof.update(max_gap_registers=8, max_read_registers=125, write_function="multiple")
    for device in data["devices"]:
        del device["endpoint"]["protocol"]
    before = copy.deepcopy(data)
    assert validate_site(data).model_dump() == demo_site.model_dump()
    assert data == before  # the input is not changed on the way


def test_one_endpoint_shared_by_an_anchor_is_tagged_per_device() -> None:
    text = TEXT.replace(
        "endpoint: {host: 127.0.0.1, port: 15021, unit_id: 1}",
        "endpoint: &gw {host: 127.0.0.1, port: 15021, unit_id: 1}",
        1,
    ).replace(LINDENWEG_EP, "endpoint: {<<: *gw, unit_id: 3}", 1)
    site = parse_site(text, "x.yaml")
    assert site.device("seg-lindenweg").endpoint == ModbusEndpoint(
        host="127.0.0.1", port=15021, unit_id=3
    )


# ------------------------------------------------------------- protocols that disagree


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # an OPC-UA profile on a device with host/port
        (
            SCHOOL_EP,
            "endpoint: {host: 127.0.0.1, port: 14840}",
            "profile 'school-bms' is opcua, but this endpoint is modbus; "
            "an opcua endpoint has url",
        ),
        # a Modbus profile on a device with url
        (
            LINDENWEG_EP,
            'endpoint: {url: "opc.tcp://127.0.0.1:4840/"}',
            "profile 'segment-controller' is modbus, but this endpoint is opcua; "
            "a modbus endpoint has host, port and unit_id",
        ),
        # a tag that contradicts the profile
        (
            LINDENWEG_EP,
            'endpoint: {protocol: opcua, url: "opc.tcp://127.0.0.1:4840/"}',
            "profile 'segment-controller' is modbus, but this endpoint is opcua; "
            "a modbus endpoint has host, port and unit_id",
        ),
    ],
)
def test_an_endpoint_of_another_protocol_than_its_profile(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    broken, field, line, got = one_issue(tmp_path, old, new)
    assert field == f"devices.{4 if old == LINDENWEG_EP else 5}.endpoint"
    assert got == message
    assert line == line_of(broken, new)


def test_an_endpoint_with_another_protocols_default_is_refused_too(tmp_path: Path) -> None:
    new = 'endpoint: {url: "opc.tcp://127.0.0.1:14840/laterne/", port: 502}'
    _broken, field, _line, message = one_issue(tmp_path, SCHOOL_EP, new)
    assert (field, message) == (
        "devices.5.endpoint", "port is for modbus endpoints only; an opcua endpoint has url"
    )


def test_an_endpoint_with_both_protocols_fields_is_its_profiles(tmp_path: Path) -> None:
    new = 'endpoint: {url: "opc.tcp://127.0.0.1:14840/laterne/", host: 127.0.0.1, port: 4840}'
    broken, field, line, message = one_issue(tmp_path, SCHOOL_EP, new)
    assert (field, line) == ("devices.5.endpoint", line_of(broken, new))
    assert message == "host, port are for modbus endpoints only; an opcua endpoint has url"


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        (
            "status:    {table: input, address: 4, type: u16}",
            'status:    {table: input, address: 4, type: u16, node: "ns=2;s=x"}',
            "profiles.traffic-counter-2lane.points.status",
            "node is for opcua points only; a modbus profile's points have table and address",
        ),
        (
            "status:    {table: input, address: 4, type: u16}",
            'status:    {node: "ns=2;s=x"}',
            "profiles.traffic-counter-2lane.points.status",
            "node is for opcua points only; a modbus profile's points have table and address",
        ),
        (
            'gym_temp_c:            {node: "ns=2;s=school.gym.temperature", type: f64,',
            'gym_temp_c:            {node: "ns=2;s=school.gym.temperature", type: f64, '
            "word_order: little,",
            "profiles.school-bms.points.gym_temp_c",
            "word_order is for modbus points only; an opcua profile's points have node or "
            "browse_path",
        ),
        (
            "status:    {table: input, address: 4, type: u16}",
            "status:    {protocol: opcua, table: input, address: 4, type: u16}",
            "profiles.traffic-counter-2lane.points.status",
            "protocol is 'opcua', but this point is modbus (a modbus profile's points have "
            "table and address)",
        ),
        (
            "  school-bms:\n    protocol: opcua\n",
            "  school-bms:\n    protocol: opcua\n    max_read_registers: 60\n",
            "profiles.school-bms",
            "max_read_registers is for modbus profiles only",
        ),
    ],
)
def test_a_point_or_profile_with_another_protocols_fields(
    tmp_path: Path, old: str, new: str, field: str, message: str
) -> None:
    broken, got_field, line, got = one_issue(tmp_path, old, new)
    assert (got_field, got) == (field, message)
    key = field.rsplit(".", 1)[-1]
    assert line == line_of(broken, f"{key}:")


def test_a_modbus_point_without_its_address_says_which_field(tmp_path: Path) -> None:
    old = "status:    {table: input, address: 4, type: u16}"
    broken, field, line, message = one_issue(tmp_path, old, "status:    {table: input}")
    assert field == "profiles.traffic-counter-2lane.points.status.address"
    assert message == "Field required"
    assert line == line_of(broken, "status:")


def test_unknown_and_missing_profile_protocols(tmp_path: Path) -> None:
    old = "  school-bms:\n    protocol: opcua\n"
    broken, field, line, message = one_issue(tmp_path, old, "  school-bms:\n    protocol: mqtt\n")
    assert field == "profiles.school-bms.protocol"
    assert message == "unknown protocol 'mqtt'; known: modbus, opcua"
    assert line == line_of(broken, "protocol: mqtt")

    broken, field, line, message = one_issue(tmp_path, old, "  school-bms:\n")
    assert field == "profiles.school-bms"
    assert message == "a profile needs protocol: modbus or opcua"
    assert line == line_of(broken, "school-bms:\n")


def test_unknown_endpoint_protocol(tmp_path: Path) -> None:
    new = 'endpoint: {protocol: lorawan, url: "opc.tcp://127.0.0.1:14840/laterne/"}'
    broken, field, line, message = one_issue(tmp_path, SCHOOL_EP, new)
    assert (field, message) == (
        "devices.5.endpoint.protocol",
        "unknown protocol 'lorawan'; known: modbus, opcua",
    )
    assert line == line_of(broken, new)


def test_a_profile_named_like_a_protocol_keeps_its_name_in_the_field(tmp_path: Path) -> None:
    renamed = TEXT.replace("traffic-counter-2lane", "modbus")
    broken = renamed.replace(
        "status:    {table: input, address: 4, type: u16}", "status:    {table: input}", 1
    )
    path = tmp_path / "site.yaml"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(SiteConfigError) as info:
        load_site(path)
    [issue] = info.value.issues
    assert issue.field == "profiles.modbus.points.status.address"  # the tag is gone, the name not
    assert issue.line == line_of(broken, "status:    {table: input}")


# --------------------------------------------------------------- models used on their own


def test_a_point_on_its_own_is_told_by_its_fields() -> None:
    modbus = PointSpec(table="coil", address=3, type="bool")
    assert isinstance(modbus, ModbusPoint) and modbus.protocol == "modbus"
    assert (modbus.node, modbus.browse_path) == (None, None)
    opcua = PointSpec.model_validate({"node": "ns=2;s=x", "type": "f64"})
    assert isinstance(opcua, OpcUaPoint)
    assert (opcua.table, opcua.address, opcua.bit) == (None, None, None)
    tagged = PointSpec.model_validate({"protocol": "opcua", "browse_path": "2:School/2:T"})
    assert isinstance(tagged, OpcUaPoint)
    # a null or default of the other protocol's field does not count
    assert isinstance(PointSpec.model_validate({"node": "i=1", "table": None}), OpcUaPoint)
    assert modbus.model_copy(update={"word_order": "little"}).word_order == "little"


@pytest.mark.parametrize(
    "data",
    [{"type": "u16"}, {"table": "input", "address": 0, "node": "i=1"}, {"protocol": "mqtt"}],
)
def test_a_point_whose_protocol_cannot_be_told_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="cannot tell the point's protocol"):
        PointSpec.model_validate(data)


def test_profiles_and_devices_on_their_own() -> None:
    prof = DeviceProfile.model_validate(
        {"protocol": "modbus", "points": {"x": {"table": "holding", "address": 0}}}
    )
    assert isinstance(prof, ModbusProfile) and isinstance(prof.points["x"], ModbusPoint)
    with pytest.raises(ValidationError, match="a profile needs protocol"):
        DeviceProfile.model_validate({"points": {"x": {"table": "holding", "address": 0}}})
    dev = Device.model_validate(
        {"id": "d", "profile": "p", "endpoint": {"url": "opc.tcp://127.0.0.1:4840/"}}
    )
    assert isinstance(dev.endpoint, OpcUaEndpoint)
    dev = Device.model_validate({"id": "d", "profile": "p", "endpoint": {"host": "10.0.0.1"}})
    assert isinstance(dev.endpoint, ModbusEndpoint) and dev.endpoint.port == 502
    with pytest.raises(ValidationError, match=r"host/port/unit_id \(Modbus\) or url"):
        Device.model_validate({"id": "d", "profile": "p", "endpoint": {"port": 502}})
