"""The site model: the typed, validated schema of one site configuration (YAML).

Rule: a site either loads completely or not at all. Every field is checked by pydantic, every
cross-reference (device -> profile, segment -> device point, zone -> setpoint point) is checked
after that, and any error is reported as :class:`SiteConfigError` naming file, line and field.
Nothing here performs I/O except :func:`load_site`, which reads the one file it is given.

Units are in the field names: ``rated_power_w``, ``dim_pct``, ``setpoint_c``, ``flow_veh_h``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import time
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "Building",
    "ConfigIssue",
    "DataType",
    "Device",
    "DeviceProfile",
    "HistoryConfig",
    "InfluxConfig",
    "LightingBand",
    "ModbusEndpoint",
    "OccupancyPeriod",
    "OpcUaEndpoint",
    "PointRef",
    "PointSpec",
    "PolicyParams",
    "RoadType",
    "Segment",
    "SiteConfig",
    "SiteConfigError",
    "SiteInfo",
    "Tariff",
    "Zone",
    "load_site",
    "parse_site",
    "validate_site",
]

DataType = Literal["bool", "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64"]
RoadType = Literal["main", "collector", "residential", "pedestrian"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

#: register count of each Modbus data type (bool lives in coils/discrete inputs, one bit)
REGISTER_COUNT: dict[str, int] = {
    "bool": 1,
    "u16": 1,
    "i16": 1,
    "u32": 2,
    "i32": 2,
    "u64": 4,
    "i64": 4,
    "f32": 2,
    "f64": 4,
}

_ID = r"^[a-z0-9][a-z0-9_\-]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- device profiles


class PointSpec(_Model):
    """One data point of a device profile: where it lives, how it is encoded, what it means.

    ``value = raw * scale + offset`` in the unit named by ``unit``; writes use the inverse.
    ``min``/``max`` are the physical range for measurements and the command bounds for
    writable points. ``failsafe`` is the value a writable point is driven to when data is lost.
    """

    # Modbus location (0-based protocol address)
    table: Literal["holding", "input", "coil", "discrete"] | None = None
    address: int | None = Field(default=None, ge=0, le=65535)
    bit: int | None = Field(
        default=None, ge=0, le=15, description="bit field: this bit of a u16 register (0 = LSB)"
    )
    # OPC-UA location: a NodeId, or a browse path from the Objects folder ("2:Plant/2:Temp")
    node: str | None = None
    browse_path: str | None = None
    type: DataType = "u16"
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    kind: Literal["measurement", "counter", "setpoint"] = "measurement"
    writable: bool = False
    min: float | None = None
    max: float | None = None
    failsafe: float | None = None

    @field_validator("scale")
    @classmethod
    def _scale_nonzero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("scale must not be 0 (writes divide by it)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> PointSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.writable and (self.min is None or self.max is None):
            raise ValueError("a writable point needs min and max (its command bounds)")
        if self.failsafe is not None:
            lo = self.min if self.min is not None else float("-inf")
            hi = self.max if self.max is not None else float("inf")
            if not lo <= self.failsafe <= hi:
                raise ValueError(f"failsafe {self.failsafe} is outside [{self.min}, {self.max}]")
        if self.bit is not None and (self.table not in ("holding", "input") or self.type != "u16"):
            raise ValueError("a bit field needs table holding or input and type u16")
        if self.bit is not None and self.writable:
            raise ValueError("bit fields are read-only (a write would clobber the other bits)")
        if self.table in ("coil", "discrete") and self.type != "bool":
            raise ValueError(f"a {self.table} point must have type bool, not {self.type}")
        if self.table in ("holding", "input") and self.type == "bool":
            raise ValueError("type bool needs table coil or discrete")
        if self.writable and self.table in ("input", "discrete"):
            raise ValueError(f"a point in table {self.table} is read-only and cannot be writable")
        if self.kind == "counter" and self.type not in ("u16", "u32", "u64", "f32", "f64"):
            raise ValueError("a counter must be u16, u32, u64 (wrapping) or f32/f64 (not wrapping)")
        return self

    @property
    def register_count(self) -> int:
        """Number of 16-bit registers (or bits, for coils) the point spans."""
        return REGISTER_COUNT[self.type]


class DeviceProfile(_Model):
    """A device model, declared once and referenced by devices: protocol plus point map."""

    protocol: Literal["modbus", "opcua"]
    description: str = ""
    points: dict[str, PointSpec] = Field(min_length=1)
    # Modbus read planning: merge reads across gaps up to this many registers, never read more
    # than this many registers in one request (the protocol allows 125)
    max_gap_registers: int = Field(default=8, ge=0, le=124)
    max_read_registers: int = Field(default=125, ge=1, le=125)

    @model_validator(mode="after")
    def _locations(self) -> DeviceProfile:
        for name, p in self.points.items():
            if self.protocol == "modbus" and (p.table is None or p.address is None):
                raise ValueError(f"point {name!r}: a modbus point needs table and address")
            if self.protocol == "modbus" and p.node is not None:
                raise ValueError(f"point {name!r}: a modbus point has no node")
            if self.protocol == "opcua" and (p.node is None) == (p.browse_path is None):
                raise ValueError(f"point {name!r}: an opcua point needs node or browse_path")
            if self.protocol == "modbus" and p.browse_path is not None:
                raise ValueError(f"point {name!r}: a modbus point has no browse_path")
            if self.protocol == "opcua" and (p.table is not None or p.address is not None):
                raise ValueError(f"point {name!r}: an opcua point has no table/address")
        if self.protocol == "modbus":
            _check_overlaps(self.points)
        return self


def _check_overlaps(points: dict[str, PointSpec]) -> None:
    spans: dict[str, list[tuple[int, int, str]]] = {}
    for name, p in points.items():
        assert p.table is not None and p.address is not None
        if p.bit is not None:
            continue  # bit fields share their register with other bit fields
        spans.setdefault(p.table, []).append((p.address, p.address + p.register_count, name))
    for table, items in spans.items():
        items.sort()
        for (_s0, e0, n0), (s1, _e1, n1) in pairwise(items):
            if s1 < e0:
                raise ValueError(f"points {n0!r} and {n1!r} overlap in {table} registers")


# --------------------------------------------------------------------------------- devices


class ModbusEndpoint(_Model):
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    max_in_flight: int = Field(
        default=1, ge=1, le=16, description="requests in flight on this host:port (gateways: 1)"
    )


class OpcUaEndpoint(_Model):
    """An OPC-UA server. Certificate paths are relative to the site file; credentials are
    never in the YAML: ``username_env``/``password_env`` name environment variables."""

    url: Annotated[str, Field(pattern=r"^opc\.tcp://")]
    security: Literal["none", "sign", "sign_and_encrypt"] = "none"
    security_policy: Literal["Basic256Sha256"] = "Basic256Sha256"
    certificate: str | None = None  # our client certificate (PEM or DER)
    private_key: str | None = None  # its private key (PEM)
    server_certificate: str | None = None  # the server's certificate, to trust it
    username_env: str | None = None
    password_env: str | None = None
    subscribe: bool = Field(default=True, description="data-change subscriptions, else polling")
    publishing_interval_ms: float = Field(default=1000.0, gt=0)

    @model_validator(mode="after")
    def _security(self) -> OpcUaEndpoint:
        if self.security != "none" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"security {self.security} needs certificate and private_key")
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("username_env and password_env go together")
        return self


def _endpoint_kind(v: Any) -> str | None:
    """Pick the endpoint model up front: a mapping with ``url`` is OPC-UA, any other is Modbus,
    so a broken endpoint reports only the errors of the member it was meant to be."""
    if isinstance(v, OpcUaEndpoint):
        return "opcua"
    if isinstance(v, ModbusEndpoint):
        return "modbus"
    if isinstance(v, dict):
        return "opcua" if "url" in v else "modbus"
    return None


#: the tags of the endpoint union; pydantic puts the chosen one into an error's loc
_ENDPOINT_TAGS = frozenset({"modbus", "opcua"})

Endpoint = Annotated[
    Annotated[ModbusEndpoint, Tag("modbus")] | Annotated[OpcUaEndpoint, Tag("opcua")],
    Discriminator(
        _endpoint_kind,
        custom_error_type="endpoint_type",
        custom_error_message="expected a mapping: host/port/unit_id (Modbus) or url (OPC-UA)",
    ),
]


class Device(_Model):
    id: Annotated[str, Field(pattern=_ID)]
    profile: str
    endpoint: Endpoint
    poll_interval_s: float = Field(default=10.0, gt=0)
    timeout_s: float = Field(default=2.0, gt=0)
    stale_after_polls: int = Field(
        default=3, ge=1, description="a value older than this many poll intervals is stale"
    )

    @property
    def stale_after_s(self) -> float:
        return self.poll_interval_s * self.stale_after_polls


class PointRef(_Model):
    """A reference to one point of one device, written ``device.point`` in YAML."""

    device: str
    point: str

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        if isinstance(v, str):
            device, sep, point = v.partition(".")
            if not sep or not device or not point:
                raise ValueError(f"expected 'device.point', got {v!r}")
            return {"device": device, "point": point}
        return v

    def __str__(self) -> str:
        return f"{self.device}.{self.point}"


# -------------------------------------------------------------------------------- lighting


class LightingBand(_Model):
    """From ``min_flow_veh_h`` upward, the segment needs ``lighting_class`` at ``dim_pct``."""

    min_flow_veh_h: float = Field(ge=0)
    lighting_class: str
    dim_pct: float = Field(ge=0, le=100)


class Segment(_Model):
    id: Annotated[str, Field(pattern=_ID)]
    name: str = ""
    road_type: RoadType
    luminaires: int = Field(gt=0, le=100_000)
    rated_power_w: float = Field(gt=0, le=2000, description="rated power of one luminaire [W]")
    controller: PointRef = Field(description="writable dim level of the segment controller")
    power: PointRef | None = Field(default=None, description="measured power of the segment")
    energy: PointRef | None = Field(default=None, description="energy counter of the segment")
    counters: list[PointRef] = Field(default_factory=list, description="vehicle count channels")
    bands: list[LightingBand] = Field(min_length=1)
    min_dim_pct: float = Field(default=0.0, ge=0, le=100)
    max_dim_pct: float = Field(default=100.0, ge=0, le=100)
    failsafe_dim_pct: float = Field(default=100.0, ge=0, le=100)

    @model_validator(mode="after")
    def _bands(self) -> Segment:
        flows = [b.min_flow_veh_h for b in self.bands]
        if flows[0] != 0:
            raise ValueError("the first band must start at min_flow_veh_h: 0")
        if any(b >= a for a, b in zip(flows[1:], flows, strict=False)):
            raise ValueError("bands must be sorted by strictly increasing min_flow_veh_h")
        if self.min_dim_pct > self.max_dim_pct:
            raise ValueError("min_dim_pct is above max_dim_pct")
        if not self.min_dim_pct <= self.failsafe_dim_pct <= self.max_dim_pct:
            raise ValueError("failsafe_dim_pct must lie within [min_dim_pct, max_dim_pct]")
        return self


# -------------------------------------------------------------------------------- buildings


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")


class OccupancyPeriod(_Model):
    """Local-time occupancy on the given weekdays, ``start`` inclusive to ``end`` exclusive."""

    days: list[Weekday] = Field(min_length=1)
    start: str
    end: str

    @field_validator("start", "end", mode="before")
    @classmethod
    def _not_a_number(cls, v: Any) -> Any:
        # YAML 1.1 reads an unquoted 21:00 as the sexagesimal integer 1260
        if isinstance(v, int) and not isinstance(v, bool):
            read_as = f" (YAML reads an unquoted {v // 60}:{v % 60:02d} as {v})" if v >= 60 else ""
            raise ValueError(
                f'expected HH:MM, got the number {v}{read_as}; write times in quotes, e.g. "21:00"'
            )
        return v

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError(f"expected HH:MM, got {v!r}")
        return v

    @model_validator(mode="after")
    def _order(self) -> OccupancyPeriod:
        if self.start_minute >= self.end_minute:
            raise ValueError(f"start {self.start} is not before end {self.end}")
        return self

    @property
    def start_minute(self) -> int:
        h, m = self.start.split(":")
        return int(h) * 60 + int(m)

    @property
    def end_minute(self) -> int:
        h, m = self.end.split(":")
        return int(h) * 60 + int(m)

    def start_time(self) -> time:
        return time(self.start_minute // 60, self.start_minute % 60)


class Zone(_Model):
    id: Annotated[str, Field(pattern=_ID)]
    name: str = ""
    area_m2: float = Field(default=100.0, gt=0)
    temperature: PointRef
    setpoint: PointRef
    occupied_setpoint_c: float = Field(default=21.0, ge=5, le=30)
    setback_setpoint_c: float = Field(default=16.0, ge=5, le=30)
    default_setpoint_c: float = Field(
        default=19.0, ge=5, le=30, description="fail-safe setpoint on missing or stale data"
    )
    min_setpoint_c: float = Field(default=12.0, ge=5, le=30)
    max_setpoint_c: float = Field(default=24.0, ge=5, le=30)
    occupancy: list[OccupancyPeriod] = Field(default_factory=list)

    @model_validator(mode="after")
    def _bounds(self) -> Zone:
        lo, hi = self.min_setpoint_c, self.max_setpoint_c
        if lo > hi:
            raise ValueError("min_setpoint_c is above max_setpoint_c")
        for name in ("occupied_setpoint_c", "setback_setpoint_c", "default_setpoint_c"):
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ValueError(f"{name} {v} is outside [{lo}, {hi}]")
        return self


class Building(_Model):
    id: Annotated[str, Field(pattern=_ID)]
    name: str = ""
    heating_power: PointRef | None = None
    heating_energy: PointRef | None = None
    outdoor_temperature: PointRef | None = None
    zones: list[Zone] = Field(min_length=1)


# ----------------------------------------------------------------------------------- site


class SiteInfo(_Model):
    name: str
    timezone: str = Field(description="IANA zone, e.g. Europe/Berlin; required, never guessed")
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class Tariff(_Model):
    energy_price_eur_per_kwh: float = Field(default=0.30, ge=0)
    co2_kg_per_kwh: float = Field(default=0.380, ge=0)


class PolicyParams(_Model):
    cycle_s: float = Field(default=10.0, gt=0, description="control cycle [s]")
    stale_after_s: float = Field(default=60.0, gt=0, description="data older than this is stale")
    daylight_elevation_deg: float = Field(
        default=-2.0, ge=-18, le=10, description="lights off while the sun is above this [°]"
    )
    flow_window_s: float = Field(
        default=900.0, gt=0, description="time constant of the traffic-flow average [s]"
    )
    max_dim_step_pct: float = Field(
        default=100.0, gt=0, le=100, description="largest dim change per cycle [%]"
    )
    band_hysteresis_pct: float = Field(
        default=15.0,
        ge=0,
        lt=100,
        description="a segment drops to a lower band only once the flow is this far below the "
        "threshold of its current band [%]",
    )
    min_band_hold_s: float = Field(
        default=600.0,
        ge=0,
        description="a segment stays at least this long in a band before "
        "it may drop to a lower one (going up is immediate) [s]",
    )


class InfluxConfig(_Model):
    """An InfluxDB (v2 write API) server that receives a copy of the history. The token is read
    from the environment variable ``token_env``, never from the YAML."""

    url: Annotated[str, Field(pattern=r"^https?://")]
    org: str = "laterne"
    bucket: str = "laterne"
    token_env: str | None = None
    batch_size: int = Field(default=5000, ge=1)
    flush_interval_s: float = Field(default=5.0, gt=0)
    outbox_path: str = "var/influx-outbox.sqlite"


class HistoryConfig(_Model):
    path: str = "var/laterne.sqlite"
    raw_retention_days: float = Field(
        default=30, gt=0, description="raw readings older than this are folded into aggregates"
    )
    aggregate_minutes: int = Field(default=15, ge=1, le=1440)
    aggregate_retention_days: float = Field(default=3650, gt=0)
    influxdb: InfluxConfig | None = None


class SiteConfig(_Model):
    site: SiteInfo
    profiles: dict[str, DeviceProfile]
    devices: list[Device] = Field(min_length=1)
    segments: list[Segment] = Field(default_factory=list)
    buildings: list[Building] = Field(default_factory=list)
    tariff: Tariff = Field(default_factory=Tariff)
    policy: PolicyParams = Field(default_factory=PolicyParams)
    history: HistoryConfig = Field(default_factory=HistoryConfig)

    def device(self, device_id: str) -> Device:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise KeyError(device_id)

    def profile_of(self, device_id: str) -> DeviceProfile:
        return self.profiles[self.device(device_id).profile]

    def point(self, ref: PointRef) -> PointSpec:
        return self.profile_of(ref.device).points[ref.point]


# --------------------------------------------------------------------------- cross-checks


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a site file: where it is and what is wrong."""

    path: tuple[str | int, ...]
    message: str
    line: int | None = None

    @property
    def field(self) -> str:
        return ".".join(str(p) for p in self.path) or "(top level)"


