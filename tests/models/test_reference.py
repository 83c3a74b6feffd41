"""docs/configuration.md is what the schema says: every field, its default, its description."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from laterne.models.reference import render_reference, sections
from laterne.models.site import (
    DeviceProfile,
    LightingBand,
    ModbusEndpoint,
    ModbusPoint,
    ModbusProfile,
    OpcUaEndpoint,
    OpcUaPoint,
    OpcUaProfile,
    PointRef,
    PointSpec,
    SiteConfig,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
SCRIPT = ROOT / "scripts" / "config-reference"


def test_docs_configuration_md_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render_reference(), (
        "docs/configuration.md is out of date: run scripts/config-reference"
    )


def test_every_model_of_the_schema_has_a_section_at_its_yaml_path() -> None:
    where = {s.model: s.path for s in sections()}
    assert where[SiteConfig] == ""
    assert where[ModbusProfile] == where[OpcUaProfile] == "profiles.<name>"
    assert where[ModbusPoint] == where[OpcUaPoint] == "profiles.<name>.points.<name>"
    assert DeviceProfile not in where and PointSpec not in where  # bases, never in a file
    assert where[ModbusEndpoint] == where[OpcUaEndpoint] == "devices[].endpoint"
    assert where[LightingBand] == "segments[].bands[]"
    assert PointRef not in where  # written as "device.point", not as a mapping


def section_rows(text: str, heading: str) -> dict[str, list[str]]:
    """The rows of the table under ``## heading``, by field name."""
    body = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in body.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0].strip("`")] = cells
    return rows


def test_every_field_is_a_row_with_a_description() -> None:
    text = render_reference()
    for sec in sections():
        heading = f"`{sec.path}`" if sec.path else "Top level"
        if sec.title:
            heading += f" — {sec.title}"
        rows = section_rows(text, heading)
        assert list(rows) == list(sec.model.model_fields), heading
        for name, field in sec.model.model_fields.items():
            assert field.description, f"{sec.model.__name__}.{name} has no description"
            assert rows[name][3] != "", name


def test_defaults_types_and_units_are_shown() -> None:
    text = render_reference()
    seg = section_rows(text, "`segments[]`")
    assert seg["min_dim_pct"][1:] == [
        "number; ≥ 0, ≤ 100",
        "`0`",
        "lowest dim level the segment may get; 0 allows off [%]",
    ]
    assert seg["rated_power_w"][2] == "*required*"
    assert seg["power"][1:3] == ["`device.point`", "*not set*"]
    profile = section_rows(text, "`profiles.<name>` — Modbus profile")
    assert profile["write_function"][1:3] == ["`single` \\| `multiple`", "`multiple`"]
    assert "write_function" not in section_rows(text, "`profiles.<name>` — OPC-UA profile")
    point = section_rows(text, "`profiles.<name>.points.<name>` — OPC-UA point")
    assert point["protocol"][1:3] == ["`opcua`", "`opcua`"]
    assert "table" not in point and "node" in point
    history = section_rows(text, "`history`")
    assert history["raw_retention_days"][2:] == [
        "`30`",
        "raw readings older than this are folded into aggregates [days]",
    ]
    modbus = section_rows(text, "`devices[].endpoint` — Modbus TCP endpoint")
    assert modbus["port"][1:3] == ["integer; ≥ 1, ≤ 65 535", "`502`"]


def test_script_writes_the_same_text(tmp_path: Path) -> None:
    out = tmp_path / "configuration.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "-o", str(out)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == render_reference()
    out.write_text("stale\n", encoding="utf-8")
    check = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 1
    assert "out of date; run scripts/config-reference" in check.stderr
