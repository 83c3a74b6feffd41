"""``/api/commands``, ``/api/history``, ``/api/readings``, ``/api/aggregates``: the history.

Rules: times in queries are ISO 8601 *with* an offset (a naive one is a 422, never guessed), and
``since`` must be before ``until``; an unknown device or point is a 404 naming the known ones
(from the snapshot), checked before the history is asked. A reading's NaN value is sent as
``null``. Tagged ``history``.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict

from laterne.controller.readmodel import SiteReadModel
from laterne.models.snapshot import AggregateRecord, CommandRecord, HistoryStatus
from laterne.models.values import Quality

from .deps import ReadModelDep
from .errors import by_id, invalid_query, not_found

__all__ = ["COMMANDS_LIMIT_MAX", "READINGS_LIMIT_MAX", "ReadingOut", "router"]

COMMANDS_LIMIT_MAX = 1000
READINGS_LIMIT_MAX = 10_000

router = APIRouter(tags=["history"])


class ReadingOut(BaseModel):
    """One recorded reading of a point. ``value`` is null when it was NaN (not good)."""

    model_config = ConfigDict(frozen=True)

    ts: datetime
    value: float | None
    quality: Quality
    error: str


def _known_point(read_model: SiteReadModel, device_id: str, point: str) -> None:
    dev = by_id("device", device_id, read_model.snapshot().devices)
    points = [p.point for p in dev.points]
    if point not in points:
        raise not_found("point", point, points, of=f" of device {device_id!r}")


def _window(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise invalid_query(
            "until",
            f"until ({until.isoformat()}) must be after since ({since.isoformat()})",
            until.isoformat(),
        )


@router.get("/api/commands", response_model=list[CommandRecord])
def commands(
    read_model: ReadModelDep,
    limit: Annotated[int, Query(ge=1, le=COMMANDS_LIMIT_MAX)] = 100,
    device_id: Annotated[str | None, Query(description="only commands to this device")] = None,
) -> list[CommandRecord]:
    """Most recent commands first."""
    if device_id is not None:
        by_id("device", device_id, read_model.snapshot().devices)
    found: list[CommandRecord] = read_model.recent_commands(limit=limit, device_id=device_id)
    return found


@router.get("/api/history", response_model=HistoryStatus)
def history(read_model: ReadModelDep) -> HistoryStatus:
    """The embedded history's size and retention, and every mirror's backlog and health."""
    return read_model.history_status()


@router.get("/api/aggregates", response_model=list[AggregateRecord])
def aggregates(
    read_model: ReadModelDep,
    device_id: str,
    point: str,
    since: Annotated[
        AwareDatetime | None,
        Query(description="inclusive; ISO 8601 with offset, e.g. 2024-11-05T22:00:00Z"),
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="exclusive; ISO 8601 with offset")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> list[AggregateRecord]:
    """Buckets of one point's readings older than the raw retention, oldest first: count,
    good count, mean, min, max and last of each bucket (see /api/history for the width)."""
    _window(since, until)
    _known_point(read_model, device_id, point)
    return read_model.aggregates(device_id, point, since=since, until=until, limit=limit)


@router.get("/api/readings", response_model=list[ReadingOut])
def readings(
    read_model: ReadModelDep,
    device_id: str,
    point: str,
    since: Annotated[
        AwareDatetime | None,
        Query(description="inclusive; ISO 8601 with offset, e.g. 2024-11-05T22:00:00Z"),
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="exclusive; ISO 8601 with offset")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=READINGS_LIMIT_MAX)] = 1000,
    order: Annotated[
        Literal["asc", "desc"],
        Query(description="asc: oldest first (the default); desc: newest first"),
    ] = "asc",
) -> list[ReadingOut]:
    """Recorded readings of one point within ``[since, until)``, oldest first, or newest
    first with ``order=desc`` (``limit`` then keeps the newest)."""
    _window(since, until)
    _known_point(read_model, device_id, point)
    found = read_model.readings(
        device_id, point, since=since, until=until, limit=limit, newest_first=order == "desc"
    )
    return [
        ReadingOut(
            ts=r.ts,
            value=None if math.isnan(r.value) else r.value,
            quality=r.quality,
            error=r.error,
        )
        for r in found
    ]
