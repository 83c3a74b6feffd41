"""The site compiled into arrays: the index every observation, command and plant state uses.

Rule: a :class:`SiteLayout` is built once from a validated :class:`SiteConfig` and never changes.
Segment ``i``, counter channel ``c`` and zone ``z`` mean the same thing in the policy, the safety
filter, the runtime, the simulator and the API. Bounds here are already the intersection of the
site's limits and the device profile's limits, so the safety filter checks one pair of arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from .lighting import clo_power_share, luminaire_power_w
from .site import PointRef, PointSpec, Segment, SiteConfig
from .values import BoolArray, FloatArray

__all__ = [
    "WEEKDAYS",
    "ActuatorGroup",
    "BuildingArrays",
    "ChannelArrays",
    "SegmentArrays",
    "SiteLayout",
    "ZoneArrays",
    "day_type_of",
    "occupied_now",
]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
IdxArray = npt.NDArray[np.intp]


#: the raw modulus of each unsigned counter type; f32/f64 counters do not wrap
_RAW_WRAP = {"u16": 2.0**16, "u32": 2.0**32, "u64": 2.0**64}


def _wrap_of(spec: PointSpec) -> float:
    """The modulus of a counter in engineering units (what the policy subtracts), 0: no wrap.

    The raw register wraps at ``2**bits``; the engineering value is ``raw * scale + offset``, so
    a step of one raw unit is ``scale`` units and the value wraps at ``2**bits * |scale|`` (the
    offset cancels in a difference). A u16 counter with ``scale: 10`` wraps at 655,360.
    """
    return _RAW_WRAP.get(spec.type, 0.0) * abs(spec.scale)


@dataclass(frozen=True, eq=False)
class ActuatorGroup:
    """One kind of command, as data: which points it writes and the rules the safety filter
    applies to it, per element. ``target`` is what an override names (``segment``/``zone``);
    ``max_step_param`` names the :class:`PolicyParams` field that limits its change per cycle
    (None: not ramped). ``off_allowed``: 0 is a legal command (switched off) below ``lo``."""

    name: str
    target: str
    ids: tuple[str, ...]
    refs: tuple[PointRef, ...]
    lo: FloatArray
    hi: FloatArray
    failsafe: FloatArray
    off_allowed: BoolArray
    max_step_param: str | None = None

    @property
    def size(self) -> int:
        return len(self.ids)

    @cached_property
    def index(self) -> Mapping[str, int]:
        """Element id -> position."""
        return MappingProxyType({k: i for i, k in enumerate(self.ids)})


def day_type_of(layout: SiteLayout, local_day: date) -> int:
    """The day type of a local date: a special day's type, else its weekday (0 = Monday)."""
    return layout.special_days.get(local_day, local_day.weekday())


def occupied_now(layout: SiteLayout, now: datetime) -> BoolArray:
    """Per zone: occupied at ``now`` (aware) by its schedule, in the site's local time."""
    local = now.astimezone(layout.timezone)
    day = day_type_of(layout, local.date())
    occupied: BoolArray = layout.zones.occupancy[:, day, local.hour * 60 + local.minute]
    return occupied


def _curfew_arrays(segs: Sequence[Segment]) -> dict[str, npt.NDArray[Any]]:
    """The segments' curfews as (S, K) arrays, padded with windows on no day."""
    s_n, k_max = len(segs), max((len(s.curfews) for s in segs), default=0)
    start = np.zeros((s_n, k_max), dtype=np.intp)
    end = np.zeros((s_n, k_max), dtype=np.intp)
    days = np.zeros((s_n, k_max, 7), dtype=bool)
    cap = np.full((s_n, k_max), np.inf)
    for i, s in enumerate(segs):
        for k, (c, cap_pct) in enumerate(zip(s.curfews, s.curfew_caps_pct(), strict=True)):
            start[i, k], end[i, k], cap[i, k] = c.start_minute, c.end_minute, cap_pct
            for d in c.days or WEEKDAYS:
                days[i, k, WEEKDAYS.index(d)] = True
    return {
        "curfew_start_min": start,
        "curfew_end_min": end,
        "curfew_days": days,
        "curfew_cap_pct": cap,
    }