class SiteConfigError(Exception):
    """A site configuration is invalid; nothing must start. ``issues`` lists every problem."""

    def __init__(self, file: str, issues: list[ConfigIssue]) -> None:
        self.file = file
        self.issues = issues
        lines = [
            f"{file}:{i.line if i.line is not None else '?'}: {i.field}: {i.message}"
            for i in issues
        ]
        super().__init__("invalid site configuration\n" + "\n".join(lines))


def _cross_check(cfg: SiteConfig) -> Iterator[ConfigIssue]:
    ids: dict[str, int] = {}
    for i, d in enumerate(cfg.devices):
        if d.id in ids:
            yield ConfigIssue(("devices", i, "id"), f"duplicate device id {d.id!r}")
        ids[d.id] = i
        if d.profile not in cfg.profiles:
            yield ConfigIssue(
                ("devices", i, "profile"),
                f"unknown profile {d.profile!r}; known: {', '.join(sorted(cfg.profiles))}",
            )
            continue
        proto = cfg.profiles[d.profile].protocol
        if proto == "modbus" and not isinstance(d.endpoint, ModbusEndpoint):
            yield ConfigIssue(("devices", i, "endpoint"), "a modbus device needs host/port/unit_id")
        if proto == "opcua" and not isinstance(d.endpoint, OpcUaEndpoint):
            yield ConfigIssue(("devices", i, "endpoint"), "an opcua device needs url")
        if isinstance(d.endpoint, OpcUaEndpoint) and d.endpoint.subscribe:
            # keep-alives come about once per publishing interval; two must fit in the limit
            if 2 * d.endpoint.publishing_interval_ms / 1000 > d.stale_after_s:
                yield ConfigIssue(
                    ("devices", i, "endpoint", "publishing_interval_ms"),
                    f"{d.endpoint.publishing_interval_ms:g} ms is too slow for a device that "
                    f"goes stale after {d.stale_after_s:g} s (at most half of it)",
                )
    seen_ep: dict[tuple[str, int, int], str] = {}
    for i, d in enumerate(cfg.devices):
        if isinstance(d.endpoint, ModbusEndpoint):
            key = (d.endpoint.host, d.endpoint.port, d.endpoint.unit_id)
            if key in seen_ep:
                yield ConfigIssue(
                    ("devices", i, "endpoint"),
                    f"same host, port and unit_id as device {seen_ep[key]!r}",
                )
            seen_ep[key] = d.id

    def ref(path: tuple[str | int, ...], r: PointRef, *, want: str) -> Iterator[ConfigIssue]:
        if r.device not in ids:
            yield ConfigIssue(path, f"unknown device {r.device!r}")
            return
        dev = cfg.devices[ids[r.device]]
        prof = cfg.profiles.get(dev.profile)
        if prof is None:
            return  # reported above
        spec = prof.points.get(r.point)
        if spec is None:
            yield ConfigIssue(
                path,
                f"profile {dev.profile!r} of device {r.device!r} has no point {r.point!r}; "
                f"known: {', '.join(sorted(prof.points))}",
            )
            return
        if want == "writable" and not spec.writable:
            yield ConfigIssue(path, f"point {r} is not writable")
        if want == "counter" and spec.kind != "counter":
            yield ConfigIssue(path, f"point {r} is not a counter (kind: {spec.kind})")

    # a writable point has one master: two segments (or zones) writing it would fight
    controlled_by: dict[tuple[str, str], str] = {}

    def command(path: tuple[str | int, ...], r: PointRef, owner: str) -> Iterator[ConfigIssue]:
        issues = list(ref(path, r, want="writable"))
        yield from issues
        if issues:
            return
        key = (r.device, r.point)
        if key in controlled_by:
            yield ConfigIssue(path, f"point {r} is already controlled by {controlled_by[key]}")
        else:
            controlled_by[key] = owner

    seg_ids: set[str] = set()
    for i, s in enumerate(cfg.segments):
        if s.id in seg_ids:
            yield ConfigIssue(("segments", i, "id"), f"duplicate segment id {s.id!r}")
        seg_ids.add(s.id)
        yield from command(("segments", i, "controller"), s.controller, f"segment {s.id!r}")
        if s.power is not None:
            yield from ref(("segments", i, "power"), s.power, want="any")
        if s.energy is not None:
            yield from ref(("segments", i, "energy"), s.energy, want="counter")
        channels: set[tuple[str, str]] = set()
        for j, c in enumerate(s.counters):
            if (c.device, c.point) in channels:
                yield ConfigIssue(
                    ("segments", i, "counters", j),
                    f"counter {c} is listed twice (its flow would be counted twice)",
                )
            channels.add((c.device, c.point))
            yield from ref(("segments", i, "counters", j), c, want="counter")
        yield from _check_band_levels(i, s)
    bld_ids: set[str] = set()
    zone_ids: set[str] = set()
    for i, b in enumerate(cfg.buildings):
        if b.id in bld_ids:
            yield ConfigIssue(("buildings", i, "id"), f"duplicate building id {b.id!r}")
        bld_ids.add(b.id)
        for name in ("heating_power", "outdoor_temperature"):
            r = getattr(b, name)
            if r is not None:
                yield from ref(("buildings", i, name), r, want="any")
        if b.heating_energy is not None:
            yield from ref(("buildings", i, "heating_energy"), b.heating_energy, want="counter")
        for j, z in enumerate(b.zones):
            zid = f"{b.id}.{z.id}"
            if zid in zone_ids:
                yield ConfigIssue(("buildings", i, "zones", j, "id"), f"duplicate zone {z.id!r}")
            zone_ids.add(zid)
            yield from ref(("buildings", i, "zones", j, "temperature"), z.temperature, want="any")
            yield from command(
                ("buildings", i, "zones", j, "setpoint"), z.setpoint, f"zone {zid!r}"
            )
    if not cfg.segments and not cfg.buildings:
        yield ConfigIssue((), "a site needs at least one segment or one building")


