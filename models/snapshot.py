"""Read-only views of the live site, as the API and the dashboard show them.

Rule: these are pydantic models built by the runtime from its own state after each cycle; the API
serialises them and never reaches behind them to a driver. Times are aware UTC datetimes.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from .values import Quality

__all__ = [
    "AggregateRecord",
    "BuildingView",
    "CommandRecord",
    "DeviceStateRecord",
    "DeviceView",
    "HistoryStatus",
    "MirrorStatus",
    "PointView",
    "SegmentView",
    "SiteSnapshot",
    "ZoneView",
]


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class PointView(_View):
    point: str
    value: float | None  # None only when no value was ever read (JSON has no NaN)
    unit: str
    quality: Quality
    ts: datetime | None


class DeviceView(_View):
    id: str
    profile: str
    protocol: str
    endpoint: str
    quality: Quality
    since: datetime
    last_good_at: datetime | None
    last_error: str
    points: list[PointView]


class SegmentView(_View):
    id: str
    name: str
    road_type: str
    luminaires: int
    rated_power_w: float
    flow_veh_h: float | None  # None: no counter or no good data
    lighting_class: str
    dim_pct: float  # last commanded
    reason: str
    measured_power_w: float | None
    online: bool


class ZoneView(_View):
    id: str
    temperature_c: float | None
    setpoint_c: float  # last commanded
    reason: str
    occupied: bool


class BuildingView(_View):
    id: str
    name: str
    outdoor_temp_c: float | None
    heating_power_kw: float | None
    zones: list[ZoneView]


class CommandRecord(_View):
    ts: datetime
    device_id: str
    point: str
    value: float
    reason: str
    source: str
    ok: bool
    error: str = ""


class DeviceStateRecord(_View):
    """One change of a device's quality, as the history keeps it for maintenance crews."""

    device_id: str
    quality: Quality
    since: datetime
    last_good_at: datetime | None
    last_error: str


class AggregateRecord(_View):
    """One point's statistics over one bucket ``[start, end)`` (raw readings past retention).
    ``count`` counts every reading; the statistics cover the ``good_count`` good ones and are
    None when there was none."""

    start: datetime
    end: datetime
    count: int
    good_count: int
    mean: float | None
    min: float | None
    max: float | None
    last: float | None


class MirrorStatus(_View):
    """A copy of the history on its way to another store (e.g. InfluxDB through an outbox)."""

    target: str
    pending_lines: int  # waiting in the durable outbox
    in_outage: bool
    last_error: str
    dead_letters: int  # lines the server refused as malformed, kept for an operator


class HistoryStatus(_View):
    sqlite_path: str
    sqlite_bytes: int
    raw_retention_days: float
    aggregate_minutes: int
    mirrors: list[MirrorStatus]


class SiteSnapshot(_View):
    site: str
    ts: datetime | None  # time of the last completed cycle, None before the first
    cycle: int
    sun_elevation_deg: float | None
    devices: list[DeviceView]
    segments: list[SegmentView]
    buildings: list[BuildingView]
