"""Device emulators: the simulated plant served over real Modbus TCP and OPC-UA on loopback.

Rule: the emulator is an I/O shell around the pure plant (:func:`~.plant.plant_step`) and nothing
else. Each :meth:`SiteEmulator.step` reads the commands clients wrote into the servers' datastores
(dim levels, setpoints), advances the plant to the given time, and writes every measured point back
— encoded independently of :mod:`laterne.drivers` (which this layer must not import), with
:mod:`struct` and the point's ``scale``/``offset``/``word_order``/``byte_order``, so the drivers'
tests against these servers are a real check of their codecs.

Theory of operation
-------------------
* One pymodbus ``ModbusTcpServer`` per Modbus ``(host, port)`` of the site config, bound on
  127.0.0.1 at that port and serving every unit id configured behind it. pymodbus 3.16 deprecates
  ``ModbusServerContext``/``ModbusDeviceContext``/``ModbusSequentialDataBlock`` (they are now thin
  wrappers that log a warning and convert to the following), so each unit is a ``SimDevice`` with
  four separate tables (coils, discrete inputs, holding, input registers). ``SimData.address`` is
  the 0-based protocol address — no +1 shift, unlike the old ``ModbusSequentialDataBlock(address)``
  which now maps to ``SimData(address - 1)``. Each table spans the profile's lowest to highest used
  address; a table the profile does not use answers "illegal address".
* One asyncua ``Server`` per OPC-UA URL, bound on 127.0.0.1 at the URL's port and path, with enough
  namespaces registered that every profile NodeId (``ns=2;s=...``) exists, typed from the point's
  ``type`` (f32 → Float, f64 → Double, i32 → Int32, u16 → UInt16, ...) and writable where the
  profile says so.
* Which point shows which plant quantity comes from the site config: segment ``power``/``energy``,
  counter channels, zone ``temperature``, building ``heating_power``/``heating_energy``/
  ``outdoor_temperature``; segment ``controller`` and zone ``setpoint`` are the commands read back.
  Every other measured point (``status``, ``failed_lamps``, ...) reads 0; other writable points
  keep whatever a client wrote. Values are converted from the plant's unit to the point's ``unit``
  (W/kW/MW, Wh/kWh/MWh); an unknown unit for a mapped point is an :class:`EmulatorError`.
* Bit fields (``bit: b`` on a u16 register) read 0 unless the site maps them to a plant quantity
  (then the bit is set when the raw value rounds to non-zero). All bit fields of one register are
  combined into one register write, so they never clobber each other; a register that also holds
  a whole-register point is that point's value, and its bits are whatever that value's bits are.
* Encoding: ``raw = (value - offset) / scale``. Counters of unsigned integer type wrap modulo
  2^bits (the plant's counts are cumulative floats that never wrap); other integers are rounded and
  clipped to the type's range. Registers hold big-endian words; ``byte_order: little`` swaps the two
  bytes in each register and ``word_order: little`` reverses the registers.
* Fault injection (:meth:`SiteEmulator.set_lamps_out`, :meth:`SiteEmulator.set_driver_stuck`):
  lamps out draw nothing (the plant's ``lamps_out``); a stuck segment's drivers hold their stuck
  level whatever the controller is told, while the controller still reads back the command. The
  ``failed_lamps`` point does not tell (a controller that cannot see its lamps): only the power
  does.
* Stopping the server of a device stops its whole endpoint (all unit ids of a gateway, or the whole
  OPC-UA server), as when the real box goes down. The plant keeps running meanwhile; on restart,
  Modbus datastores are rebuilt and refilled with the current measurements and the last commands.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.uaerrors import UaStringParsingError
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from laterne.controller.clock import Clock
from laterne.models.layout import SiteLayout
from laterne.models.site import ModbusEndpoint, PointRef, PointSpec, SiteConfig
from laterne.models.values import FloatArray

from .plant import (
    PlantParams,
    PlantState,
    building_heating_kw,
    initial_state,
    make_params,
    plant_outdoor_temp_c,
    plant_step,
    segment_power_w,
)
from .ports import LOOPBACK
from .traffic import TrafficProfile
from .weather import Weather

__all__ = [
    "EmulatorError",
    "SiteEmulator",
    "decode_registers",
    "encode_registers",
    "raw_value",
]

_log = logging.getLogger(__name__)

Source = Literal[
    "counter",
    "segment_power",
    "segment_energy",
    "zone_temp",
    "building_power",
    "building_energy",
    "outdoor_temp",
    "dim",
    "setpoint",
    "constant",
]

#: unit the plant delivers each quantity in, and the units a point may declare for it
_UNIT_FACTORS: Final[dict[str, dict[str, float]]] = {
    "power_w": {"W": 1.0, "kW": 1e3, "MW": 1e6},
    "power_kw": {"W": 1e-3, "kW": 1.0, "MW": 1e3},
    "energy_wh": {"Wh": 1.0, "kWh": 1e3, "MWh": 1e6},
    "energy_kwh": {"Wh": 1e-3, "kWh": 1.0, "MWh": 1e3},
    "temp_c": {"degC": 1.0, "°C": 1.0, "C": 1.0, "Cel": 1.0},
    "veh": {"veh": 1.0, "vehicles": 1.0, "count": 1.0},
    "pct": {"%": 1.0, "pct": 1.0, "percent": 1.0},
}
_SOURCE_QUANTITY: Final[dict[Source, str]] = {
    "counter": "veh",
    "segment_power": "power_w",
    "segment_energy": "energy_wh",
    "zone_temp": "temp_c",
    "building_power": "power_kw",
    "building_energy": "energy_kwh",
    "outdoor_temp": "temp_c",
    "dim": "pct",
    "setpoint": "temp_c",
}

_STRUCT: Final[dict[str, str]] = {
    "u16": "H", "i16": "h", "u32": "I", "i32": "i", "u64": "Q", "i64": "q", "f32": "f", "f64": "d",
}  # fmt: skip
_INT_BITS: Final[dict[str, tuple[int, bool]]] = {
    "u16": (16, False), "i16": (16, True), "u32": (32, False), "i32": (32, True),
    "u64": (64, False), "i64": (64, True),
}  # fmt: skip
_VARIANT: Final[dict[str, ua.VariantType]] = {
    "bool": ua.VariantType.Boolean,
    "u16": ua.VariantType.UInt16,
    "i16": ua.VariantType.Int16,
    "u32": ua.VariantType.UInt32,
    "i32": ua.VariantType.Int32,
    "u64": ua.VariantType.UInt64,
    "i64": ua.VariantType.Int64,
    "f32": ua.VariantType.Float,
    "f64": ua.VariantType.Double,
}
#: Modbus function code used to reach each table in the datastore
_FC: Final[dict[str, int]] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


class EmulatorError(Exception):
    """The emulator cannot serve this site: a port is taken, or a point cannot be emulated."""


# ------------------------------------------------------------------------------ point codec


def raw_value(value: float, spec: PointSpec) -> int | float | bool:
    """The raw device value of an engineering value: ``(value - offset) / scale``, typed.

    Unsigned counters wrap modulo 2^bits (after flooring); other integers are rounded and clipped
    to their type's range; floats pass through; ``bool`` is ``value != 0``.
    """
    if spec.type == "bool":
        return bool(value != 0)
    raw = (value - spec.offset) / spec.scale
    if spec.bit is not None:
        if not math.isfinite(raw):
            raise ValueError(f"cannot encode {value!r} as bit {spec.bit}")
        return 1 if round(raw) != 0 else 0
    if spec.type in ("f32", "f64"):
        return float(raw)
    bits, signed = _INT_BITS[spec.type]
    if not math.isfinite(raw):
        raise ValueError(f"cannot encode {value!r} as {spec.type}")
    if spec.kind == "counter" and not signed:
        return math.floor(raw) % (1 << bits)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return int(min(max(round(raw), lo), hi))


def encode_registers(value: float, spec: PointSpec) -> list[int]:
    """Registers holding ``value`` [engineering units] as the point declares it."""
    if spec.type == "bool":
        raise ValueError("a bool point lives in coils or discrete inputs, not registers")
    if spec.bit is not None:
        return [int(raw_value(value, spec)) << spec.bit]
    data = struct.pack(">" + _STRUCT[spec.type], raw_value(value, spec))
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if spec.byte_order == "little":
        words = [w[::-1] for w in words]
    if spec.word_order == "little":
        words.reverse()
    return [int.from_bytes(w, "big") for w in words]


def decode_registers(registers: Sequence[int], spec: PointSpec) -> float:
    """The engineering value held in ``registers``: the inverse of :func:`encode_registers`."""
    if len(registers) != spec.register_count:
        raise ValueError(f"{spec.type} needs {spec.register_count} registers, got {len(registers)}")
    if spec.bit is not None:
        return float((int(registers[0]) >> spec.bit) & 1) * spec.scale + spec.offset
    words = [int(r).to_bytes(2, "big") for r in registers]
    if spec.word_order == "little":
        words.reverse()
    if spec.byte_order == "little":
        words = [w[::-1] for w in words]
    (raw,) = struct.unpack(">" + _STRUCT[spec.type], b"".join(words))
    return float(raw) * spec.scale + spec.offset


# ------------------------------------------------------------------------------ bindings


@dataclass(frozen=True)
class _Binding:
    """One device point and the plant quantity it shows (or the command it carries)."""

    device_id: str
    point: str
    spec: PointSpec
    source: Source
    index: int  # into the plant array of that source
    factor: float  # point value = plant value × factor

    @property
    def ref(self) -> str:
        return f"{self.device_id}.{self.point}"


def _unit_factor(source: Source, spec: PointSpec, ref: str) -> float:
    if source == "constant" or spec.unit == "":
        return 1.0
    table = _UNIT_FACTORS[_SOURCE_QUANTITY[source]]
    if spec.unit not in table:
        raise EmulatorError(
            f"point {ref} has unit {spec.unit!r}; the emulator serves it in one of "
            f"{', '.join(table)}"
        )
    return table[spec.unit]


def _bindings(site: SiteConfig, layout: SiteLayout) -> dict[tuple[str, str], _Binding]:
    mapped: dict[tuple[str, str], tuple[Source, int]] = {}

    def put(ref: PointRef | None, source: Source, index: int) -> None:
        if ref is not None:
            mapped.setdefault((ref.device, ref.point), (source, index))

    for s in range(layout.n_segments):
        put(layout.segments.controller[s], "dim", s)
        put(layout.segments.power[s], "segment_power", s)
        put(layout.segments.energy[s], "segment_energy", s)
    for c, ref in enumerate(layout.channels.refs):
        put(ref, "counter", c)
    for z in range(layout.n_zones):
        put(layout.zones.setpoint[z], "setpoint", z)
        put(layout.zones.temperature[z], "zone_temp", z)
    for n in range(len(layout.buildings.ids)):
        put(layout.buildings.power[n], "building_power", n)
        put(layout.buildings.energy[n], "building_energy", n)
        put(layout.buildings.outdoor[n], "outdoor_temp", n)

    out: dict[tuple[str, str], _Binding] = {}
    for d in site.devices:
        for name, spec in site.profiles[d.profile].points.items():
            source, index = mapped.get((d.id, name), ("constant", 0))
            if source in ("dim", "setpoint") and not spec.writable:
                raise EmulatorError(f"point {d.id}.{name} carries a command but is not writable")
            if spec.writable and source not in ("dim", "setpoint", "constant"):
                raise EmulatorError(f"point {d.id}.{name} is a measurement but writable")
            factor = _unit_factor(source, spec, f"{d.id}.{name}")
            out[(d.id, name)] = _Binding(d.id, name, spec, source, index, factor)
    return out


# ------------------------------------------------------------------------------ hosts


@dataclass
class _ModbusHost:
    port: int
    units: dict[int, str]  # unit id -> device id
    points: list[tuple[int, _Binding]] = field(default_factory=list)  # (unit, binding)
    server: ModbusTcpServer | None = None
    #: bit fields grouped by register: (unit, table, address) -> bindings; registers that also
    #: hold a whole-register point are left out (that point's value decides their bits)
    bit_words: dict[tuple[int, str, int], list[_Binding]] = field(default_factory=dict)

    def group_bits(self) -> None:
        """Fill :attr:`bit_words` from :attr:`points` (call once all points are added)."""
        covered: set[tuple[int, str, int]] = set()
        for unit, b in self.points:
            spec = b.spec
            if spec.bit is None and spec.table in ("holding", "input"):
                assert spec.address is not None
                for a in range(spec.address, spec.address + spec.register_count):
                    covered.add((unit, spec.table, a))
        self.bit_words = {}
        for unit, b in self.points:
            spec = b.spec
            if spec.bit is None:
                continue
            assert spec.table is not None and spec.address is not None
            key = (unit, spec.table, spec.address)
            if key not in covered:
                self.bit_words.setdefault(key, []).append(b)

    @property
    def running(self) -> bool:
        return self.server is not None

    def sim_devices(self) -> list[SimDevice]:
        """One pymodbus device per unit id, with a table spanning the points of each table."""
        devices = []
        for unit in sorted(self.units):
            spans: dict[str, tuple[int, int]] = {}
            for u, b in self.points:
                if u != unit:
                    continue
                assert b.spec.table is not None and b.spec.address is not None
                start, end = b.spec.address, b.spec.address + b.spec.register_count
                lo, hi = spans.get(b.spec.table, (start, end))
                spans[b.spec.table] = (min(lo, start), max(hi, end))
            tables = (
                _bit_table(spans.get("coil")),
                _bit_table(spans.get("discrete")),
                _register_table(spans.get("holding")),
                _register_table(spans.get("input")),
            )
            devices.append(SimDevice(unit, simdata=tables))
        return devices


def _register_table(span: tuple[int, int] | None) -> list[SimData]:
    """Registers ``[lo, hi)`` (0-based protocol addresses), or one invalid address if unused."""
    if span is None:
        return [SimData(0, datatype=DataType.INVALID)]
    lo, hi = span
    return [SimData(lo, values=[0] * (hi - lo), datatype=DataType.REGISTERS)]


def _bit_table(span: tuple[int, int] | None) -> list[SimData]:
    """Bits ``[lo, hi)``; pymodbus needs at least one bit even in an unused table."""
    lo, hi = span if span is not None else (0, 1)
    return [SimData(lo, values=[False] * (hi - lo), datatype=DataType.BITS)]


@dataclass
class _OpcUaHost:
    url: str  # as configured
    bind_url: str  # on 127.0.0.1
    device_ids: list[str]
    server: Server
    nodes: dict[tuple[str, str], ua.NodeId] = field(default_factory=dict)
    running: bool = False


def _bind_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.port is None:
        raise EmulatorError(f"OPC-UA URL {url!r} names no port")
    return urlunsplit(parts._replace(netloc=f"{LOOPBACK}:{parts.port}"))


# ------------------------------------------------------------------------------ emulator


class SiteEmulator:
    """Every device of a site, emulated on 127.0.0.1 and fed by the simulated plant.

    Parameters
    ----------
    site : the site whose devices to serve (see :func:`~.ports.with_free_ports` for tests)
    start : aware time of the plant's initial state
    seed : seed of the plant's random vehicle counts
    counter_offset_veh : initial cumulative count of every channel [veh]; the default lies 5,000
        vehicles below 2³² so u32 counters wrap within hours of simulated traffic
    traffic, weather : plant inputs; default to the packaged measured data
    poisson : random (True) or expected (False) vehicle counts
    """

    def __init__(
        self,
        site: SiteConfig,
        *,
        start: datetime,
        seed: int = 0,
        counter_offset_veh: float = 2**32 - 5000,
        traffic: TrafficProfile | None = None,
        weather: Weather | None = None,
        poisson: bool = True,
    ) -> None:
        self._site = site
        self._layout = SiteLayout.from_config(site)
        self._params = make_params(
            site, self._layout, traffic=traffic, weather=weather, poisson=poisson
        )
        self._plant = initial_state(self._layout, start, counter_offset_veh=counter_offset_veh)
        self._rng = np.random.default_rng(seed)
        self._dim_cmd = self._plant.dim_pct.copy()  # what the controllers were told
        self._lamps_out = np.zeros(self._layout.n_segments)
        self._stuck_pct = np.full(self._layout.n_segments, np.nan)
        self._bindings = _bindings(site, self._layout)
        self._lock = asyncio.Lock()
        self._started = False

        self._modbus: dict[int, _ModbusHost] = {}
        self._opcua: dict[str, _OpcUaHost] = {}
        self._host_of: dict[str, _ModbusHost | _OpcUaHost] = {}
        self._unit_of: dict[str, int] = {}
        by_device: dict[str, list[_Binding]] = {}
        for b in self._bindings.values():
            by_device.setdefault(b.device_id, []).append(b)
        opc_devices: dict[str, list[str]] = {}
        for d in site.devices:
            ep = d.endpoint
            if isinstance(ep, ModbusEndpoint):
                host = self._modbus.setdefault(ep.port, _ModbusHost(ep.port, {}))
                if ep.unit_id in host.units:
                    raise EmulatorError(
                        f"devices {host.units[ep.unit_id]!r} and {d.id!r} share port {ep.port} "
                        f"and unit id {ep.unit_id}"
                    )
                host.units[ep.unit_id] = d.id
                self._unit_of[d.id] = ep.unit_id
                self._host_of[d.id] = host
                host.points.extend((ep.unit_id, b) for b in by_device.get(d.id, []))
            else:
                opc_devices.setdefault(ep.url, []).append(d.id)
        self._opc_devices = opc_devices
        for host in self._modbus.values():
            host.group_bits()

    # -------------------------------------------------------------------- public surface

    @property
    def layout(self) -> SiteLayout:
        return self._layout

    @property
    def params(self) -> PlantParams:
        return self._params

    @property
    def plant(self) -> PlantState:
        """The current plant state."""
        return self._plant

    @property
    def site(self) -> SiteConfig:
        return self._site

    def set_lamps_out(self, segment_id: str, lamps: int) -> None:
        """From the next step on, ``lamps`` luminaires of the segment are out (0: repaired).

        Raises
        ------
        EmulatorError
            on an unknown segment or a count outside 0 … its luminaires.
        """
        i = self._segment(segment_id)
        if not 0 <= lamps <= self._layout.segments.luminaires[i]:
            raise EmulatorError(
                f"segment {segment_id!r} has {self._layout.segments.luminaires[i]} luminaires, "
                f"not {lamps} to put out"
            )
        self._lamps_out[i] = lamps

    def set_driver_stuck(self, segment_id: str, dim_pct: float | None) -> None:
        """From the next step on, the segment's drivers hold ``dim_pct`` whatever they are told
        (None: they follow the controller again).

        Raises
        ------
        EmulatorError
            on an unknown segment or a level outside 0 … 100 %.
        """
        i = self._segment(segment_id)
        if dim_pct is not None and not 0 <= dim_pct <= 100:
            raise EmulatorError(f"a driver cannot be stuck at {dim_pct} %")
        self._stuck_pct[i] = np.nan if dim_pct is None else dim_pct

    def _segment(self, segment_id: str) -> int:
        ids = self._layout.segments.ids
        if segment_id not in ids:
            raise EmulatorError(f"unknown segment {segment_id!r}; known: {', '.join(ids)}")
        return ids.index(segment_id)

    async def start(self) -> None:
        """Bind every endpoint and publish the initial plant state.

        Raises
        ------
        EmulatorError
            if an endpoint cannot be bound; whatever had started is stopped again.
        """
        if self._started:
            raise EmulatorError("the emulator is already started")
        try:
            for host in self._modbus.values():
                await self._start_modbus(host)
            for url, device_ids in self._opc_devices.items():
                opc = await self._build_opcua(url, device_ids)
                self._opcua[url] = opc
                for dev in device_ids:
                    self._host_of[dev] = opc
                await self._start_opcua(opc)
        except BaseException:
            await self._stop_all()
            raise
        self._started = True
        async with self._lock:
            await self._publish(commands=True)

    async def stop(self) -> None:
        """Stop every server. The plant state is kept."""
        self._started = False
        async with self._lock:
            await self._stop_all()

    async def __aenter__(self) -> SiteEmulator:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def step(self, now: datetime) -> PlantState:
        """Read the commands written by clients, advance the plant to ``now``, publish it.

        A device whose server is stopped keeps its last command. Stepping before :meth:`start`
        only advances the plant. Returns the new plant state.
        """
        async with self._lock:
            dim = self._dim_cmd.copy()
            sp = self._plant.setpoint_c.copy()
            for b in self._bindings.values():
                if b.source not in ("dim", "setpoint"):
                    continue
                value = await self._read_command(b)
                if value is None:
                    continue
                target = dim if b.source == "dim" else sp
                target[b.index] = value / b.factor
            self._dim_cmd = dim.copy()
            held = np.where(np.isfinite(self._stuck_pct), self._stuck_pct, dim)
            self._plant = plant_step(
                self._layout,
                self._params,
                self._plant,
                held,
                sp,
                now,
                self._rng,
                lamps_out=self._lamps_out.copy(),
            )
            await self._publish(commands=False)
            return self._plant

    async def run(self, clock: Clock, period_s: float) -> None:
        """Step at ``clock.now()`` every ``period_s`` of clock time until stopped or cancelled."""
        if period_s <= 0:
            raise ValueError("period_s must be positive")
        while self._started:
            await self.step(clock.now())
            await clock.sleep(period_s)

    async def stop_device_server(self, device_id: str) -> tuple[str, ...]:
        """Stop the server hosting ``device_id``; returns every device that went offline with it."""
        host = self._host(device_id)
        async with self._lock:
            if isinstance(host, _ModbusHost):
                if host.server is not None:
                    server, host.server = host.server, None
                    await server.shutdown()  # type: ignore[no-untyped-call]
                return tuple(host.units[u] for u in sorted(host.units))
            if host.running:
                host.running = False
                await host.server.stop()
            return tuple(host.device_ids)

    async def start_device_server(self, device_id: str) -> tuple[str, ...]:
        """Restart the server hosting ``device_id`` and publish the current state to it."""
        host = self._host(device_id)
        async with self._lock:
            if isinstance(host, _ModbusHost):
                if host.server is None:
                    await self._start_modbus(host)
                    await self._publish(commands=True, only=host)
                return tuple(host.units[u] for u in sorted(host.units))
            if not host.running:
                await self._start_opcua(host)
                await self._publish(commands=False, only=host)
            return tuple(host.device_ids)

    # -------------------------------------------------------------------- internals

    def _host(self, device_id: str) -> _ModbusHost | _OpcUaHost:
        try:
            return self._host_of[device_id]
        except KeyError:
            raise KeyError(
                f"no emulated device {device_id!r} (or the emulator is not started)"
            ) from None

    async def _start_modbus(self, host: _ModbusHost) -> None:
        server = ModbusTcpServer(host.sim_devices(), address=(LOOPBACK, host.port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise EmulatorError(f"cannot listen for Modbus on {LOOPBACK}:{host.port}") from exc
        host.server = server

    async def _build_opcua(self, url: str, device_ids: list[str]) -> _OpcUaHost:
        server = Server()
        await server.init()
        bind = _bind_url(url)
        server.set_endpoint(bind)
        server.set_server_name(f"Laterne emulator: {self._layout.site_name}")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        host = _OpcUaHost(url=url, bind_url=bind, device_ids=device_ids, server=server)

        specs = [
            (dev, name, spec)
            for dev in device_ids
            for name, spec in self._site.profile_of(dev).points.items()
        ]
        parsed = {}
        for dev, name, spec in specs:
            assert spec.node is not None
            try:
                parsed[(dev, name)] = ua.NodeId.from_string(spec.node)
            except UaStringParsingError as exc:
                raise EmulatorError(f"point {dev}.{name}: bad NodeId {spec.node!r}") from exc
        max_ns = max((n.NamespaceIndex for n in parsed.values()), default=1)
        ns_array = await server.get_namespace_array()
        while len(ns_array) <= max_ns:
            await server.register_namespace(f"urn:laterne:emulator:ns{len(ns_array)}")
            ns_array = await server.get_namespace_array()

        folders = {}
        for dev in device_ids:
            folders[dev] = await server.nodes.objects.add_object(
                ua.NodeId.from_string(f"ns=1;s=laterne-emulator.{dev}"), ua.QualifiedName(dev, 1)
            )
        for dev, name, spec in specs:
            nodeid = parsed[(dev, name)]
            b = self._bindings[(dev, name)]
            initial = self._command_value(b) if spec.writable else 0.0
            var = await folders[dev].add_variable(
                nodeid,
                ua.QualifiedName(name, nodeid.NamespaceIndex),
                ua.Variant(raw_value(initial, spec), _VARIANT[spec.type]),
            )
            if spec.writable:
                await var.set_writable()
            host.nodes[(dev, name)] = nodeid
        return host

    async def _start_opcua(self, host: _OpcUaHost) -> None:
        try:
            await host.server.start()
        except OSError as exc:
            raise EmulatorError(f"cannot listen for OPC-UA at {host.bind_url}") from exc
        host.running = True

    async def _stop_all(self) -> None:
        for mb in self._modbus.values():
            if mb.server is not None:
                server, mb.server = mb.server, None
                await server.shutdown()  # type: ignore[no-untyped-call]
        stopping = []
        for opc in self._opcua.values():
            if opc.running:
                opc.running = False
                stopping.append(opc.server.stop())
        await asyncio.gather(*stopping)

    def _command_value(self, b: _Binding) -> float:
        """The command the plant currently applies at a writable point [point units]."""
        if b.source == "dim":
            return float(self._dim_cmd[b.index]) * b.factor
        if b.source == "setpoint":
            return float(self._plant.setpoint_c[b.index]) * b.factor
        spec = b.spec
        if spec.failsafe is not None:
            return spec.failsafe
        return spec.min if spec.min is not None else 0.0

    async def _read_command(self, b: _Binding) -> float | None:
        """The value a client wrote at a command point [point units], clipped to its bounds;
        ``None`` while the hosting server is stopped (the plant keeps its last command)."""
        host = self._host_of.get(b.device_id)
        spec = b.spec
        if host is None:  # OPC-UA server not built yet: stepping before start()
            return None
        if isinstance(host, _ModbusHost):
            if host.server is None:
                return None
            assert spec.table is not None and spec.address is not None
            unit = self._unit_of[b.device_id]
            regs = await host.server.async_getValues(
                unit, _FC[spec.table], spec.address, spec.register_count
            )
            if spec.type == "bool":
                value = 1.0 if regs[0] else 0.0
            else:
                value = decode_registers([int(r) for r in regs], spec)
        else:
            dv = host.server.read_attribute_value(host.nodes[(b.device_id, b.point)])
            raw = dv.Value.Value if dv.Value is not None else None
            if raw is None:
                return None
            value = float(raw) * spec.scale + spec.offset
        if not math.isfinite(value):
            return None
        lo, hi = spec.bounds
        return min(max(value, lo), hi)

    def _measurements(self) -> dict[Source, FloatArray]:
        state = self._plant
        n_bld = len(self._layout.buildings.ids)
        return {
            "counter": state.counter_veh,
            "segment_power": segment_power_w(self._layout, state.dim_pct, self._lamps_out),
            "segment_energy": state.segment_energy_wh,
            "zone_temp": state.zone_temp_c,
            "building_power": building_heating_kw(self._layout, self._params, state),
            "building_energy": state.building_heating_energy_kwh,
            "outdoor_temp": np.full(n_bld, plant_outdoor_temp_c(self._params, state)),
        }

    def _value_of(self, b: _Binding, measured: dict[Source, FloatArray]) -> float:
        if b.source == "constant":
            return 0.0
        return float(measured[b.source][b.index]) * b.factor

    async def _publish(
        self, *, commands: bool, only: _ModbusHost | _OpcUaHost | None = None
    ) -> None:
        """Write all measurements (and, with ``commands``, the plant's commands) to the servers,
        or to the one server ``only``."""
        measured = self._measurements()
        for mb in self._modbus.values():
            if mb.server is None or (only is not None and mb is not only):
                continue
            for unit, b in mb.points:
                if b.spec.writable:
                    if not commands:
                        continue
                    value = self._command_value(b)
                else:
                    value = self._value_of(b, measured)
                spec = b.spec
                if spec.bit is not None:
                    continue  # written per register below
                assert spec.table is not None and spec.address is not None
                vals: list[int] | list[bool]
                if spec.type == "bool":
                    vals = [bool(raw_value(value, spec))]
                else:
                    vals = encode_registers(value, spec)
                await mb.server.async_setValues(unit, _FC[spec.table], spec.address, vals)
            for (unit, table, address), bits in mb.bit_words.items():
                word = 0
                for b in bits:
                    word |= encode_registers(self._value_of(b, measured), b.spec)[0]
                await mb.server.async_setValues(unit, _FC[table], address, [word])
        for opc in self._opcua.values():
            if only is not None and opc is not only:
                continue
            for (dev, name), nodeid in opc.nodes.items():
                b = self._bindings[(dev, name)]
                if b.spec.writable:
                    if not commands:
                        continue
                    value = self._command_value(b)
                else:
                    value = self._value_of(b, measured)
                variant = ua.Variant(raw_value(value, b.spec), _VARIANT[b.spec.type])
                await opc.server.write_attribute_value(nodeid, ua.DataValue(variant))
