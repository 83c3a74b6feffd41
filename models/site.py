"""The site model: the typed, validated schema of one site configuration (YAML).

Rule: a site either loads completely or not at all. Every field is checked by pydantic, every
cross-reference (device -> profile, segment -> device point, zone -> setpoint point) is checked
after that, and any error is reported as :class:`SiteConfigError` naming file, line and field.
I/O happens only while a site is loaded, in three places. :func:`load_site` reads the one file
it is given: at most :data:`MAX_SITE_FILE_BYTES`, UTF-8 only (a bad byte is reported with its
line and offset, never a traceback); the text is parsed by :func:`parse_site` through
:mod:`laterne.models.yaml_source`, which is pure (data, lines and duplicate keys from one pass of
libyaml's parser over the string). :func:`validate_site` resolves the certificate and key paths
an OPC-UA endpoint names against the site file's folder (the working directory for data that
came without one) and checks that each is a file; it opens none of them. Checking
``site.timezone`` looks the zone up in the system's time-zone database. Nothing here opens a
socket, reads an environment variable (credentials are only *named*) or reads a clock.

The YAML is parsed once and every check after that is linear in the size of the site (lookups by
id and by point in dictionaries); ``bench/validate_site.py`` times a city of 20,000 luminaires.

Protocols are tagged, never guessed from a shape: a profile names its ``protocol``, and its
points are that protocol's points (:class:`ModbusPoint`, :class:`OpcUaPoint`); a device's
endpoint is of its profile's protocol (:class:`ModbusEndpoint`, :class:`OpcUaEndpoint`). A file
need not repeat the tag on points and endpoints; where a point or an endpoint names another
protocol than its profile's, or has another protocol's fields, loading fails on that line,
naming both.

Units are in the field names: ``rated_power_w``, ``dim_pct``, ``setpoint_c``, ``flow_veh_h``.
"""

from __future__ import annotations

import gc
import math
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import time
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from .hosts import check_host, check_url
from .lighting import OFF, UnknownLightingClass, delivered_class, dim_pct_for_class, lighting_class
from .opcua_address import parse_browse_path, parse_node_id
from .yaml_source import Lines, YamlProblems, read_yaml

