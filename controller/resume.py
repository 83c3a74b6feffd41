"""Saving the policy's state and resuming from it after a restart, so a restart does not flicker.

Rule: pure. :func:`dump_state` turns a :class:`PolicyState` into JSON text; :func:`load_state`
turns it back and refuses (:class:`ResumeRefused`) a state that belongs to another layout (the
site file changed: other segments, counters or zones), that is malformed, or that is older than
``max_age_s`` — the policy then starts from nothing, conservatively (see ``controller.policy``:
no band steps down until the flow estimate is warm). Arrays travel as lists, NaN as ``null``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import fields
from datetime import datetime
from typing import Any

import numpy as np

from laterne.models.layout import SiteLayout

from .policy import PolicyState

__all__ = ["ResumeRefused", "dump_state", "layout_fingerprint", "load_state"]

_FORMAT = 1


class ResumeRefused(ValueError):
    """A saved state that must not be resumed from; the message says why."""


def layout_fingerprint(layout: SiteLayout) -> str:
    """A short hash of what the state's arrays are indexed by: segments, channels, zones, bands."""
    parts = {
        "segments": list(layout.segments.ids),
        "channels": [str(c) for c in layout.channels.refs],
        "zones": list(layout.zones.ids),
        "bands": [list(map(float, row)) for row in layout.segments.band_min_flow_veh_h.tolist()],
    }
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def dump_state(state: PolicyState) -> str:
    """JSON text of ``state`` (NaN as null)."""
    body = {f.name: _plain(getattr(state, f.name)) for f in fields(state)}
    return json.dumps({"format": _FORMAT, "state": body}, separators=(",", ":"))


def load_state(
    payload: str,
    fingerprint: str,
    saved_at: datetime,
    layout: SiteLayout,
    template: PolicyState,
    now: datetime,
    max_age_s: float,
) -> PolicyState:
    """The saved state, checked against ``layout`` and shaped like ``template``.

    Raises
    ------
    ResumeRefused
        another layout, too old (or from the future), or malformed.
    """
    if fingerprint != layout_fingerprint(layout):
        raise ResumeRefused("the site's segments, counters or zones changed since it was saved")
    age_s = (now - saved_at).total_seconds()
    if age_s > max_age_s:
        raise ResumeRefused(f"it is {age_s:.0f} s old (resumed only up to {max_age_s:.0f} s)")
    if age_s < -1.0:
        raise ResumeRefused(f"it is from the future ({-age_s:.0f} s ahead of the clock)")
    try:
        doc = json.loads(payload)
        if doc.get("format") != _FORMAT:
            raise ResumeRefused(f"unknown format {doc.get('format')!r}")
        body = doc["state"]
        values: dict[str, Any] = {}
        for f in fields(template):
            like = getattr(template, f.name)
            raw = body[f.name]
            if isinstance(like, np.ndarray):
                arr = np.array(
                    [np.nan if v is None else v for v in raw], dtype=like.dtype
                ) if like.dtype.kind == "f" else np.array(raw, dtype=like.dtype)
                if arr.shape != like.shape:
                    raise ResumeRefused(f"{f.name} has shape {arr.shape}, expected {like.shape}")
                values[f.name] = arr
            else:
                values[f.name] = float("nan") if raw is None else float(raw)
    except ResumeRefused:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ResumeRefused(f"malformed saved state: {exc}") from None
    return PolicyState(**values)