def _check_band_levels(i: int, s: Segment) -> Iterator[ConfigIssue]:
    """A band's level must lie within the segment's bounds, or safety would silently change it."""
    lo, hi = s.min_dim_pct, s.max_dim_pct
    for j, b in enumerate(s.bands):
        path: tuple[str | int, ...] = ("segments", i, "bands", j, "dim_pct")
        if b.dim_pct == 0:
            if lo > 0:
                yield ConfigIssue(
                    path,
                    f"dim_pct 0 switches the segment off, which min_dim_pct {lo:g} forbids "
                    f"(set min_dim_pct: 0 to allow it)",
                )
        elif b.dim_pct < lo:
            yield ConfigIssue(
                path,
                f"dim_pct {b.dim_pct:g} is below min_dim_pct {lo:g} and would be clamped to {lo:g}",
            )
        elif b.dim_pct > hi:
            yield ConfigIssue(
                path,
                f"dim_pct {b.dim_pct:g} is above max_dim_pct {hi:g} and would be clamped to {hi:g}",
            )


# ------------------------------------------------------------------------------ YAML lines


def _duplicate_keys(node: yaml.Node, path: tuple[str | int, ...]) -> Iterator[ConfigIssue]:
    """Keys given twice in one mapping (PyYAML would silently keep the last one)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[tuple[str, str]] = set()
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                key = (k.tag, k.value)
                if key in seen:
                    yield ConfigIssue(
                        (*path, k.value), f"duplicate key {k.value!r}", k.start_mark.line + 1
                    )
                seen.add(key)
                yield from _duplicate_keys(v, (*path, k.value))
            else:
                yield from _duplicate_keys(v, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            yield from _duplicate_keys(v, (*path, i))


def _line_map(
    node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[Any, ...], int]
) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[(*path, key)] = k.start_mark.line + 1
            _line_map(v, (*path, key), out)
            out[(*path, key)] = k.start_mark.line + 1  # the key's line names the field best
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, (*path, i), out)


def _line_for(path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return None


def parse_site(text: str, file: str = "<string>", base_dir: Path | None = None) -> SiteConfig:
    """Parse and validate a site configuration from YAML text.

    Raises
    ------
    SiteConfigError
        on YAML syntax errors, schema errors and broken cross-references, each with its line.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise SiteConfigError(file, [ConfigIssue((), f"YAML syntax: {exc.problem}", line)]) from exc
    if not isinstance(data, dict) or root is None:
        raise SiteConfigError(file, [ConfigIssue((), "expected a mapping at the top level", 1)])
    duplicates = list(_duplicate_keys(root, ()))
    if duplicates:
        raise SiteConfigError(file, duplicates)
    lines: dict[tuple[Any, ...], int] = {}
    _line_map(root, (), lines)
    return validate_site(data, file, lines, base_dir)