__all__ = [
    "MAX_SITE_FILE_BYTES",
    "Building",
    "ConfigIssue",
    "DataType",
    "Device",
    "DeviceProfile",
    "HistoryConfig",
    "InfluxConfig",
    "LightingBand",
    "ModbusEndpoint",
    "ModbusPoint",
    "ModbusProfile",
    "ModbusTable",
    "OccupancyPeriod",
    "OpcUaEndpoint",
    "OpcUaPoint",
    "OpcUaProfile",
    "PointRef",
    "PointSpec",
    "PolicyParams",
    "ProtocolName",
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
#: the protocols a device may speak; each has its point, profile and endpoint model
ProtocolName = Literal["modbus", "opcua"]
_PROTOCOLS: tuple[str, ...] = get_args(ProtocolName)
ModbusTable = Literal["holding", "input", "coil", "discrete"]
ByteOrder = Literal["big", "little"]
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

#: largest site file :func:`load_site` reads [bytes]; a site of 20,000 luminaires is about 2 MB
MAX_SITE_FILE_BYTES = 20_000_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------ protocol families
#
# Points, profiles and endpoints come in one model per protocol, tagged by ``protocol``:
# ``ModbusPoint``/``OpcUaPoint``, ``ModbusProfile``/``OpcUaProfile``, ``ModbusEndpoint``/
# ``OpcUaEndpoint``. A file rarely names the tag: a profile's points are of the profile's
# protocol by their type, and a device's endpoint gets its profile's protocol
# (``SiteConfig._endpoint_protocols``). Only where nothing says it (a point or an endpoint
# validated on its own) is the protocol told by the fields only one protocol's model has.


@dataclass(frozen=True)
class _Family:
    """The models of one kind (points, profiles, endpoints), one per protocol."""

    noun: str
    members: dict[str, type[_Tagged]]
    #: per protocol, the fields only its model has, with their defaults (``...``: required)
    own: dict[str, dict[str, Any]]
    #: whether a member without ``protocol`` may be told by its own fields (not profiles)
    infer: bool
    #: whether another protocol's field at its default is dropped rather than refused (points
    #: and profiles: earlier versions dumped them so; endpoints never carried one)
    drop_defaults: bool

    def protocol_of(self, v: Any) -> str | None:
        """The tag of ``v``: its ``protocol``, else the one protocol whose own fields it sets
        (``None`` counts as unset), else ``None`` (pydantic then reports the family's error)."""
        if isinstance(v, BaseModel):
            return getattr(v, "protocol", None)
        if not isinstance(v, dict):
            return None
        named = v.get("protocol")
        if named is not None:
            return named if isinstance(named, str) and named in self.members else None
        return self.inferred(v) if self.infer else None

    def inferred(self, v: Mapping[str, Any]) -> str | None:
        """The one protocol whose own fields ``v`` sets to something but their default."""
        found = [
            p
            for p, fields in self.own.items()
            if any(k in fields and v[k] is not None and v[k] != fields[k] for k in v)
        ]
        return found[0] if len(found) == 1 else None


#: family and protocol of each member model; filled by :func:`_family`
_FAMILY_OF: dict[type[BaseModel], tuple[_Family, str]] = {}
#: the tagged union of a family's base class (``PointSpec``, ``DeviceProfile``), for dispatch
_UNION_OF: dict[type[BaseModel], TypeAdapter[Any]] = {}


class _Tagged(_Model):
    """A model of one protocol's family, or the base class of a family.

    Rule: a field that belongs to another protocol's model of the family is refused, naming
    both (``node is for opcua points only``); on a point or a profile, unless it holds that
    field's default (``node: null``, ``word_order: big``, ``write_function: multiple``): files
    dumped by earlier versions, whose points and profiles carried every protocol's fields, load
    unchanged. Validating or
    calling a family's *base class* (``PointSpec(table="input", address=0)``,
    ``DeviceProfile.model_validate({...})``) builds the model of the protocol the data names.
    """

    #: for messages: what a model of this protocol is given by
    has: ClassVar[str] = ""

    @model_validator(mode="wrap")
    @classmethod
    def _as_its_protocol(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        union = _UNION_OF.get(cls)
        return handler(data) if union is None else union.validate_python(data)

    def __new__(cls, *args: Any, **data: Any) -> Any:
        union = _UNION_OF.get(cls)
        if union is None or not data:  # a member, or pydantic making an empty instance
            return super().__new__(cls)
        return union.validate_python(data)  # __init__ then runs on it, as the member's own

    @model_validator(mode="before")
    @classmethod
    def _no_other_protocols_fields(cls, data: Any) -> Any:
        known = _FAMILY_OF.get(cls)
        if known is None or not isinstance(data, dict):
            return data
        family, mine = known
        named = data.get("protocol")
        if named is not None and named != mine:
            raise ValueError(f"protocol is {named!r}, but this {family.noun} is {mine} ({cls.has})")
        foreign: dict[str, list[str]] = {}
        dropped: list[str] = []
        for other, fields in family.own.items():
            if other == mine:
                continue
            for key in fields.keys() & data.keys():
                if key in cls.model_fields:
                    continue
                if family.drop_defaults and (data[key] is None or data[key] == fields[key]):
                    dropped.append(key)  # an earlier version's dump: harmless
                else:
                    foreign.setdefault(other, []).append(key)
        if foreign:
            other, keys = next(iter(foreign.items()))
            keys.sort(key=list(data).index)
            verb = "is" if len(keys) == 1 else "are"
            hint = f"; {cls.has}" if cls.has else ""
            raise ValueError(f"{', '.join(keys)} {verb} for {other} {family.noun}s only{hint}")
        if dropped:
            return {k: v for k, v in data.items() if k not in dropped}
        return data


def _family(
    noun: str,
    base: type[BaseModel] | None,
    *members: type[_Tagged],
    infer: bool = True,
    drop_defaults: bool = True,
) -> _Family:
    """Register ``members`` (one per protocol, each with a ``protocol`` literal) as a family."""
    shared = set(base.model_fields) if base is not None else set()
    tagged: dict[str, type[_Tagged]] = {}
    own: dict[str, dict[str, Any]] = {}
    for m in members:
        (protocol,) = get_args(m.model_fields["protocol"].annotation)
        tagged[protocol] = m
        own[protocol] = {
            name: ... if f.is_required() else f.default
            for name, f in m.model_fields.items()
            if name != "protocol" and name not in shared
        }
    family = _Family(noun, tagged, own, infer, drop_defaults)
    for protocol, m in tagged.items():
        _FAMILY_OF[m] = (family, protocol)
    return family


def _discriminator(family: _Family, error: str) -> Discriminator:
    """Tags a family's union by protocol; ``error`` when the protocol cannot be told
    (:func:`validate_site` says which protocol was named, when an unknown one was)."""
    return Discriminator(
        family.protocol_of, custom_error_type=_PROTOCOL_ERROR, custom_error_message=error
    )


#: the error type of a member whose protocol cannot be told, or is unknown
_PROTOCOL_ERROR = "protocol"


# --------------------------------------------------------------------------- device points


class PointSpec(_Tagged):
    """One data point of a device profile: where it lives, how it is encoded, what it means.

    ``value = raw * scale + offset`` in the unit named by ``unit``; writes use the inverse.
    ``min``/``max`` are the physical range for measurements and the command bounds for
    writable points. ``failsafe`` is the value a writable point is driven to when data is lost.

    The base of :class:`ModbusPoint` and :class:`OpcUaPoint`, which add where the point lives;
    code that handles points of either protocol reads every location attribute on any point
    (``table``, ``address``, ``bit``, ``word_order``, ``byte_order``, ``node``, ``browse_path``):
    the other protocol's are ``None`` (byte orders ``big``).
    """

    protocol: ProtocolName = Field(description="the point's protocol")
    type: DataType = Field(default="u16", description="data type on the wire")
    scale: float = Field(
        default=1.0, description="`value = raw × scale + offset`, in `unit`; not 0"
    )
    offset: float = Field(default=0.0, description="added after scaling, in `unit`")
    unit: str = Field(default="", description="unit of the scaled value (free text, e.g. `W`)")
    kind: Literal["measurement", "counter", "setpoint"] = Field(
        default="measurement",
        description="`counter`: cumulative (rates are taken modulo its wrap); `setpoint`: a "
        "commanded value",
    )
    writable: bool = Field(default=False, description="Laterne may write this point")
    min: float | None = Field(
        default=None,
        description="lowest physical value, in `unit`; for a writable point the lowest command "
        "(required there); a reading below it is faulty",
    )
    max: float | None = Field(
        default=None,
        description="highest physical value, in `unit`; for a writable point the highest "
        "command (required there); a reading above it is faulty",
    )
    failsafe: float | None = Field(
        default=None,
        description="value, in `unit`, a writable point is driven to when its data is lost; "
        "within [min, max]",
    )

    if TYPE_CHECKING:  # every member has them: as its fields, or as None for the other's

        @property
        def table(self) -> ModbusTable | None: ...
        @property
        def address(self) -> int | None: ...
        @property
        def bit(self) -> int | None: ...
        @property
        def word_order(self) -> ByteOrder: ...
        @property
        def byte_order(self) -> ByteOrder: ...
        @property
        def node(self) -> str | None: ...
        @property
        def browse_path(self) -> str | None: ...

    @field_validator("scale")
    @classmethod
    def _scale_nonzero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("scale must not be 0 (writes divide by it)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.writable and (self.min is None or self.max is None):
            raise ValueError("a writable point needs min and max (its command bounds)")
        if self.failsafe is not None:
            lo, hi = self.bounds
            if not lo <= self.failsafe <= hi:
                raise ValueError(f"failsafe {self.failsafe} is outside [{self.min}, {self.max}]")
        if self.kind == "counter" and self.type not in ("u16", "u32", "u64", "f32", "f64"):
            raise ValueError("a counter must be u16, u32, u64 (wrapping) or f32/f64 (not wrapping)")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        """``(min, max)`` in ``unit``, with ``-inf``/``+inf`` for an open end.

        The one place the open-bounds idiom lives: every "is this value within the point's
        range" check (readings, commands, failsafe, the layout's clamp bounds) reads it here.
        """
        lo = self.min if self.min is not None else -math.inf
        hi = self.max if self.max is not None else math.inf
        return lo, hi

    @property
    def register_count(self) -> int:
        """Number of 16-bit registers (or bits, for coils) the point spans on Modbus."""
        return REGISTER_COUNT[self.type]


class ModbusPoint(PointSpec):
    """A point of a Modbus profile: a table, a 0-based protocol address, and for values wider
    than a register the order of words and bytes; optionally one bit of a ``u16`` register."""

    has: ClassVar[str] = "a modbus profile's points have table and address"

    protocol: Literal["modbus"] = Field(
        default="modbus", description="`modbus`; may be left out (the profile's protocol)"
    )
    table: ModbusTable = Field(description="Modbus table the point lives in")
    address: int = Field(ge=0, le=65535, description="Modbus protocol address, 0-based")
    bit: int | None = Field(
        default=None, ge=0, le=15, description="bit field: this bit of a u16 register (0 = LSB)"
    )
    word_order: ByteOrder = Field(
        default="big", description="order of the 16-bit registers of a 32/64-bit value"
    )
    byte_order: ByteOrder = Field(
        default="big", description="order of the two bytes within each register"
    )

    @model_validator(mode="after")
    def _registers(self) -> Self:
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
        return self

    @property
    def node(self) -> None:
        """No OPC-UA NodeId: a Modbus point."""
        return None

    @property
    def browse_path(self) -> None:
        """No OPC-UA browse path: a Modbus point."""
        return None


class OpcUaPoint(PointSpec):
    """A point of an OPC-UA profile: a node, by NodeId or by browse path. The driver writes a
    value in the node's own data type, not in ``type`` (which the emulator serves)."""

    has: ClassVar[str] = "an opcua profile's points have node or browse_path"

    protocol: Literal["opcua"] = Field(
        default="opcua", description="`opcua`; may be left out (the profile's protocol)"
    )
    node: str | None = Field(
        default=None,
        description="OPC-UA NodeId: `[ns=<index>;|nsu=<uri>;]<i|s|g|b>=<id>`, "
        "e.g. `ns=2;s=Room1.Temperature`",
    )
    browse_path: str | None = Field(
        default=None,
        description="browse path from the Objects folder, instead of `node`: steps "
        "`<namespace index>:<browse name>` joined by `/`, e.g. `2:School/2:Temperature`",
    )

    @field_validator("node")
    @classmethod
    def _node_id(cls, v: str | None) -> str | None:
        if v is not None:
            parse_node_id(v)  # AddressError (a ValueError) names what is wrong
        return v

    @field_validator("browse_path")
    @classmethod
    def _browse_path(cls, v: str | None) -> str | None:
        if v is not None:
            parse_browse_path(v)
        return v

    @model_validator(mode="after")
    def _one_address(self) -> Self:
        if self.node is not None and self.browse_path is not None:
            raise ValueError("give either node or browse_path, not both")
        if self.node is None and self.browse_path is None:
            raise ValueError("an opcua point needs node or browse_path (neither is given)")
        return self

    @property
    def table(self) -> None:
        """No Modbus table: an OPC-UA point."""
        return None

    @property
    def address(self) -> None:
        """No Modbus address: an OPC-UA point."""
        return None

    @property
    def bit(self) -> None:
        """No bit field: an OPC-UA point."""
        return None

    @property
    def word_order(self) -> ByteOrder:
        """``big``: without meaning for OPC-UA (a node's value is not registers)."""
        return "big"

    @property
    def byte_order(self) -> ByteOrder:
        """``big``: without meaning for OPC-UA."""
        return "big"


_POINTS = _family("point", PointSpec, ModbusPoint, OpcUaPoint)
#: a point of either protocol, told by ``protocol`` or by its own fields (a point on its own)
Point = Annotated[
    Annotated[ModbusPoint, Tag("modbus")] | Annotated[OpcUaPoint, Tag("opcua")],
    _discriminator(
        _POINTS,
        "cannot tell the point's protocol: give protocol (modbus or opcua), table and address "
        "(Modbus), or node or browse_path (OPC-UA)",
    ),
]
_UNION_OF[PointSpec] = TypeAdapter(Point)


# ------------------------------------------------------------------------- device profiles


def _points_field() -> Any:
    return Field(min_length=1, description="the device's data points by name (see below)")


class DeviceProfile(_Tagged):
    """A device model, declared once and referenced by devices: protocol plus point map.

    The base of :class:`ModbusProfile` and :class:`OpcUaProfile`; the protocol decides which.
    """

    protocol: ProtocolName = Field(description="how the device is reached: `modbus` or `opcua`")
    description: str = Field(default="", description="free text")
    points: Mapping[str, PointSpec] = _points_field()


class ModbusProfile(DeviceProfile):
    """A Modbus device model: its points and how to read and write them."""

    protocol: Literal["modbus"] = Field(description="how the device is reached: `modbus`")
    points: dict[str, ModbusPoint] = _points_field()
    # read planning: merge reads across gaps up to this many registers, never read more than
    # this many registers in one request (the protocol allows 125)
    max_gap_registers: int = Field(
        default=8,
        ge=0,
        le=124,
        description="read through gaps of up to this many unused registers to merge reads into "
        "one request [registers]",
    )
    max_read_registers: int = Field(
        default=125, ge=1, le=125, description="most registers read by one request [registers]"
    )
    write_function: Literal["single", "multiple"] = Field(
        default="multiple",
        description="function code of register writes: `multiple` (16, Write Multiple "
        "Registers) or `single` (06, Write Single Register, for controllers that accept only "
        "that; then no writable point may span more than one register); coils use 05 either way",
    )

    @model_validator(mode="after")
    def _writes_and_overlaps(self) -> Self:
        if self.write_function == "single":
            for name, p in self.points.items():
                if p.writable and p.table == "holding" and p.register_count > 1:
                    raise ValueError(
                        f"point {name!r} ({p.type}) spans {p.register_count} registers, but "
                        "write_function single (function code 06) writes one register; use "
                        "write_function: multiple, or a 16-bit type"
                    )
        _check_overlaps(self.points)
        return self


class OpcUaProfile(DeviceProfile):
    """An OPC-UA device model: its points, each a node of the server."""

    protocol: Literal["opcua"] = Field(description="how the device is reached: `opcua`")
    points: dict[str, OpcUaPoint] = _points_field()


def _check_overlaps(points: Mapping[str, ModbusPoint]) -> None:
    spans: dict[str, list[tuple[int, int, str]]] = {}
    for name, p in points.items():
        if p.bit is not None:
            continue  # bit fields share their register with other bit fields
        spans.setdefault(p.table, []).append((p.address, p.address + p.register_count, name))
    for table, items in spans.items():
        items.sort()
        for (_s0, e0, n0), (s1, _e1, n1) in pairwise(items):
            if s1 < e0:
                raise ValueError(f"points {n0!r} and {n1!r} overlap in {table} registers")


#: a profile's protocol is always named, never told by its fields
_PROFILES = _family("profile", DeviceProfile, ModbusProfile, OpcUaProfile, infer=False)
Profile = Annotated[
    Annotated[ModbusProfile, Tag("modbus")] | Annotated[OpcUaProfile, Tag("opcua")],
    _discriminator(_PROFILES, "a profile needs protocol: modbus or opcua"),
]
_UNION_OF[DeviceProfile] = TypeAdapter(Profile)


# --------------------------------------------------------------------------------- devices


class ModbusEndpoint(_Tagged):
    """A Modbus TCP unit: ``host:port`` (shared by every unit behind one gateway) and unit id."""

    has: ClassVar[str] = "a modbus endpoint has host, port and unit_id"

    protocol: Literal["modbus"] = Field(
        default="modbus", description="`modbus`; may be left out (the device profile's protocol)"
    )
    host: str = Field(
        description="IPv4/IPv6 address or DNS host name, without the port (that is `port`)"
    )
    port: int = Field(default=502, ge=1, le=65535, description="TCP port")
    unit_id: int = Field(
        default=1, ge=0, le=255, description="Modbus unit id (slave id behind a gateway)"
    )
    max_in_flight: int = Field(
        default=1, ge=1, le=16, description="requests in flight on this host:port (gateways: 1)"
    )

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return check_host(v)


class OpcUaEndpoint(_Tagged):
    """An OPC-UA server. Certificate paths are relative to the site file; credentials are
    never in the YAML: ``username_env``/``password_env`` name environment variables."""

    has: ClassVar[str] = "an opcua endpoint has url"

    protocol: Literal["opcua"] = Field(
        default="opcua", description="`opcua`; may be left out (the device profile's protocol)"
    )
    url: str = Field(description="`opc.tcp://HOST:PORT/path`")
    security: Literal["none", "sign", "sign_and_encrypt"] = Field(
        default="none", description="message security mode"
    )
    security_policy: Literal["Basic256Sha256"] = Field(
        default="Basic256Sha256", description="security policy when `security` is not `none`"
    )
    certificate: str | None = Field(
        default=None, description="our client certificate (PEM or DER), relative to the site file"
    )
    private_key: str | None = Field(
        default=None, description="its private key (PEM), relative to the site file"
    )
    server_certificate: str | None = Field(
        default=None, description="the server's certificate, to trust it; relative to the site file"
    )
    username_env: str | None = Field(
        default=None, description="environment variable holding the user name"
    )
    password_env: str | None = Field(
        default=None, description="environment variable holding the password"
    )
    subscribe: bool = Field(default=True, description="data-change subscriptions, else polling")
    publishing_interval_ms: float = Field(
        default=1000.0,
        gt=0,
        description="subscription publishing interval; at most half the device's staleness "
        "limit [ms]",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v, schemes=("opc.tcp",), require_port=True)

    @model_validator(mode="after")
    def _security(self) -> Self:
        if self.security != "none" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"security {self.security} needs certificate and private_key")
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("username_env and password_env go together")
        return self


_ENDPOINTS = _family("endpoint", None, ModbusEndpoint, OpcUaEndpoint, drop_defaults=False)
#: an endpoint of either protocol; in a site, its device's profile's (``SiteConfig``)
Endpoint = Annotated[
    Annotated[ModbusEndpoint, Tag("modbus")] | Annotated[OpcUaEndpoint, Tag("opcua")],
    _discriminator(_ENDPOINTS, "expected a mapping: host/port/unit_id (Modbus) or url (OPC-UA)"),
]


class Device(_Model):
    """One field device: which profile it is and where it is reached."""

    id: Annotated[str, Field(pattern=_ID, description="unique id: lower case, digits, `_`, `-`")]
    profile: str = Field(description="name of its entry in `profiles`")
    endpoint: Endpoint = Field(
        description="where the device is reached, in its profile's protocol: Modbus TCP "
        "(`host`, …) or OPC-UA (`url`, …), see the two tables below"
    )
    poll_interval_s: float = Field(default=10.0, gt=0, description="time between two polls [s]")
    timeout_s: float = Field(
        default=2.0, gt=0, description="connect and answer timeout of each request [s]"
    )
    stale_after_polls: int = Field(
        default=3, ge=1, description="a value older than this many poll intervals is stale"
    )

    @property
    def stale_after_s(self) -> float:
        return self.poll_interval_s * self.stale_after_polls


class PointRef(_Model):
    """A reference to one point of one device, written ``device.point`` in YAML."""

    device: str = Field(description="device id")
    point: str = Field(description="point name in the device's profile")

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

    min_flow_veh_h: float = Field(
        ge=0, description="lowest traffic flow of the band; the first band starts at 0 [veh/h]"
    )
    lighting_class: str = Field(
        description="EN 13201-2 class the band needs (`M1`…`M6`, `C0`…`C5`, `P1`…`P6`), or "
        "`unlit` where the lighting plan needs no light; one family per segment"
    )
    dim_pct: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="dim level of the band; when left out, the lowest level that delivers the "
        "class with the segment's `design_class` (required then); a level that delivers less "
        "than the class is refused [%]",
    )


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")


def _minute_of_day(hhmm: str) -> int:
    """Minutes since local midnight of a validated ``"HH:MM"`` (``"24:00"``: 1440)."""
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _time_not_a_number(v: Any) -> Any:
    """Refuse a time YAML read as a number: YAML 1.1 reads an unquoted 21:00 as 1260."""
    if isinstance(v, int) and not isinstance(v, bool):
        read_as = f" (YAML reads an unquoted {v // 60}:{v % 60:02d} as {v})" if v >= 60 else ""
        raise ValueError(
            f'expected HH:MM, got the number {v}{read_as}; write times in quotes, e.g. "21:00"'
        )
    return v


class Curfew(_Model):
    """A reduction the lighting plan allows in a local-time window, e.g. insect-friendly light
    after 01:00 on a residential street: the level is capped at ``max_dim_pct`` or at the level
    of ``lighting_class`` — never below the level the class the traffic requires needs."""

    start: str = Field(description='local time `"HH:MM"` (quoted), inclusive')
    end: str = Field(
        description='local time `"HH:MM"` (quoted), exclusive; before `start`: past midnight'
    )
    days: list[Weekday] | None = Field(
        default=None,
        min_length=1,
        description="weekdays the window starts on, `mon` … `sun`; left out: every day",
    )
    max_dim_pct: float | None = Field(
        default=None, ge=0, le=100, description="the cap on the level [%]; or `lighting_class`"
    )
    lighting_class: str | None = Field(
        default=None,
        description="the cap as an EN 13201-2 class of the segment's family (needs the "
        "segment's `design_class`); or `max_dim_pct`",
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _not_a_number(cls, v: Any) -> Any:
        return _time_not_a_number(v)

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v) or v == "24:00":
            raise ValueError(f"expected HH:MM from 00:00 to 23:59, got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_cap(self) -> Curfew:
        if (self.max_dim_pct is None) == (self.lighting_class is None):
            raise ValueError("a curfew needs exactly one of max_dim_pct and lighting_class")
        if self.start == self.end:
            raise ValueError(f"start and end are both {self.start}: an empty window")
        return self

    @property
    def start_minute(self) -> int:
        return _minute_of_day(self.start)

    @property
    def end_minute(self) -> int:
        return _minute_of_day(self.end)


class Segment(_Model):
    """A street segment: luminaires dimmed together by one controller."""

    id: Annotated[str, Field(pattern=_ID, description="unique id: lower case, digits, `_`, `-`")]
    name: str = Field(default="", description="street name, free text")
    road_type: RoadType = Field(description="kind of road")
    luminaires: int = Field(gt=0, le=100_000, description="number of luminaires")
    rated_power_w: float = Field(gt=0, le=2000, description="rated power of one luminaire [W]")
    controller: PointRef = Field(description="writable dim level of the segment controller")
    power: PointRef | None = Field(default=None, description="measured power of the segment")
    failed_lamps: PointRef | None = Field(
        default=None, description="count of failed lamps the segment controller reports"
    )
    energy: PointRef | None = Field(default=None, description="energy counter of the segment")
    counters: list[PointRef] = Field(default_factory=list, description="vehicle count channels")
    bands: list[LightingBand] = Field(
        min_length=1, description="traffic bands, by strictly increasing `min_flow_veh_h`"
    )
    design_class: str | None = Field(
        default=None,
        description="EN 13201-2 class the luminaires deliver at 100 % (maintained value, "
        "maintenance factor included), from the lighting design; with it every band's level "
        "is checked against its class, and a band may leave out `dim_pct`",
    )
    standby_share: float = Field(
        default=0.08,
        ge=0,
        lt=1,
        description="the LED driver's own draw as a share of `rated_power_w`, drawn at any lit "
        "level: power = standby + (rated − standby) × light fraction (0 when switched off)",
    )
    constant_light_output: bool = Field(
        default=False,
        description="the drivers have constant light output (CLO): new luminaires draw "
        "`clo_start_share` of their non-standby power for the maintained light, rising to "
        "all of it at `clo_life_h` burning hours",
    )
    clo_start_share: float = Field(
        default=0.85,
        gt=0,
        le=1,
        description="with CLO, share of the non-standby power a new luminaire draws (the lumen "
        "maintenance factor of the design)",
    )
    clo_life_h: float = Field(
        default=100_000.0,
        gt=0,
        description="with CLO, burning hours at which the driver reaches full rated power [h]",
    )
    min_dim_pct: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="lowest dim level the segment may get; 0 allows off [%]",
    )
    max_dim_pct: float = Field(
        default=100.0, ge=0, le=100, description="highest dim level the segment may get [%]"
    )
    failsafe_dim_pct: float = Field(
        default=100.0,
        ge=0,
        le=100,
        description="dim level on missing or stale traffic data; within [min, max] [%]",
    )
    on_offset_min: float = Field(
        default=0.0,
        ge=-120,
        le=120,
        description="switch on this long after the sun sinks below `daylight_elevation_deg` "
        "(negative: before) [min]",
    )
    off_offset_min: float = Field(
        default=0.0,
        ge=-120,
        le=120,
        description="switch off this long after the sun rises above `daylight_elevation_deg` "
        "(negative: before) [min]",
    )
    lux: PointRef | None = Field(
        default=None,
        description="a light sensor (measured illuminance [lx]) that, while its reading is good, "
        "decides switching instead of the sun",
    )
    lux_on_below: float = Field(
        default=30.0, gt=0, le=1000, description="with `lux`: switch on below this [lx]"
    )
    lux_off_above: float = Field(
        default=60.0, gt=0, le=1000, description="with `lux`: switch off above this [lx]"
    )
    curfews: list[Curfew] = Field(
        default_factory=list,
        description="reductions the lighting plan allows by time of night, never below the "
        "class the traffic requires",
    )

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
        if self.lux_on_below >= self.lux_off_above:
            raise ValueError(
                "lux_on_below must be below lux_off_above (the gap is the switching hysteresis)"
            )
        return self

    def band_levels_pct(self) -> list[float]:
        """Each band's dim level: as given, or the lowest that delivers its class with the
        design class (raised to ``min_dim_pct`` unless the band is ``unlit``) — for a site that
        passed validation."""
        out: list[float] = []
        for b in self.bands:
            if b.dim_pct is not None:
                out.append(b.dim_pct)
                continue
            if self.design_class is None:
                raise ValueError("a band without dim_pct needs the segment's design_class")
            need = dim_pct_for_class(
                lighting_class(b.lighting_class), lighting_class(self.design_class)
            )
            out.append(need if need == 0 else max(need, self.min_dim_pct))
        return out

    def band_need_pct(self) -> list[float]:
        """Each band's lowest level that still delivers its class: from the class and the
        ``design_class`` where the segment has one, else the band's own level (the plan's word
        is all there is) — for a site that passed validation."""
        if self.design_class is None:
            return self.band_levels_pct()
        design = lighting_class(self.design_class)
        return [dim_pct_for_class(lighting_class(b.lighting_class), design) for b in self.bands]

    def curfew_caps_pct(self) -> list[float]:
        """Each curfew's cap on the level: as given, or the level its class needs with the
        ``design_class`` — for a site that passed validation."""
        out: list[float] = []
        for c in self.curfews:
            if c.max_dim_pct is not None:
                out.append(c.max_dim_pct)
            else:
                assert c.lighting_class is not None and self.design_class is not None
                out.append(
                    dim_pct_for_class(
                        lighting_class(c.lighting_class), lighting_class(self.design_class)
                    )
                )
        return out


# -------------------------------------------------------------------------------- buildings



class OccupancyPeriod(_Model):
    """Local-time occupancy on the given weekdays, ``start`` inclusive to ``end`` exclusive."""

    days: list[Weekday] = Field(min_length=1, description="weekdays, `mon` … `sun`")
    start: str = Field(description='local time `"HH:MM"` (quoted), inclusive')
    end: str = Field(description='local time `"HH:MM"` (quoted, `"24:00"` allowed), exclusive')

    @field_validator("start", "end", mode="before")
    @classmethod
    def _not_a_number(cls, v: Any) -> Any:
        return _time_not_a_number(v)

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
        return _minute_of_day(self.start)

    @property
    def end_minute(self) -> int:
        return _minute_of_day(self.end)

    def start_time(self) -> time:
        return time(self.start_minute // 60, self.start_minute % 60)


class Zone(_Model):
    """A heating zone of a building: its temperature, its setpoint and when it is occupied."""

    id: Annotated[
        str,
        Field(pattern=_ID, description="id, unique in its building: lower case, digits, `_`, `-`"),
    ]
    name: str = Field(default="", description="free text")
    area_m2: float = Field(default=100.0, gt=0, description="heated floor area [m²]")
    temperature: PointRef = Field(description="measured zone temperature")
    setpoint: PointRef = Field(description="writable heating setpoint")
    occupied_setpoint_c: float = Field(
        default=21.0, ge=5, le=30, description="setpoint while occupied [°C]"
    )
    setback_setpoint_c: float = Field(
        default=16.0, ge=5, le=30, description="night/weekend setback setpoint [°C]"
    )
    default_setpoint_c: float = Field(
        default=19.0, ge=5, le=30, description="fail-safe setpoint on missing or stale data [°C]"
    )
    min_setpoint_c: float = Field(
        default=12.0, ge=5, le=30, description="no setpoint below this is ever commanded [°C]"
    )
    max_setpoint_c: float = Field(
        default=24.0, ge=5, le=30, description="no setpoint above this is ever commanded [°C]"
    )
    occupancy: list[OccupancyPeriod] = Field(
        default_factory=list, description="weekly occupancy periods (local time); none: never"
    )

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
    """A public building with heating zones and, optionally, its heating meter."""

    id: Annotated[str, Field(pattern=_ID, description="unique id: lower case, digits, `_`, `-`")]
    name: str = Field(default="", description="free text")
    heating_power: PointRef | None = Field(default=None, description="measured heating power")
    heating_energy: PointRef | None = Field(
        default=None, description="heating energy counter (a point of kind counter)"
    )
    outdoor_temperature: PointRef | None = Field(
        default=None, description="outdoor temperature at the building"
    )
    zones: list[Zone] = Field(min_length=1, description="heating zones (see below)")


# ----------------------------------------------------------------------------------- site


class SiteInfo(_Model):
    """The site itself: its name, local time zone and position (for the sun)."""

    name: str = Field(description="free text")
    timezone: str = Field(description="IANA zone, e.g. Europe/Berlin; required, never guessed")
    latitude: float = Field(ge=-90, le=90, description="north positive [°]")
    longitude: float = Field(ge=-180, le=180, description="east positive [°]")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class Tariff(_Model):
    """Energy price and emission factor, for costs and savings."""

    energy_price_eur_per_kwh: float = Field(
        default=0.30, ge=0, description="price of electricity and heat [EUR/kWh]"
    )
    co2_kg_per_kwh: float = Field(default=0.380, ge=0, description="emission factor [kg CO₂/kWh]")


class PolicyParams(_Model):
    """Parameters of the control policy and its safety filter."""

    cycle_s: float = Field(default=10.0, gt=0, description="control cycle [s]")
    stale_after_s: float = Field(
        default=60.0,
        gt=0,
        description="a traffic-flow estimate without a good count for this long starts over "
        "(a reading's own staleness is its device's stale_after_polls) [s]",
    )
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
    compliance_interval_s: float = Field(
        default=900.0,
        gt=0,
        description="interval over which the counted traffic is judged against the lighting "
        "class (the compliance record's interval) [s]",
    )
    flow_margin_z: float = Field(
        default=3.0,
        ge=0,
        le=10,
        description="the band follows the flow estimate plus this many standard deviations of "
        "the counting noise over one `compliance_interval_s` (Poisson): the traffic of the "
        "coming interval may be higher than the average says; 0 turns the margin off",
    )
    flow_profile_weight: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="the policy learns, per counter and 15-minute slot of a weekday, Saturday "
        "or Sunday/holiday, the flow it counted there on earlier days (an exponential average "
        "with this weight for the newest day) and lights the coming interval for at least that "
        "flow, so a daily rise (the morning rush) is lit before it is counted; 0 turns it off",
    )
    flow_trend_horizon_s: float = Field(
        default=900.0,
        ge=0,
        description="a rising flow estimate is extrapolated this far ahead along its smoothed "
        "trend before the band is chosen (a falling one is not: more light is the safe side); "
        "0 turns it off [s]",
    )


class InfluxConfig(_Model):
    """An InfluxDB (v2 write API) server that receives a copy of the history. The token is read
    from the environment variable ``token_env``, never from the YAML."""

    url: str = Field(description="`http://HOST[:PORT]` or `https://…` of the server")
    org: str = Field(default="laterne", description="InfluxDB organisation")
    bucket: str = Field(default="laterne", description="InfluxDB bucket")
    token_env: str | None = Field(
        default=None, description="environment variable holding the API token"
    )
    batch_size: int = Field(
        default=5000,
        ge=1,
        description="lines per write request; a batch goes out as soon as this many wait [lines]",
    )
    flush_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="a smaller batch goes out at the latest this long after the previous send [s]",
    )
    outbox_path: str = Field(
        default="var/influx-outbox.sqlite",
        description="durable outbox (SQLite), relative to the working directory",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v, schemes=("http", "https"), require_port=False)


