"""A SiteReadModel made of plain data, and an HTTP client on the app built around it."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from laterne.api.app import create_app
from laterne.models.snapshot import (
    AggregateRecord,
    BuildingView,
    CommandRecord,
    DeviceStateRecord,
    DeviceView,
    DriftRecord,
    FaultView,
    HistoryStatus,
    LoopStatus,
    MirrorStatus,
    PointView,
    QueueStatus,
    SegmentView,
    SiteSnapshot,
    ZoneView,
)
from laterne.models.values import PointReading, Quality

T0 = datetime(2024, 11, 5, 22, 0, tzinfo=UTC)


def make_snapshot() -> SiteSnapshot:
    return SiteSnapshot(
        site="demo-town",
        ts=T0,
        cycle=42,
        sun_elevation_deg=-12.5,
        devices=[
            DeviceView(
                id="ctr-1",
                profile="counter-v1",
                protocol="modbus",
                endpoint="127.0.0.1:5020",
                quality=Quality.GOOD,
                since=T0 - timedelta(hours=1),
                last_good_at=T0,
                last_error="",
                points=[
                    PointView(point="count", value=1234.0, unit="veh", quality=Quality.GOOD, ts=T0)
                ],
            ),
            DeviceView(
                id="seg-ctl-1",
                profile="segment-controller-v1",
                protocol="opcua",
                endpoint="opc.tcp://127.0.0.1:4840",
                quality=Quality.OFFLINE,
                since=T0 - timedelta(minutes=5),
                last_good_at=None,
                last_error="connection refused",
                points=[],
            ),
        ],
        segments=[
            SegmentView(
                id="main-st",
                name="Main Street",
                road_type="collector",
                luminaires=40,
                rated_power_w=4000.0,
                flow_veh_h=320.0,
                lighting_class="M4",
                required_class="M4",
                delivered_class="M4",
                below_required_class=False,
                dim_pct=60.0,
                reason="traffic",
                actual_dim_pct=60.0,
                measured_power_w=2450.0,
                failed_lamps=2,
                online=True,
                expected_power_w=2900.0,
                burning_h=1234.5,
                full_power_h=700.25,
                faults=["lamps_out"],
            ),
            SegmentView(
                id="park-rd",
                name="Park Road",
                road_type="residential",
                luminaires=12,
                rated_power_w=600.0,
                flow_veh_h=None,
                lighting_class="M5",
                required_class="",
                delivered_class="M4",
                below_required_class=False,
                dim_pct=100.0,
                reason="failsafe",
                actual_dim_pct=None,
                measured_power_w=None,
                failed_lamps=None,
                online=False,
            ),
        ],
        buildings=[
            BuildingView(
                id="town-hall",
                name="Town Hall",
                outdoor_temp_c=3.5,
                heating_power_kw=12.0,
                zones=[
                    ZoneView(
                        id="th-office",
                        temperature_c=20.5,
                        setpoint_c=21.0,
                        actual_setpoint_c=21.0,
                        reason="occupied",
                        occupied=True,
                    )
                ],
            )
        ],
        faults=[
            FaultView(
                segment_id="main-st",
                kind="lamps_out",
                since=T0 - timedelta(hours=2),
                last_seen=T0,
                detail="2450 W measured, 2900 W expected at 60.0 %: about 6 lamp(s) out",
                lamps_out=6,
                expected_power_w=2900.0,
                measured_power_w=2450.0,
            )
        ],
    )


@dataclass
class FakeReadModel:
    """Implements :class:`laterne.controller.readmodel.SiteReadModel` over lists, recording
    each query."""

    snap: SiteSnapshot = field(default_factory=make_snapshot)
    commands: list[CommandRecord] = field(default_factory=list)
    history: list[PointReading] = field(default_factory=list)
    states: list[DeviceStateRecord] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    drifts: list[DriftRecord] = field(default_factory=list)
    loop: LoopStatus = field(default_factory=lambda: make_loop())
    queues: list[QueueStatus] = field(default_factory=list)

    def loop_status(self) -> LoopStatus:
        return self.loop

    def drift_events(self, device_id: str | None = None, limit: int = 100) -> list[DriftRecord]:
        self.calls.append(("drift_events", {"device_id": device_id, "limit": limit}))
        found = [d for d in self.drifts if device_id is None or d.device_id == device_id]
        return sorted(found, key=lambda d: d.ts, reverse=True)[:limit]

    def snapshot(self) -> SiteSnapshot:
        return self.snap

    def recent_commands(
        self, limit: int = 100, device_id: str | None = None
    ) -> list[CommandRecord]:
        self.calls.append(("recent_commands", {"limit": limit, "device_id": device_id}))
        found = [c for c in self.commands if device_id is None or c.device_id == device_id]
        return sorted(found, key=lambda c: c.ts, reverse=True)[:limit]

    def device_state_changes(
        self, device_id: str | None = None, limit: int = 100
    ) -> list[DeviceStateRecord]:
        self.calls.append(("device_state_changes", {"device_id": device_id, "limit": limit}))
        found = [s for s in self.states if device_id is None or s.device_id == device_id]
        return sorted(found, key=lambda s: s.since, reverse=True)[:limit]

    def aggregates(
        self,
        device_id: str,
        point: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 10_000,
    ) -> list[AggregateRecord]:
        self.calls.append(("aggregates", {"device_id": device_id, "point": point}))
        if (device_id, point) != ("ctr-1", "count"):
            return []
        return [
            AggregateRecord(
                start=T0 + timedelta(minutes=15 * k),
                end=T0 + timedelta(minutes=15 * (k + 1)),
                count=15,
                good_count=15 - k,
                mean=10.0 + k,
                min=5.0,
                max=20.0,
                last=12.0,
            )
            for k in range(3)
            if (since is None or T0 + timedelta(minutes=15 * k) >= since)
        ][:limit]

    def history_status(self) -> HistoryStatus:
        mirror = MirrorStatus(
            target="influxdb http://127.0.0.1:8428 bucket laterne",
            pending_lines=1200,
            in_outage=True,
            last_error="connection refused",
            dead_letters=0,
        )
        return HistoryStatus(
            sqlite_path="var/x.sqlite",
            sqlite_bytes=4096,
            raw_retention_days=30,
            aggregate_minutes=15,
            mirrors=[mirror],
            queues=self.queues,
        )

    def readings(
        self,
        device_id: str,
        point: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[PointReading]:
        self.calls.append(
            (
                "readings",
                {
                    "device_id": device_id,
                    "point": point,
                    "since": since,
                    "until": until,
                    "newest_first": newest_first,
                },
            )
        )
        found = [
            r
            for r in self.history
            if r.device_id == device_id
            and r.point == point
            and (since is None or r.ts >= since)
            and (until is None or r.ts < until)
        ]
        return sorted(found, key=lambda r: r.ts, reverse=newest_first)[:limit]


def make_loop(
    since_success_s: float = 5.0, failures: int = 0, error: str = ""
) -> LoopStatus:
    return LoopStatus(
        cycle_s=10.0,
        cycles=42,
        last_success_at=T0,
        since_success_s=since_success_s,
        consecutive_failures=failures,
        last_error=error,
        last_error_at=T0 if error else None,
    )


def make_commands() -> list[CommandRecord]:
    return [
        CommandRecord(
            ts=T0 + timedelta(minutes=m),
            device_id=dev,
            point="dim_pct",
            value=50.0 + m,
            reason="traffic",
            source="policy",
            ok=dev != "seg-ctl-1",
            error="" if dev != "seg-ctl-1" else "device offline",
        )
        for m, dev in [(0, "seg-ctl-2"), (1, "seg-ctl-1"), (2, "seg-ctl-2")]
    ]


def make_history() -> list[PointReading]:
    good = [
        PointReading("ctr-1", "count", float(m), Quality.GOOD, T0 + timedelta(minutes=m))
        for m in range(5)
    ]
    failed = PointReading(
        "ctr-1", "count", math.nan, Quality.OFFLINE, T0 + timedelta(minutes=5), "timeout"
    )
    return [*good, failed]


def make_states() -> list[DeviceStateRecord]:
    return [
        DeviceStateRecord(
            device_id="ctr-1",
            quality=q,
            since=T0 + timedelta(minutes=m),
            last_good_at=T0,
            last_error="" if q is Quality.GOOD else "timeout",
        )
        for m, q in [(0, Quality.GOOD), (5, Quality.OFFLINE), (9, Quality.GOOD)]
    ]


@pytest.fixture
def read_model() -> FakeReadModel:
    return FakeReadModel(commands=make_commands(), history=make_history(), states=make_states())


@pytest.fixture
async def client(read_model: FakeReadModel) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(read_model))
    async with httpx.AsyncClient(transport=transport, base_url="http://laterne.test") as c:
        yield c
