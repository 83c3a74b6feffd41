"""Value types that cross layer boundaries: point readings, device state, observations, commands.

Rule: everything here is immutable and carries its units and its quality. A failed read is never
``None``: it is a :class:`PointReading` whose ``quality`` says why it cannot be trusted. Arrays are
indexed by the :class:`~laterne.models.layout.SiteLayout` of the site (segment, counter channel,
zone), never by Python objects, so a cycle over thousands of luminaires is a few numpy operations.
All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

__all__ = [
    "ActuatorCommand",
    "BoolArray",
    "Commands",
    "DeviceState",
    "FloatArray",
    "IntArray",
    "Observation",
    "Override",
    "OverrideRequest",
    "PointReading",
    "PointWrite",
    "Quality",
    "Reason",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int8]


class Quality(StrEnum):
    """How far a value can be trusted. Ordered from best to worst."""

    GOOD = "good"
    STALE = "stale"  # last good value older than the configured limit
    FAULTY = "faulty"  # device answered, but the value is impossible or did not read back
    OFFLINE = "offline"  # device did not answer


@dataclass(frozen=True, slots=True)
class PointReading:
    """One decoded value of one point. ``value`` is NaN unless quality is GOOD or STALE."""

    device_id: str
    point: str
    value: float
    quality: Quality
    ts: datetime  # when it was read (UTC)
    error: str = ""


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What a maintenance crew needs to know about one device."""

    device_id: str
    quality: Quality
    last_good_at: datetime | None  # None: never answered since start
    last_error: str
    since: datetime  # when the device entered this quality


@dataclass(frozen=True, slots=True)
class PointWrite:
    """A command to one point of one device, in engineering units, with who and why."""

    device_id: str
    point: str
    value: float
    reason: str
    source: str = "policy"


class Reason(IntEnum):
    """Why a command has its value; stored per segment/zone in :class:`Commands`."""

    TRAFFIC = 0  # lighting class chosen from measured traffic
    DAYLIGHT = 1  # sun above the switch-off elevation
    FAILSAFE = 2  # data missing or stale: configured fail-safe level
    OCCUPIED = 3  # occupancy schedule: comfort setpoint
    SETBACK = 4  # outside occupancy: night/weekend setback
    CLAMPED = 5  # safety filter moved the value into its bounds
    RAMPED = 6  # safety filter limited the change per cycle
    OVERRIDE = 7  # manual override in force
    SCHEDULE = 8  # a fixed schedule (a baseline policy), not the traffic
    CURFEW = 9  # a curfew of the lighting plan capped the traffic's level (never below class)

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Observation:
    """Everything the policy may know about the field at one instant.

    Parameters
    ----------
    ts : aware UTC datetime of the observation
    counter_veh : cumulative vehicle count per counter channel [veh], NaN where not good
    counter_ok : True where the channel's reading is GOOD
    zone_temp_c : air temperature per zone [°C], NaN where not good
    zone_ok : True where the zone's temperature is GOOD
    segment_ok : True where the segment controller answered (its command can be written)
    outdoor_temp_c : per building [°C], NaN where unknown
    sun_elevation_deg : apparent solar elevation at the site at ``ts`` [°]; the shell computes it
        (the simulator from an ephemeris precomputed for the whole run), NaN: not given
    segment_lux : per segment the illuminance its light sensor measures [lx], NaN where it has
        none or its reading is not good (then the sun decides); None: no sensors at all
    """

    ts: datetime
    counter_veh: FloatArray
    counter_ok: BoolArray
    zone_temp_c: FloatArray
    zone_ok: BoolArray
    segment_ok: BoolArray
    outdoor_temp_c: FloatArray = field(default_factory=lambda: np.zeros(0))
    sun_elevation_deg: float = float("nan")
    segment_lux: FloatArray | None = None


@dataclass(frozen=True, slots=True)
class Override:
    """A person's decision that replaces the policy for one segment or zone, for a while.

    ``target`` is ``"segment"`` (``id`` a segment id, ``value`` a dim level [%]) or ``"zone"``
    (``id`` ``"building.zone"``, ``value`` a setpoint [°C]). In force for ``start <= now < end``
    (aware UTC). The safety filter applies it (see ``controller/safety.py`` for precedence).
    """

    target: str
    id: str
    value: float
    start: datetime
    end: datetime
    reason: str = ""
    author: str = ""

    def active(self, now: datetime) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True, slots=True)
class OverrideRequest:
    """An override as an operator asks for it, before it is stored (which gives it an id).

    ``target`` and ``target_id`` as in :class:`Override`. Exactly one of ``value`` (a dim level
    [%] or a setpoint [°C]) and ``lighting_class`` (segments only: an EN 13201-2 class the
    runtime turns into the segment's level) is given. In force for ``start <= now < end``.
    """

    target: str
    target_id: str
    start: datetime
    end: datetime
    value: float | None = None
    lighting_class: str | None = None
    reason: str = ""
    author: str = ""


@dataclass(frozen=True)
class ActuatorCommand:
    """The values of one actuator group (in its unit, e.g. [%] or [°C]) with a reason code each."""

    values: FloatArray
    reasons: IntArray


class Commands:
    """Desired outputs of one cycle: one :class:`ActuatorCommand` per actuator group of the
    layout (``dim`` per segment [%], ``setpoint`` per zone [°C]), indexed like the layout.

    Actuators are data: ``groups`` maps a group's name to its values, so the safety filter and
    the writes handle any group the layout declares. ``dim_pct``/``setpoint_c`` and their
    reasons are the two groups every site has, by name. Immutable.
    """

    __slots__ = ("_groups",)
    _groups: Mapping[str, ActuatorCommand]

    def __init__(
        self,
        dim_pct: FloatArray | None = None,
        dim_reason: IntArray | None = None,
        setpoint_c: FloatArray | None = None,
        setpoint_reason: IntArray | None = None,
        *,
        groups: Mapping[str, ActuatorCommand] | None = None,
    ) -> None:
        found = dict(groups or {})
        if dim_pct is not None:
            reasons = dim_reason if dim_reason is not None else np.zeros(len(dim_pct), np.int8)
            found["dim"] = ActuatorCommand(dim_pct, reasons)
        if setpoint_c is not None:
            reasons = (
                setpoint_reason if setpoint_reason is not None
                else np.zeros(len(setpoint_c), np.int8)
            )
            found["setpoint"] = ActuatorCommand(setpoint_c, reasons)
        object.__setattr__(self, "_groups", MappingProxyType(found))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Commands are immutable")

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v.values.tolist()}" for k, v in self._groups.items())
        return f"Commands({inner})"

    @property
    def groups(self) -> Mapping[str, ActuatorCommand]:
        return self._groups

    def group(self, name: str) -> ActuatorCommand:
        """The group ``name``; an empty one when these commands have none of it."""
        found = self._groups.get(name)
        if found is None:
            return ActuatorCommand(np.zeros(0), np.zeros(0, dtype=np.int8))
        return found

    @property
    def dim_pct(self) -> FloatArray:  # per segment [%]
        return self.group("dim").values

    @property
    def dim_reason(self) -> IntArray:
        return self.group("dim").reasons

    @property
    def setpoint_c(self) -> FloatArray:  # per zone [°C]
        return self.group("setpoint").values

    @property
    def setpoint_reason(self) -> IntArray:
        return self.group("setpoint").reasons