class HistoryConfig(_Model):
    """Where readings, commands and quality changes are recorded, and for how long."""

    path: str = Field(
        default="var/laterne.sqlite",
        description="SQLite history file, relative to the working directory",
    )
    raw_retention_days: float = Field(
        default=30,
        gt=0,
        description="raw readings older than this are folded into aggregates [days]",
    )
    aggregate_minutes: int = Field(
        default=15, ge=1, le=1440, description="length of one aggregate bucket [min]"
    )
    aggregate_retention_days: float = Field(
        default=3650,
        gt=0,
        description="aggregate buckets ending before this age are deleted [days]",
    )
    influxdb: InfluxConfig | None = Field(
        default=None, description="optional InfluxDB mirror (see below)"
    )


class SiteConfig(_Model):
    """One site file."""

    site: SiteInfo = Field(description="name, time zone, position")
    profiles: dict[str, Profile] = Field(description="device models by name")
    devices: list[Device] = Field(min_length=1, description="field devices")
    segments: list[Segment] = Field(default_factory=list, description="street segments")
    buildings: list[Building] = Field(default_factory=list, description="heated buildings")
    tariff: Tariff = Field(default_factory=Tariff, description="prices and emissions")
    policy: PolicyParams = Field(default_factory=PolicyParams, description="control parameters")
    history: HistoryConfig = Field(default_factory=HistoryConfig, description="recording")

    # (the devices list it was built from, device id -> position in it), built on first use
    _device_index: tuple[list[Device], dict[str, int]] | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _endpoint_protocols(cls, data: Any) -> Any:
        """A device's endpoint is of its profile's protocol: each endpoint that names no
        ``protocol`` gets the one of its device's profile, unless it has fields that only
        another protocol's endpoint has (then it keeps that one, and the cross-check says the
        two disagree). The input is not changed: changed devices are copies."""
        if not isinstance(data, dict):
            return data
        profiles, devices = data.get("profiles"), data.get("devices")
        if not isinstance(profiles, dict) or not isinstance(devices, list):
            return data
        protocol_of = {
            name: p.get("protocol") if isinstance(p, dict) else getattr(p, "protocol", None)
            for name, p in profiles.items()
        }
        out: list[Any] = []
        changed = False
        for d in devices:
            ep = d.get("endpoint") if isinstance(d, dict) else None
            if isinstance(ep, dict) and ep.get("protocol") is None:
                profile = d.get("profile")
                proto = protocol_of.get(profile) if isinstance(profile, str) else None
                if proto in _ENDPOINTS.members and _ENDPOINTS.inferred(ep) in (None, proto):
                    d = {**d, "endpoint": {**ep, "protocol": proto}}
                    changed = True
            out.append(d)
        return {**data, "devices": out} if changed else data

    def device(self, device_id: str) -> Device:
        """The device with this id (``KeyError`` if there is none), in constant time."""
        cached = self._device_index
        if cached is None or cached[0] is not self.devices:  # first use, or a changed copy
            index: dict[str, int] = {}
            for i, d in enumerate(self.devices):
                index.setdefault(d.id, i)
            cached = self._device_index = (self.devices, index)
        return self.devices[cached[1][device_id]]

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
    """Every broken reference and every conflict between entries, in one pass over each list
    (dictionaries by id and by point, so the work grows linearly with the site)."""
    ids: dict[str, int] = {}
    known_profiles = ""
    for i, d in enumerate(cfg.devices):
        if d.id in ids:
            yield ConfigIssue(("devices", i, "id"), f"duplicate device id {d.id!r}")
        ids[d.id] = i
        if d.profile not in cfg.profiles:
            known_profiles = known_profiles or ", ".join(sorted(cfg.profiles))  # sorted once
            yield ConfigIssue(
                ("devices", i, "profile"), f"unknown profile {d.profile!r}; known: {known_profiles}"
            )
            continue
        proto = cfg.profiles[d.profile].protocol
        if d.endpoint.protocol != proto:
            yield ConfigIssue(
                ("devices", i, "endpoint"),
                f"profile {d.profile!r} is {proto}, but this endpoint is {d.endpoint.protocol}; "
                f"{_ENDPOINTS.members[proto].has}",
            )
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
        if s.failed_lamps is not None:
            yield from ref(("segments", i, "failed_lamps"), s.failed_lamps, want="any")
        if s.lux is not None:
            yield from ref(("segments", i, "lux"), s.lux, want="any")
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
        yield from _check_curfews(i, s)
        yield from _check_band_classes(i, s)
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


