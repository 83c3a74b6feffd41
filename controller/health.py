"""Device health: the quality state machine of one device, pure.

Rule: a device's quality changes only through :func:`next_device_state`, and the caller logs only
when :func:`changed` says the quality moved (good→offline once, offline→good once), never on every
failed poll. ``last_good_at`` is the last poll that succeeded; ``last_error`` is kept after
recovery so a crew can still see what went wrong.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from laterne.models.values import DeviceState, PointReading, Quality

__all__ = [
    "age_device_state",
    "age_reading",
    "changed",
    "initial_device_state",
    "next_device_state",
]


def initial_device_state(device_id: str, now: datetime) -> DeviceState:
    """Before the first poll a device is offline: nothing it says has been seen yet (and no
    error either: ``last_error`` stays empty until a poll fails)."""
    return DeviceState(device_id, Quality.OFFLINE, None, "", now)


def next_device_state(
    prev: DeviceState, quality: Quality, error: str, now: datetime
) -> DeviceState:
    """State after one poll whose outcome was ``quality`` (GOOD, FAULTY or OFFLINE)."""
    last_good = now if quality is Quality.GOOD else prev.last_good_at
    since = prev.since if quality is prev.quality else now
    return DeviceState(prev.device_id, quality, last_good, error or prev.last_error, since)


def age_device_state(state: DeviceState, now: datetime, stale_after_s: float) -> DeviceState:
    """A GOOD device whose last good poll is older than ``stale_after_s`` becomes STALE."""
    if state.quality is Quality.GOOD and state.last_good_at is not None:
        if (now - state.last_good_at).total_seconds() > stale_after_s:
            return DeviceState(
                state.device_id, Quality.STALE, state.last_good_at, state.last_error, now
            )
    return state


def changed(prev: DeviceState, new: DeviceState) -> bool:
    return prev.quality is not new.quality


def age_reading(reading: PointReading, now: datetime, stale_after_s: float) -> PointReading:
    """A GOOD reading older than ``stale_after_s`` becomes STALE; its value is kept for display,
    but :func:`~laterne.controller.observe.usable` no longer lets the controller act on it."""
    if reading.quality is Quality.GOOD and (now - reading.ts).total_seconds() > stale_after_s:
        return replace(reading, quality=Quality.STALE, error=f"no update for {stale_after_s:g} s")
    return reading