def validate_site(
    data: dict[str, Any],
    file: str = "<generated>",
    lines: dict[tuple[Any, ...], int] | None = None,
    base_dir: Path | None = None,
) -> SiteConfig:
    """Validate a site given as plain data (schema, then cross-references, then files).

    ``lines`` maps YAML paths to line numbers when the data came from a file; certificate paths
    are resolved against ``base_dir`` (the site file's folder) and must exist.
    """
    where = lines or {}
    try:
        cfg = SiteConfig.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            loc = _strip_union_tags(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            issues.append(ConfigIssue(loc, msg, _line_for(loc, where)))
        raise SiteConfigError(file, issues) from None
    problems = [ConfigIssue(i.path, i.message, _line_for(i.path, where)) for i in _cross_check(cfg)]
    cfg, missing = _resolve_files(cfg, base_dir or Path.cwd())
    problems += [ConfigIssue(i.path, i.message, _line_for(i.path, where)) for i in missing]
    if problems:
        raise SiteConfigError(file, problems)
    return cfg


def _resolve_files(cfg: SiteConfig, base_dir: Path) -> tuple[SiteConfig, list[ConfigIssue]]:
    """Make certificate paths absolute (relative to the site file) and check they exist."""
    issues: list[ConfigIssue] = []
    devices = list(cfg.devices)
    for i, d in enumerate(devices):
        ep = d.endpoint
        if not isinstance(ep, OpcUaEndpoint):
            continue
        update: dict[str, str] = {}
        for name in ("certificate", "private_key", "server_certificate"):
            value = getattr(ep, name)
            if value is None:
                continue
            path = (base_dir / value).resolve()
            if not path.is_file():
                where = ("devices", i, "endpoint", name)
                issues.append(ConfigIssue(where, f"no such file: {path}"))
            update[name] = str(path)
        if update:
            devices[i] = d.model_copy(update={"endpoint": ep.model_copy(update=update)})
    return cfg.model_copy(update={"devices": devices}), issues


def _strip_union_tags(loc: tuple[int | str, ...]) -> tuple[str | int, ...]:
    """Drop the union tag pydantic inserts after ``endpoint`` (``devices.0.endpoint.modbus.port``
    becomes ``devices.0.endpoint.port``). Only there: a profile may well be named ``modbus``."""
    return tuple(
        p
        for n, p in enumerate(loc)
        if not (n > 0 and loc[n - 1] == "endpoint" and p in _ENDPOINT_TAGS)
    )


def load_site(path: str | Path) -> SiteConfig:
    """Read and validate one site file. Raises :class:`SiteConfigError` with file and line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SiteConfigError(
            str(p), [ConfigIssue((), f"cannot read file: {exc.strerror}")]
        ) from exc
    return parse_site(text, str(p), p.parent)