def _check_band_classes(i: int, s: Segment) -> Iterator[ConfigIssue]:
    """Every class an EN 13201-2 class (or ``unlit``), one family per segment, and every band's
    level delivering its class with the segment's design class."""
    families: dict[str, int] = {}
    known = True
    for j, b in enumerate(s.bands):
        try:
            c = lighting_class(b.lighting_class)
        except UnknownLightingClass as exc:
            known = False
            yield ConfigIssue(("segments", i, "bands", j, "lighting_class"), str(exc))
            continue
        if c.family:
            families.setdefault(c.family, j)
    if len(families) > 1:
        first = ", ".join(f"{f} (band {j})" for f, j in families.items())
        yield ConfigIssue(
            ("segments", i, "bands"),
            f"a segment's classes must be of one family (M, C or P); these bands mix {first}",
        )
        return
    design = None
    if s.design_class is not None:
        try:
            design = lighting_class(s.design_class)
        except UnknownLightingClass as exc:
            yield ConfigIssue(("segments", i, "design_class"), str(exc))
            return
        if design.name == OFF:
            yield ConfigIssue(("segments", i, "design_class"), "design_class cannot be `unlit`")
            return
        family = next(iter(families), design.family)
        if design.family != family:
            yield ConfigIssue(
                ("segments", i, "design_class"),
                f"design_class {design.name} is not of the bands' family {family}",
            )
            return
    if not known:
        return
    for j, b in enumerate(s.bands):
        c = lighting_class(b.lighting_class)
        if design is None:
            if b.dim_pct is None:
                yield ConfigIssue(
                    ("segments", i, "bands", j, "dim_pct"),
                    "dim_pct is required unless the segment gives its design_class",
                )
            continue
        need = dim_pct_for_class(c, design)
        if need == 0 and b.dim_pct is None and s.min_dim_pct > 0:
            yield ConfigIssue(
                ("segments", i, "bands", j, "lighting_class"),
                f"`unlit` switches the segment off, which min_dim_pct {s.min_dim_pct:g} forbids "
                "(set min_dim_pct: 0 to allow it)",
            )
        elif need > s.max_dim_pct:
            yield ConfigIssue(
                ("segments", i, "bands", j, "lighting_class"),
                f"{c.name} needs {need:g} % of design class {design.name}, above max_dim_pct "
                f"{s.max_dim_pct:g}: the segment cannot deliver it",
            )
        elif b.dim_pct is not None and b.dim_pct < need:
            got = delivered_class(b.dim_pct, design)
            yield ConfigIssue(
                ("segments", i, "bands", j, "dim_pct"),
                f"dim_pct {b.dim_pct:g} delivers {got.name} with design class {design.name}, "
                f"less than the band's {c.name}, which needs at least {need:g} %",
            )


