"""What the read side of a running site answers: its snapshot, history records and statuses.

Words, one meaning each:

- a **snapshot** (:class:`SiteSnapshot`) is the whole site as of one completed control cycle:
  its devices, segments and buildings (``controller/snapshot.py`` builds it from the cycle's
  results, ``GET /api/site`` serves it);
- a **view** (:class:`PointView`, :class:`DeviceView`, :class:`SegmentView`, :class:`ZoneView`,
  :class:`BuildingView`) is how a snapshot shows one thing of the site;
- a **record** (:class:`CommandRecord`, :class:`DriftRecord`, :class:`DeviceStateRecord`,
  :class:`AggregateRecord`) is one event or bucket as the history keeps and returns it;
- a **status** (:class:`LoopStatus`, :class:`HistoryStatus`, :class:`QueueStatus`,
  :class:`MirrorStatus`) is a live account of the control loop or of a store.

Rule: frozen pydantic models, the API's response bodies (``/openapi.json`` documents them); the
API never reaches behind them to a driver. Times are aware UTC datetimes; an unknown number is
``None`` (JSON has no NaN).
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
    "DriftRecord",
    "FaultView",
    "HistoryStatus",
    "LoopStatus",
    "MirrorStatus",
    "OverrideRecord",
    "PointView",
    "QueueStatus",
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


class ComplianceIntervalView(_View):
    """One closed compliance interval of one segment: the class its measured traffic required
    and the class the lowest level commanded while dark delivered (``""``: none required /
    below every band); ``violation``: lit below what was required."""

    segment_id: str
    start: datetime
    end: datetime
    flow_veh_h: float | None  # measured over the interval; None: counts covered too little
    lit: bool  # light was required (dark, flow known)
    required_class: str
    delivered_class: str
    min_dim_pct: float | None
    violation: bool


class SegmentComplianceView(_View):
    """A segment's compliance since the controller started."""

    lit_intervals: int
    violation_intervals: int


class ComplianceView(_View):
    """``/api/compliance``: the record of the last closed intervals, newest first."""

    interval_s: float
    segments: dict[str, SegmentComplianceView]
    intervals: list[ComplianceIntervalView]


class SegmentView(_View):
    id: str
    name: str
    road_type: str
    luminaires: int
    rated_power_w: float
    flow_veh_h: float | None  # None: no counter or no good data
    lighting_class: str  # the policy's band (with hysteresis and hold)
    required_class: str  # what the measured flow alone needs now; "": nothing (unknown, day)
    delivered_class: str  # what the commanded level delivers (of the segment's bands)
    below_required_class: bool  # lit below what the traffic needs: a compliance violation
    dim_pct: float  # last commanded
    reason: str
    actual_dim_pct: float | None  # what the controller reports it holds; None: not read
    measured_power_w: float | None
    failed_lamps: int | None  # lamps the segment controller reports as failed
    online: bool
    expected_power_w: float | None = None  # every lamp working, at the commanded level
    burning_h: float | None = None  # hours lit since the controller started counting
    full_power_h: float | None = None  # hours lit weighted by the level (equivalent at 100 %)
    faults: list[str] = []  # kinds of the segment's open faults (see ``FaultView``)
    lit_intervals: int = 0  # compliance intervals lit since the controller started
    violation_intervals: int = 0  # of them, lit below the class the measured traffic required
    last_interval: ComplianceIntervalView | None = None  # the last closed one


class FaultView(_View):
    """One open lamp or driver fault of a segment, for the maintenance work list: ``kind`` is
    ``lamps_out`` (measured power well below expected; ``lamps_out`` estimates how many),
    ``stuck_dimming`` (power not following the level) or ``no_power_reading``."""

    segment_id: str
    kind: str
    since: datetime
    last_seen: datetime
    detail: str
    lamps_out: int | None
    expected_power_w: float | None
    measured_power_w: float | None


class ZoneView(_View):
    id: str
    temperature_c: float | None
    setpoint_c: float  # last commanded
    actual_setpoint_c: float | None  # what the building automation reports it holds
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


class DriftRecord(_View):
    """A writable point found holding something else than its last command (a controller that
    reset, a technician's handheld, a change at the BMS): seen at ``ts``, re-sent or not."""

    ts: datetime
    device_id: str
    point: str
    commanded: float
    actual: float | None  # None: the device answered with no usable value (e.g. out of range)
    detail: str
    attempt: int  # consecutive polls with this drift (1 = first seen)
    resent: bool  # the command was re-sent this cycle (False: backing off)


class OverrideRecord(_View):
    """An operator's override as the history keeps it: ``value`` (a level [%] or setpoint [°C])
    or ``lighting_class`` (a segment's EN 13201-2 class, resolved to its level by the runtime),
    in force for ``start <= t < end``; ``cancelled_at`` is when it was ended early."""

    id: int
    target: str  # "segment" | "zone"
    target_id: str
    value: float | None
    lighting_class: str | None
    start: datetime
    end: datetime
    reason: str
    author: str
    created_at: datetime
    cancelled_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.start <= now < self.end


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


class QueueStatus(_View):
    """The in-memory queue in front of one store: what waits, whether the store takes writes."""

    store: str
    writable: bool
    queued_readings: int
    queued_records: int  # commands, device states, drift events
    max_readings: int  # beyond this the oldest readings are dropped
    dropped_readings: int  # since start
    last_error: str


class HistoryStatus(_View):
    sqlite_path: str
    sqlite_bytes: int
    raw_retention_days: float
    aggregate_minutes: int
    mirrors: list[MirrorStatus]
    queues: list[QueueStatus] = []


class LoopStatus(_View):
    """Is the control loop alive? Ages are in the controller's clock [s]."""

    cycle_s: float
    cycles: int  # completed successfully since start
    last_success_at: datetime | None
    since_success_s: float  # since the last successful cycle (or since start, before the first)
    consecutive_failures: int
    last_error: str
    last_error_at: datetime | None


class SiteSnapshot(_View):
    site: str
    timezone: str = "UTC"  # the site's IANA zone: show local times in it, labelled
    ts: datetime | None  # time of the last completed cycle, None before the first
    cycle: int
    sun_elevation_deg: float | None
    devices: list[DeviceView]
    segments: list[SegmentView]
    buildings: list[BuildingView]
    faults: list[FaultView] = []  # open lamp and driver faults, by segment
