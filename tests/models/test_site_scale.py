"""A city-sized site file loads completely, and a mistake deep inside it is found on its line.

No timing here: the speed of loading is measured by ``bench/validate_site.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from laterne.models.site import SiteConfigError, load_site
from laterne.simulations.generate import district_data

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

#: the size of Hagen: 20,000 luminaires in 2,000 segments, 500 counters, 500 buildings
HAGEN: dict[str, int] = {
    "n_segments": 2000,
    "luminaires_total": 20_000,
    "n_counters": 500,
    "n_buildings": 500,
    "zones_per_building": 2,
}


def write(tmp_path: Path, data: dict[str, Any]) -> tuple[Path, str]:
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False)
    path = tmp_path / "district.yaml"
    path.write_text(text, encoding="utf-8")
    return path, text


def test_hagen_sized_site_loads_with_every_entry(tmp_path: Path) -> None:
    path, _ = write(tmp_path, district_data(**HAGEN))
    site = load_site(path)
    assert len(site.segments) == 2000
    assert sum(s.luminaires for s in site.segments) == 20_000
    assert len(site.buildings) == 500
    assert sum(len(b.zones) for b in site.buildings) == 1000
    assert len(site.devices) == 2000 + 500 + 500
    assert len(site.profiles) == 2 + 500
    last = site.segments[-1]
    assert site.point(last.controller).writable
    assert site.device(last.controller.device).id == "seg-1999"


def test_mistakes_deep_in_a_large_site_are_found_on_their_lines(tmp_path: Path) -> None:
    data = district_data(n_segments=400, luminaires_total=4000, n_counters=100, n_buildings=100)
    data["segments"][-1]["rated_power_w"] = -7.5
    data["buildings"][-1]["zones"][-1]["occupied_setpoint_c"] = 40
    data["profiles"]["bms-99"]["points"]["z1_setpoint_c"]["node"] = "ns=two;s=b99.z1.setpoint"
    path, text = write(tmp_path, data)
    with pytest.raises(SiteConfigError) as info:
        load_site(path)
    lines = text.splitlines()
    found = {i.field: i.line for i in info.value.issues}
    assert found == {
        "segments.399.rated_power_w": lines.index("  rated_power_w: -7.5") + 1,
        "buildings.99.zones.1.occupied_setpoint_c": lines.index("    occupied_setpoint_c: 40") + 1,
        "profiles.bms-99.points.z1_setpoint_c.node": lines.index(
            "        node: ns=two;s=b99.z1.setpoint"
        )
        + 1,
    }