def _check_band_levels(i: int, s: Segment) -> Iterator[ConfigIssue]:
    """A band's level must lie within the segment's bounds, or safety would silently change it."""
    lo, hi = s.min_dim_pct, s.max_dim_pct
    for j, b in enumerate(s.bands):
        path: tuple[str | int, ...] = ("segments", i, "bands", j, "dim_pct")
        if b.dim_pct is None:
            continue
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


def _check_curfews(i: int, s: Segment) -> Iterator[ConfigIssue]:
    """A curfew's cap must be a level the segment may take, or a class of its family that its
    design class can turn into a level."""
    known = [lighting_class(b.lighting_class) for b in s.bands if _known(b.lighting_class)]
    families = {c.family for c in known if c.family}
    for k, c in enumerate(s.curfews):
        if c.max_dim_pct is not None:
            if 0 < c.max_dim_pct < s.min_dim_pct or c.max_dim_pct > s.max_dim_pct:
                yield ConfigIssue(
                    ("segments", i, "curfews", k, "max_dim_pct"),
                    f"max_dim_pct {c.max_dim_pct:g} lies outside the segment's "
                    f"[{s.min_dim_pct:g}, {s.max_dim_pct:g}] %",
                )
            continue
        path: tuple[str | int, ...] = ("segments", i, "curfews", k, "lighting_class")
        assert c.lighting_class is not None  # the model allows exactly one of the two
        try:
            cls = lighting_class(c.lighting_class)
        except UnknownLightingClass as exc:
            yield ConfigIssue(path, str(exc))
            continue
        if s.design_class is None:
            yield ConfigIssue(path, "a curfew by class needs the segment's design_class")
        elif cls.family and families and cls.family not in families:
            yield ConfigIssue(
                path, f"{cls.name} is not of the segment's family {', '.join(sorted(families))}"
            )


