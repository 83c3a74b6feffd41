"""Build the :class:`SiteSnapshot` — the whole site as of one completed cycle — from that cycle.

Rule: pure: from the site, its layout and one cycle's results (policy state, safe commands,
latest readings, device states) to the snapshot the read model serves, a *view* per device,
point, segment, building and zone. NaN never leaves this module (JSON has no NaN): an unknown
number is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

from laterne.models.layout import SiteLayout
from laterne.models.site import ModbusEndpoint, PointRef, SiteConfig
from laterne.models.snapshot import (
    BuildingView,
    ComplianceIntervalView,
    DeviceView,
    FaultView,
    PointView,
    SegmentView,
    SiteSnapshot,
    ZoneView,
)
from laterne.models.values import Commands, DeviceState, PointReading, Quality, Reason

from .compliance import compliance
from .compliance_record import ComplianceTally, IntervalRecord
from .faults import FaultState, expected_power_w
from .observe import ReadingKey
from .policy import PolicyState

__all__ = ["build_snapshot"]


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _finite_or(x: float, fallback: float) -> float:
    return float(x) if math.isfinite(x) else fallback


def _count(x: float | None) -> int | None:
    return None if x is None else round(x)


def _value(latest: Mapping[ReadingKey, PointReading], ref: PointRef | None) -> float | None:
    if ref is None:
        return None
    r = latest.get((ref.device, ref.point))
    if r is None or r.quality is not Quality.GOOD:
        return None
    return _num(r.value)


def _held(latest: Mapping[ReadingKey, PointReading], ref: PointRef) -> float | None:
    """What a commanded point reads back: its value when good, else None."""
    return _value(latest, ref)


def interval_view(r: IntervalRecord | None) -> ComplianceIntervalView | None:
    """The view of one compliance record (None passes through)."""
    if r is None:
        return None
    return ComplianceIntervalView(
        segment_id=r.segment_id,
        start=r.start,
        end=r.end,
        flow_veh_h=r.flow_veh_h,
        lit=r.lit,
        required_class=r.required_class,
        delivered_class=r.delivered_class,
        min_dim_pct=r.min_dim_pct,
        violation=r.violation,
    )


def build_snapshot(
    site: SiteConfig,
    layout: SiteLayout,
    ts: datetime | None,
    cycle: int,
    state: PolicyState,
    cmds: Commands | None,
    latest: Mapping[ReadingKey, PointReading],
    devices: Mapping[str, DeviceState],
    faults: FaultState | None = None,
    tally: ComplianceTally | None = None,
) -> SiteSnapshot:
    """The snapshot of one cycle; ``faults`` (the fault detection's state after the cycle) adds
    burning hours, expected power and open faults, ``tally`` the compliance record's counts."""
    device_views = []
    for d in site.devices:
        prof = site.profiles[d.profile]
        ep = d.endpoint
        endpoint = f"{ep.host}:{ep.port}/{ep.unit_id}" if isinstance(ep, ModbusEndpoint) else ep.url
        st = devices[d.id]
        points = []
        for name, spec in prof.points.items():
            r = latest.get((d.id, name))
            points.append(
                PointView(
                    point=name,
                    value=_num(r.value) if r is not None else None,
                    unit=spec.unit,
                    quality=r.quality if r is not None else Quality.OFFLINE,
                    ts=r.ts if r is not None else None,
                )
            )
        device_views.append(
            DeviceView(
                id=d.id,
                profile=d.profile,
                protocol=prof.protocol,
                endpoint=endpoint,
                quality=st.quality,
                since=st.since,
                last_good_at=st.last_good_at,
                last_error=st.last_error,
                points=points,
            )
        )

    judged = None
    if cmds is not None:
        dark = cmds.dim_reason != Reason.DAYLIGHT
        judged = compliance(layout, state.segment_flow_veh_h, cmds.dim_pct, dark)
    required = judged.class_names(layout, judged.required_band) if judged else []
    delivered = judged.class_names(layout, judged.delivered_band) if judged else []
    expected = (
        expected_power_w(layout, faults.level_pct, faults.burning_h) if faults is not None else None
    )
    open_faults = faults.by_segment if faults is not None else {}
    segments = []
    for i, s in enumerate(site.segments):
        # commands come from the safety filter and are finite; should one not be, the view
        # shows the fail-safe level the filter would have sent, never a NaN
        failsafe_dim = float(layout.segments.failsafe_dim_pct[i])
        dim = _finite_or(cmds.dim_pct[i] if cmds is not None else math.nan, failsafe_dim)
        reason = Reason(int(cmds.dim_reason[i])).label if cmds is not None else "not started"
        band = int(state.segment_band[i])
        flow = _num(float(state.segment_flow_veh_h[i]))
        segments.append(
            SegmentView(
                id=s.id,
                name=s.name,
                road_type=s.road_type,
                luminaires=s.luminaires,
                rated_power_w=s.rated_power_w,
                flow_veh_h=flow,
                lighting_class=layout.segments.band_class[i][band] if flow is not None else "",
                required_class=required[i] if judged else "",
                delivered_class=delivered[i] if judged else "",
                below_required_class=bool(judged.violation[i]) if judged else False,
                dim_pct=float(dim),
                reason=reason,
                actual_dim_pct=_held(latest, s.controller),
                measured_power_w=_value(latest, s.power),
                failed_lamps=_count(_value(latest, s.failed_lamps)),
                online=devices[s.controller.device].quality is not Quality.OFFLINE,
                expected_power_w=_num(float(expected[i])) if expected is not None else None,
                burning_h=float(faults.burning_h[i]) if faults is not None else None,
                full_power_h=float(faults.full_power_h[i]) if faults is not None else None,
                faults=[str(f.kind) for f in open_faults.get(s.id, ())],
                lit_intervals=int(tally.lit_intervals[i]) if tally is not None else 0,
                violation_intervals=int(tally.violation_intervals[i]) if tally is not None else 0,
                last_interval=interval_view(tally.last(i)) if tally is not None else None,
            )
        )

    buildings = []
    z = 0
    for bi, b in enumerate(site.buildings):
        zones = []
        for zone in b.zones:
            default_c = float(layout.zones.default_c[z])
            sp = _finite_or(cmds.setpoint_c[z] if cmds is not None else math.nan, default_c)
            reason = (
                Reason(int(cmds.setpoint_reason[z])).label if cmds is not None else "not started"
            )
            zones.append(
                ZoneView(
                    id=zone.id,
                    temperature_c=_value(latest, zone.temperature),
                    setpoint_c=sp,
                    actual_setpoint_c=_held(latest, zone.setpoint),
                    reason=reason,
                    occupied=bool(state.zone_occupied[z]),
                )
            )
            z += 1
        buildings.append(
            BuildingView(
                id=b.id,
                name=b.name,
                outdoor_temp_c=_value(latest, layout.buildings.outdoor[bi]),
                heating_power_kw=_value(latest, layout.buildings.power[bi]),
                zones=zones,
            )
        )
    return SiteSnapshot(
        site=site.site.name,
        timezone=site.site.timezone,
        ts=ts,
        cycle=cycle,
        sun_elevation_deg=_num(state.sun_elevation_deg),
        devices=device_views,
        segments=segments,
        buildings=buildings,
        faults=[
            FaultView(
                segment_id=f.segment_id,
                kind=str(f.kind),
                since=f.since,
                last_seen=f.last_seen,
                detail=f.detail,
                lamps_out=f.lamps_out,
                expected_power_w=_num(f.expected_power_w)
                if f.expected_power_w is not None
                else None,
                measured_power_w=_num(f.measured_power_w)
                if f.measured_power_w is not None
                else None,
            )
            for f in (faults.faults if faults is not None else ())
        ],
    )