@dataclass(frozen=True, eq=False)
class SegmentArrays:
    """Per street segment (S)."""

    ids: tuple[str, ...]
    controller: tuple[PointRef, ...]
    power: tuple[PointRef | None, ...]
    energy: tuple[PointRef | None, ...]
    luminaires: npt.NDArray[np.int64]
    rated_power_w: FloatArray  # one luminaire [W]
    standby_w: FloatArray  # one luminaire's driver draw at any lit level [W]
    clo: BoolArray  # constant light output drivers
    clo_start_share: FloatArray  # with CLO: share of non-standby power when new
    clo_life_h: FloatArray  # with CLO: burning hours to full rated power [h]
    min_dim_pct: FloatArray
    max_dim_pct: FloatArray
    failsafe_dim_pct: FloatArray
    off_allowed: BoolArray  # the controller accepts 0 % (switched off), e.g. by day
    has_counter: BoolArray
    band_min_flow_veh_h: FloatArray  # (S, B), padded with +inf
    band_dim_pct: FloatArray  # (S, B) the level the policy commands in the band
    band_class: tuple[tuple[str, ...], ...]
    #: (S, B) the lowest level that delivers the band's class (the compliance threshold);
    #: padding +inf
    band_need_pct: FloatArray
    lux: tuple[PointRef | None, ...]  # light sensor per segment
    lux_on_below: FloatArray  # [lx]
    lux_off_above: FloatArray  # [lx]
    on_offset_s: FloatArray  # switch on this long after dusk (negative: before) [s]
    off_offset_s: FloatArray  # switch off this long after dawn (negative: before) [s]
    #: (S, K) curfew windows in local minutes of the day (end < start: past midnight), the
    #: weekdays each starts on (S, K, 7), and the cap on the level (S, K) [%]; K may be 0
    curfew_start_min: IdxArray
    curfew_end_min: IdxArray
    curfew_days: BoolArray
    curfew_cap_pct: FloatArray

    def luminaire_power_w(
        self, dim_pct: FloatArray, burning_h: FloatArray | float = 0.0
    ) -> FloatArray:
        """Power of one luminaire of each segment at ``dim_pct`` after ``burning_h`` hours lit
        (only CLO drivers care) [W], by :func:`~.lighting.luminaire_power_w`."""
        share = np.where(
            self.clo, clo_power_share(burning_h, self.clo_start_share, self.clo_life_h), 1.0
        )
        return luminaire_power_w(
            np.asarray(dim_pct, dtype=float) / 100.0, self.rated_power_w, self.standby_w, share
        )

    def power_w(self, dim_pct: FloatArray, burning_h: FloatArray | float = 0.0) -> FloatArray:
        """Power of each whole segment (every luminaire working) at ``dim_pct`` [W]."""
        out: FloatArray = self.luminaires * self.luminaire_power_w(dim_pct, burning_h)
        return out


@dataclass(frozen=True, eq=False)
class ChannelArrays:
    """Per counter channel (C), and the channel -> segment pairs (a channel may feed several)."""

    refs: tuple[PointRef, ...]
    wrap: FloatArray  # modulus of the counter in its unit (2**bits × |scale|), 0: none
    pair_segment: IdxArray
    pair_channel: IdxArray


@dataclass(frozen=True, eq=False)
class ZoneArrays:
    """Per heating zone (Z)."""

    ids: tuple[str, ...]  # "building.zone"
    building: IdxArray
    temperature: tuple[PointRef, ...]
    setpoint: tuple[PointRef, ...]
    occupied_c: FloatArray
    setback_c: FloatArray
    default_c: FloatArray
    min_c: FloatArray
    max_c: FloatArray
    occupancy: BoolArray  # (Z, T, 1440): occupied by day type and local minute
    area_m2: FloatArray


@dataclass(frozen=True, eq=False)
class BuildingArrays:
    """Per building (N)."""

    ids: tuple[str, ...]
    outdoor: tuple[PointRef | None, ...]
    power: tuple[PointRef | None, ...]
    energy: tuple[PointRef | None, ...]