def _known(name: str) -> bool:
    try:
        lighting_class(name)
    except UnknownLightingClass:
        return False
    return True


# ------------------------------------------------------------------------------ parsing

#: where each YAML path is: a :class:`Lines` tree from the parse, or a plain mapping of paths
LineLookup = Lines | Mapping[tuple[Any, ...], int]


def _line_for(path: tuple[Any, ...], lines: LineLookup | None) -> int | None:
    """The line of ``path`` or of its longest prefix that has one."""
    if lines is None:
        return None
    if isinstance(lines, Lines):
        return lines.line_of(path)
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return None


def parse_site(text: str, file: str = "<string>", base_dir: Path | None = None) -> SiteConfig:
    """Parse and validate a site configuration from YAML text.

    Raises
    ------
    SiteConfigError
        on characters YAML does not allow, YAML syntax errors, duplicate keys, schema errors and
        broken cross-references, each with its line.
    """
    with _gc_paused():
        try:
            data, lines = read_yaml(text)
        except YamlProblems as exc:
            raise SiteConfigError(
                file, [ConfigIssue(p.path, p.message, p.line) for p in exc.problems]
            ) from None
        if not isinstance(data, dict):
            raise SiteConfigError(file, [ConfigIssue((), "expected a mapping at the top level", 1)])
        return validate_site(data, file, lines, base_dir)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a site is built.

    Loading creates hundreds of thousands of objects and no reference cycles; with the collector
    on, its passes over the growing heap cost more than the parse itself and grow faster than the
    file (a 6.6 MB file: 7.5 s with it, 3.0 s without). Memory is still freed by reference
    counting; the collector is switched back on afterwards if, and only if, it was on before.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def validate_site(
    data: dict[str, Any],
    file: str = "<generated>",
    lines: LineLookup | None = None,
    base_dir: Path | None = None,
) -> SiteConfig:
    """Validate a site given as plain data (schema, then cross-references, then files).

    ``lines`` gives the line of each YAML path when the data came from a file (a :class:`Lines`
    from the parse, or a mapping of paths to lines); certificate paths are resolved against
    ``base_dir`` (the site file's folder) and must exist.
    """
    try:
        with _gc_paused():
            cfg = SiteConfig.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False, include_context=False):
            loc = _strip_union_tags(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == _PROTOCOL_ERROR:
                loc, msg = _protocol_issue(loc, msg, err["input"])
            issues.append(ConfigIssue(loc, msg, _line_for(loc, lines)))
        raise SiteConfigError(file, issues) from None
    problems = [ConfigIssue(i.path, i.message, _line_for(i.path, lines)) for i in _cross_check(cfg)]
    cfg, missing = _resolve_files(cfg, base_dir or Path.cwd())
    problems += [ConfigIssue(i.path, i.message, _line_for(i.path, lines)) for i in missing]
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
    """Drop the protocol tags pydantic inserts into the location of an error in a tagged union:
    after a device's ``endpoint`` (``devices.0.endpoint.modbus.port`` becomes
    ``devices.0.endpoint.port``) and after a profile's name (``profiles.school.opcua.points``
    becomes ``profiles.school.points``). Only there: a profile may well be named ``modbus``."""
    return tuple(
        p
        for n, p in enumerate(loc)
        if not (
            p in _PROTOCOLS
            and (
                (n == 3 and loc[0] == "devices" and loc[2] == "endpoint")
                or (n == 2 and loc[0] == "profiles")
            )
        )
    )


def _protocol_issue(
    loc: tuple[str | int, ...], message: str, given: Any
) -> tuple[tuple[str | int, ...], str]:
    """Where and what, for a profile or endpoint whose protocol cannot be told: an unknown
    ``protocol`` is named, at its own line; else the family's message stands."""
    named = given.get("protocol") if isinstance(given, dict) else None
    if named is None:
        return loc, message
    known = ", ".join(_PROTOCOLS)
    return (*loc, "protocol"), f"unknown protocol {str(named)[:40]!r}; known: {known}"


def load_site(path: str | Path) -> SiteConfig:
    """Read and validate one site file. Raises :class:`SiteConfigError` with file and line.

    The file must be UTF-8 text of at most :data:`MAX_SITE_FILE_BYTES`; a larger file is
    refused before it is read, a byte that is not UTF-8 (a Latin-1 ``ß`` is 0xDF) or a NUL byte
    (a binary file) is reported with its line and byte offset.
    """
    p = Path(path)
    name = str(p)
    try:
        with p.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_SITE_FILE_BYTES:
                raise SiteConfigError(name, [_too_large(size)])
            raw = f.read(MAX_SITE_FILE_BYTES + 1)  # a pipe or device may not know its size
    except OSError as exc:
        raise SiteConfigError(
            name, [ConfigIssue((), f"cannot read file: {exc.strerror or exc}")]
        ) from exc
    if len(raw) > MAX_SITE_FILE_BYTES:
        raise SiteConfigError(name, [_too_large(None)])
    return parse_site(_decode(raw, name), name, p.parent)


def _too_large(size: int | None) -> ConfigIssue:
    limit = f"{MAX_SITE_FILE_BYTES / 1e6:g} MB"
    what = f"the file is {size / 1e6:.1f} MB" if size is not None else "the file is larger"
    return ConfigIssue((), f"{what}; a site file may be at most {limit} (MAX_SITE_FILE_BYTES)")


def _decode(raw: bytes, file: str) -> str:
    """``raw`` as text, or :class:`SiteConfigError` at the first NUL byte (no text file has one:
    a binary file, or UTF-16) or else at the first byte that is not UTF-8."""
    nul = raw.find(b"\0")
    if nul != -1:
        line = raw.count(b"\n", 0, nul) + 1
        message = (
            f"byte 0x00 (NUL) at offset {nul}: this looks like a binary file (or UTF-16), not "
            "text; a site file is YAML saved as UTF-8"
        )
        raise SiteConfigError(file, [ConfigIssue((), message, line)])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start
        line = raw.count(b"\n", 0, bad) + 1
        message = f"byte 0x{raw[bad]:02x} at offset {bad} is not UTF-8; save the file as UTF-8"
        raise SiteConfigError(file, [ConfigIssue((), message, line)]) from None
