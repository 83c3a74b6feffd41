"""Generate synthetic districts of any size, for benchmarks and scale tests.

Rule: a generated district is an ordinary :class:`SiteConfig`, validated like a YAML file, built
from the same profiles as the demo site: segment controllers and traffic counters behind Modbus
gateways (``units_per_gateway`` unit ids share one host:port), buildings served by one OPC-UA
server. Deterministic for a given ``seed``; all endpoints on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from laterne.models.site import SiteConfig, validate_site

__all__ = ["district_data", "generate_district"]

#: per road type: luminaire power [W], the EN 13201 class the luminaires deliver at 100 %, bands
_ROADS: tuple[tuple[str, float, str, list[dict[str, Any]]], ...] = (
    (
        "main",
        90.0,
        "M1",
        [
            {"min_flow_veh_h": 0, "lighting_class": "M5", "dim_pct": 30},
            {"min_flow_veh_h": 150, "lighting_class": "M4", "dim_pct": 50},
            {"min_flow_veh_h": 400, "lighting_class": "M3", "dim_pct": 75},
            {"min_flow_veh_h": 800, "lighting_class": "M2", "dim_pct": 100},
        ],
    ),
    (
        "collector",
        60.0,
        "M1",
        [
            {"min_flow_veh_h": 0, "lighting_class": "M5", "dim_pct": 30},
            {"min_flow_veh_h": 100, "lighting_class": "M4", "dim_pct": 60},
            {"min_flow_veh_h": 300, "lighting_class": "M3", "dim_pct": 100},
        ],
    ),
    (
        "residential",
        35.0,
        "P1",
        [
            {"min_flow_veh_h": 0, "lighting_class": "P5", "dim_pct": 20},
            {"min_flow_veh_h": 60, "lighting_class": "P4", "dim_pct": 40},
            {"min_flow_veh_h": 200, "lighting_class": "P3", "dim_pct": 70},
        ],
    ),
)


def _profiles(zones_per_building: int, n_buildings: int) -> dict[str, Any]:
    profiles: dict[str, Any] = {
        "counter": {
            "protocol": "modbus",
            "points": {
                "lane1_veh": {"table": "input", "address": 0, "type": "u32", "kind": "counter"},
                "lane2_veh": {"table": "input", "address": 2, "type": "u32", "kind": "counter"},
                "status": {"table": "input", "address": 4, "type": "u16"},
            },
        },
        "segment-controller": {
            "protocol": "modbus",
            "points": {
                "dim_pct": {
                    "table": "holding",
                    "address": 0,
                    "type": "u16",
                    "scale": 0.1,
                    "unit": "%",
                    "kind": "setpoint",
                    "writable": True,
                    "min": 0,
                    "max": 100,
                    "failsafe": 100,
                },
                "power_w": {
                    "table": "input",
                    "address": 0,
                    "type": "u32",
                    "scale": 0.1,
                    "unit": "W",
                    "min": 0,
                    "max": 200000,
                },
                "energy_wh": {"table": "input", "address": 2, "type": "u32", "kind": "counter"},
                "failed_lamps": {"table": "input", "address": 4, "type": "u16"},
            },
        },
    }
    for b in range(n_buildings):
        pts: dict[str, Any] = {
            "outdoor_temp_c": {
                "node": f"ns=2;s=b{b}.outdoor.temperature",
                "type": "f64",
                "unit": "degC",
            },
            "heating_power_kw": {"node": f"ns=2;s=b{b}.heating.power", "type": "f64", "unit": "kW"},
            "heating_energy_kwh": {
                "node": f"ns=2;s=b{b}.heating.energy",
                "type": "f64",
                "kind": "counter",
                "unit": "kWh",
            },
        }
        for z in range(zones_per_building):
            pts[f"z{z}_temp_c"] = {
                "node": f"ns=2;s=b{b}.z{z}.temperature",
                "type": "f64",
                "unit": "degC",
            }
            pts[f"z{z}_setpoint_c"] = {
                "node": f"ns=2;s=b{b}.z{z}.setpoint",
                "type": "f64",
                "unit": "degC",
                "kind": "setpoint",
                "writable": True,
                "min": 10,
                "max": 26,
                "failsafe": 19,
            }
        profiles[f"bms-{b}"] = {"protocol": "opcua", "points": pts}
    return profiles


def generate_district(
    *,
    n_segments: int = 200,
    luminaires_total: int = 2000,
    n_counters: int = 50,
    n_buildings: int = 20,
    zones_per_building: int = 2,
    units_per_gateway: int = 20,
    base_port: int = 25000,
    opcua_port: int = 24840,
    seed: int = 0,
) -> SiteConfig:
    """A validated district; the parameters are those of :func:`district_data`."""
    data = district_data(
        n_segments=n_segments,
        luminaires_total=luminaires_total,
        n_counters=n_counters,
        n_buildings=n_buildings,
        zones_per_building=zones_per_building,
        units_per_gateway=units_per_gateway,
        base_port=base_port,
        opcua_port=opcua_port,
        seed=seed,
    )
    return validate_site(data, "<generated district>")


def district_data(
    *,
    n_segments: int = 200,
    luminaires_total: int = 2000,
    n_counters: int = 50,
    n_buildings: int = 20,
    zones_per_building: int = 2,
    units_per_gateway: int = 20,
    base_port: int = 25000,
    opcua_port: int = 24840,
    seed: int = 0,
) -> dict[str, Any]:
    """The plain data (as YAML would give it) of a district of ``n_segments`` segment
    controllers sharing ``luminaires_total`` luminaires, ``n_counters`` two-lane traffic
    counters and ``n_buildings`` buildings of ``zones_per_building`` zones each."""
    if n_segments < 1 or n_counters < 1:
        raise ValueError("a district needs at least one segment and one counter")
    rng = np.random.default_rng(seed)
    devices: list[dict[str, Any]] = []
    port = base_port

    def add_modbus(prefix: str, count: int, profile: str) -> list[str]:
        nonlocal port
        ids = []
        for i in range(count):
            if i and i % units_per_gateway == 0:
                port += 1
            dev_id = f"{prefix}-{i:03d}"
            devices.append(
                {
                    "id": dev_id,
                    "profile": profile,
                    "poll_interval_s": 10,
                    "endpoint": {
                        "host": "127.0.0.1",
                        "port": port,
                        "unit_id": i % units_per_gateway + 1,
                    },
                }
            )
            ids.append(dev_id)
        port += 1
        return ids

    counters = add_modbus("cnt", n_counters, "counter")
    controllers = add_modbus("seg", n_segments, "segment-controller")
    base, extra = divmod(luminaires_total, n_segments)
    segments = []
    for i, dev in enumerate(controllers):
        road, power_w, design, bands = _ROADS[int(rng.integers(len(_ROADS)))]
        c = counters[i % n_counters]
        segments.append(
            {
                "id": f"s{i:03d}",
                "road_type": road,
                "luminaires": base + (1 if i < extra else 0),
                "rated_power_w": power_w,
                "controller": f"{dev}.dim_pct",
                "power": f"{dev}.power_w",
                "energy": f"{dev}.energy_wh",
                "counters": [f"{c}.lane1_veh", f"{c}.lane2_veh"],
                "min_dim_pct": 10,
                "design_class": design,
                "bands": bands,
            }
        )
    buildings = []
    for b in range(n_buildings):
        dev = f"bms-{b:02d}"
        devices.append(
            {
                "id": dev,
                "profile": f"bms-{b}",
                "poll_interval_s": 10,
                "endpoint": {"url": f"opc.tcp://127.0.0.1:{opcua_port}/laterne/"},
            }
        )
        buildings.append(
            {
                "id": f"b{b:02d}",
                "heating_power": f"{dev}.heating_power_kw",
                "heating_energy": f"{dev}.heating_energy_kwh",
                "outdoor_temperature": f"{dev}.outdoor_temp_c",
                "zones": [
                    {
                        "id": f"z{z}",
                        "temperature": f"{dev}.z{z}_temp_c",
                        "setpoint": f"{dev}.z{z}_setpoint_c",
                        "area_m2": float(rng.integers(200, 1500)),
                        "occupancy": [
                            {
                                "days": ["mon", "tue", "wed", "thu", "fri"],
                                "start": "07:00",
                                "end": "17:00",
                            }
                        ],
                    }
                    for z in range(zones_per_building)
                ],
            }
        )
    data = {
        "site": {
            "name": f"Generated district ({luminaires_total} luminaires)",
            "timezone": "Europe/Berlin",
            "latitude": 51.36,
            "longitude": 7.47,
        },
        "profiles": _profiles(zones_per_building, n_buildings),
        "devices": devices,
        "segments": segments,
        "buildings": buildings,
    }
    return data