@dataclass(frozen=True, eq=False)
class SiteLayout:
    """Arrays indexed by segment (S), counter channel (C), zone (Z) and building (N), grouped by
    the entity they describe: ``layout.segments.min_dim_pct``, ``layout.zones.default_c``."""

    site_name: str
    timezone: ZoneInfo
    latitude_deg: float
    longitude_deg: float
    segments: SegmentArrays
    channels: ChannelArrays
    zones: ZoneArrays
    buildings: BuildingArrays
    # calendar: the day types of ``zones.occupancy`` (the weekdays, then any special ones, e.g.
    # "holiday") and the dates that are not their weekday's type (date -> day-type index)
    day_types: tuple[str, ...] = WEEKDAYS
    special_days: Mapping[date, int] = field(default_factory=lambda: MappingProxyType({}))

    @cached_property
    def actuators(self) -> Mapping[str, ActuatorGroup]:
        """The command groups of the site, in write order: ``dim`` per segment, ``setpoint``
        per zone. The safety filter and the writes are generic over these."""
        groups = {
            "dim": ActuatorGroup(
                name="dim",
                target="segment",
                ids=self.segments.ids,
                refs=self.segments.controller,
                lo=self.segments.min_dim_pct,
                hi=self.segments.max_dim_pct,
                failsafe=self.segments.failsafe_dim_pct,
                off_allowed=self.segments.off_allowed,
                max_step_param="max_dim_step_pct",
            ),
            "setpoint": ActuatorGroup(
                name="setpoint",
                target="zone",
                ids=self.zones.ids,
                refs=self.zones.setpoint,
                lo=self.zones.min_c,
                hi=self.zones.max_c,
                failsafe=self.zones.default_c,
                off_allowed=np.zeros(len(self.zones.ids), dtype=bool),
                max_step_param=None,
            ),
        }
        return MappingProxyType(groups)

    @property
    def n_segments(self) -> int:
        return len(self.segments.ids)

    @property
    def n_channels(self) -> int:
        return len(self.channels.refs)

    @property
    def n_zones(self) -> int:
        return len(self.zones.ids)

    @classmethod
    def from_config(cls, cfg: SiteConfig) -> SiteLayout:
        segs = cfg.segments
        s_n = len(segs)
        b_max = max((len(s.bands) for s in segs), default=1)
        # one array each, padded: a missing band is never reached (+inf) and dims nothing
        band_flow = np.array(
            [[b.min_flow_veh_h for b in s.bands] + [np.inf] * (b_max - len(s.bands)) for s in segs],
            dtype=float,
        ).reshape(s_n, b_max)
        band_dim = np.array(
            [s.band_levels_pct() + [0.0] * (b_max - len(s.bands)) for s in segs],
            dtype=float,
        ).reshape(s_n, b_max)
        band_need = np.array(
            [s.band_need_pct() + [np.inf] * (b_max - len(s.bands)) for s in segs],
            dtype=float,
        ).reshape(s_n, b_max)
        # device id -> its profile's points, once (cfg.point per reference costs a private
        # attribute lookup on the pydantic model each time)
        points_of = {d.id: cfg.profiles[d.profile].points for d in cfg.devices}

        def point(ref: PointRef) -> PointSpec:
            return points_of[ref.device][ref.point]

        # the controller's bounds (lo, hi), per segment; 0 % (off) is allowed when lo <= 0
        ctl = np.array([point(s.controller).bounds for s in segs], dtype=float).reshape(s_n, 2)
        seg_min = np.maximum(np.array([s.min_dim_pct for s in segs], dtype=float), ctl[:, 0])
        seg_max = np.minimum(np.array([s.max_dim_pct for s in segs], dtype=float), ctl[:, 1])
        seg_off = ctl[:, 0] <= 0
        channels: list[PointRef] = []
        chan_index: dict[tuple[str, str], int] = {}
        pair_s: list[int] = []
        pair_c: list[int] = []
        for i, s in enumerate(segs):
            for ref in s.counters:
                key = (ref.device, ref.point)
                if key not in chan_index:
                    chan_index[key] = len(channels)
                    channels.append(ref)
                pair_s.append(i)
                pair_c.append(chan_index[key])

        zones = [(bi, b, z) for bi, b in enumerate(cfg.buildings) for z in b.zones]
        z_n = len(zones)
        # zones share a handful of schedules (school, office, ...): each is drawn once
        schedule_of: dict[tuple[tuple[tuple[str, ...], str, str], ...], int] = {}
        masks: list[BoolArray] = []
        zone_schedule: list[int] = []
        for _bi, _b, z in zones:
            schedule = tuple((tuple(p.days), p.start, p.end) for p in z.occupancy)
            if schedule not in schedule_of:
                mask = np.zeros((7, 1440), dtype=bool)
                for period in z.occupancy:
                    for day in period.days:
                        mask[WEEKDAYS.index(day), period.start_minute : period.end_minute] = True
                schedule_of[schedule] = len(masks)
                masks.append(mask)
            zone_schedule.append(schedule_of[schedule])
        occ = (
            np.stack(masks)[np.array(zone_schedule, dtype=np.intp)]
            if masks
            else np.zeros((0, 7, 1440), dtype=bool)
        )
        sp = np.array([point(z.setpoint).bounds for *_, z in zones], dtype=float).reshape(z_n, 2)
        z_min = np.maximum(np.array([z.min_setpoint_c for *_, z in zones], dtype=float), sp[:, 0])
        z_max = np.minimum(np.array([z.max_setpoint_c for *_, z in zones], dtype=float), sp[:, 1])

        return cls(
            site_name=cfg.site.name,
            timezone=ZoneInfo(cfg.site.timezone),
            latitude_deg=cfg.site.latitude,
            longitude_deg=cfg.site.longitude,
            segments=SegmentArrays(
                ids=tuple(s.id for s in segs),
                controller=tuple(s.controller for s in segs),
                power=tuple(s.power for s in segs),
                energy=tuple(s.energy for s in segs),
                luminaires=np.array([s.luminaires for s in segs], dtype=np.int64),
                rated_power_w=np.array([s.rated_power_w for s in segs], dtype=float),
                standby_w=np.array([s.standby_share * s.rated_power_w for s in segs], dtype=float),
                clo=np.array([s.constant_light_output for s in segs], dtype=bool),
                clo_start_share=np.array([s.clo_start_share for s in segs], dtype=float),
                clo_life_h=np.array([s.clo_life_h for s in segs], dtype=float),
                min_dim_pct=seg_min,
                max_dim_pct=seg_max,
                failsafe_dim_pct=np.clip(
                    np.array([s.failsafe_dim_pct for s in segs], dtype=float), seg_min, seg_max
                ),
                off_allowed=seg_off,
                has_counter=np.array([bool(s.counters) for s in segs], dtype=bool),
                band_min_flow_veh_h=band_flow,
                band_dim_pct=band_dim,
                band_class=tuple(tuple(b.lighting_class for b in s.bands) for s in segs),
                band_need_pct=band_need,
                lux=tuple(s.lux for s in segs),
                lux_on_below=np.array([s.lux_on_below for s in segs], dtype=float),
                lux_off_above=np.array([s.lux_off_above for s in segs], dtype=float),
                on_offset_s=np.array([s.on_offset_min * 60.0 for s in segs], dtype=float),
                off_offset_s=np.array([s.off_offset_min * 60.0 for s in segs], dtype=float),
                **_curfew_arrays(segs),
            ),
            channels=ChannelArrays(
                refs=tuple(channels),
                wrap=np.array([_wrap_of(point(c)) for c in channels], dtype=float),
                pair_segment=np.array(pair_s, dtype=np.intp),
                pair_channel=np.array(pair_c, dtype=np.intp),
            ),
            zones=ZoneArrays(
                ids=tuple(f"{b.id}.{z.id}" for _bi, b, z in zones),
                building=np.array([bi for bi, _b, _z in zones], dtype=np.intp),
                temperature=tuple(z.temperature for _bi, _b, z in zones),
                setpoint=tuple(z.setpoint for _bi, _b, z in zones),
                occupied_c=np.array([z.occupied_setpoint_c for *_, z in zones], dtype=float),
                setback_c=np.array([z.setback_setpoint_c for *_, z in zones], dtype=float),
                default_c=np.array([z.default_setpoint_c for *_, z in zones], dtype=float),
                min_c=z_min,
                max_c=z_max,
                occupancy=occ,
                area_m2=np.array([z.area_m2 for *_, z in zones], dtype=float),
            ),
            buildings=BuildingArrays(
                ids=tuple(b.id for b in cfg.buildings),
                outdoor=tuple(b.outdoor_temperature for b in cfg.buildings),
                power=tuple(b.heating_power for b in cfg.buildings),
                energy=tuple(b.heating_energy for b in cfg.buildings),
            ),
        )
