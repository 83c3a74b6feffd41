"""``/api/devices``: every device's quality and points, one device, its quality changes, its
drifts.

Rule: devices come from the snapshot; an unknown device id is a 404 naming the known ones, also
for its states and drifts (asked of the history only once the device is known). Tagged
``devices``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from laterne.models.snapshot import DeviceStateRecord, DeviceView, DriftRecord
from laterne.models.values import Quality

from .deps import ReadModelDep
from .errors import by_id

__all__ = ["router"]

router = APIRouter(tags=["devices"])


@router.get("/api/devices", response_model=list[DeviceView])
def devices(
    read_model: ReadModelDep,
    quality: Annotated[Quality | None, Query(description="only devices of this quality")] = None,
) -> list[DeviceView]:
    found: list[DeviceView] = read_model.snapshot().devices
    return found if quality is None else [d for d in found if d.quality == quality]


@router.get("/api/devices/{device_id}", response_model=DeviceView)
def device(device_id: str, read_model: ReadModelDep) -> DeviceView:
    return by_id("device", device_id, read_model.snapshot().devices)


@router.get("/api/devices/{device_id}/states", response_model=list[DeviceStateRecord])
def device_states(
    device_id: str,
    read_model: ReadModelDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many")] = 100,
) -> list[DeviceStateRecord]:
    """Quality changes of one device (online, stale, faulty, offline), newest first."""
    by_id("device", device_id, read_model.snapshot().devices)
    return read_model.device_state_changes(device_id=device_id, limit=limit)


@router.get("/api/devices/{device_id}/drifts", response_model=list[DriftRecord])
def device_drifts(
    device_id: str,
    read_model: ReadModelDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many")] = 100,
) -> list[DriftRecord]:
    """Times a commanded point of this device was found holding something else than its
    command (reset, changed by hand, out of range), newest first, and whether the command
    was re-sent."""
    by_id("device", device_id, read_model.snapshot().devices)
    return read_model.drift_events(device_id=device_id, limit=limit)
