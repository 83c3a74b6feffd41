"""Point-level rules shared by every driver: what makes a reading FAULTY, what makes a command
refusable. Pure functions, no I/O.

Rule: a decoded value outside its point's ``[min, max]`` (or not finite) is a reading with
quality FAULTY, value NaN and an error text, never a dropped point and never ``None``. A command
is checked against the point's ``writable`` flag and ``[min, max]`` *before* any byte is sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

from laterne.models.site import PointSpec
from laterne.models.values import PointReading, Quality

from .errors import NotWritable, OutOfBounds

__all__ = ["check_command", "faulty_reading", "reading_from_value", "require_utc"]


def require_utc(now: datetime) -> None:
    """Raise ``ValueError`` unless ``now`` is timezone-aware (readings are stamped in UTC)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now!r}")


def faulty_reading(device_id: str, point: str, now: datetime, error: str) -> PointReading:
    """A FAULTY reading: the device answered, but this value cannot be trusted."""
    return PointReading(device_id, point, math.nan, Quality.FAULTY, now, error)


def reading_from_value(
    device_id: str, point: str, spec: PointSpec, value: float, now: datetime
) -> PointReading:
    """A GOOD reading, or a FAULTY one if ``value`` is not finite or outside ``[min, max]``."""
    if not math.isfinite(value):
        return faulty_reading(device_id, point, now, f"value {value!r} is not finite")
    lo, hi = spec.bounds
    if not lo <= value <= hi:
        unit = f" {spec.unit}" if spec.unit else ""
        return faulty_reading(
            device_id, point, now, f"value {value!r}{unit} is outside [{spec.min}, {spec.max}]"
        )
    return PointReading(device_id, point, value, Quality.GOOD, now)


def check_command(
    device_id: str, points: Mapping[str, PointSpec], point: str, value: float
) -> PointSpec:
    """Return the spec of ``point`` if ``value`` may be written to it; raise otherwise.

    Raises
    ------
    NotWritable
        the profile has no such point, or it is not writable.
    OutOfBounds
        ``value`` is NaN or outside the point's ``[min, max]``.
    """
    spec = points.get(point)
    if spec is None:
        raise NotWritable(f"{device_id}: no point {point!r}")
    if not spec.writable:
        raise NotWritable(f"{device_id}: point {point!r} is read-only")
    # the site model guarantees min and max for writable points
    lo, hi = spec.bounds
    if not lo <= value <= hi:  # False for NaN as well
        raise OutOfBounds(point, value, lo, hi, context=device_id)
    return spec
