"""Operators' overrides: checked against the site and turned into what the safety filter applies.

Rule: pure (no I/O, no clock). One function, :func:`resolve_override`, decides whether a request
or a stored override is acceptable for this site and what value it commands; the CLI calls it
before storing, the runtime before storing and again when it loads stored ones (the site file
may have changed since). The bounds are the safety filter's own, read from the layout's actuator
groups (``[lo, hi]``, the intersection of the site's limits and the point's; 0 only where
``off_allowed``): an override outside them is refused here rather than silently clamped there.

A class override (``lighting_class``, segments only) commands the lowest level that delivers
the class with the segment's ``design_class`` (:func:`~laterne.models.lighting.dim_pct_for_class`,
raised to the segment's lower bound unless the class is ``unlit``) — the rule
``Segment.band_levels_pct`` applies to a band without ``dim_pct``. A segment without a design
class has only its plan's word: the level of its band of that class.

Errors (all :class:`ValueError`)::

    OverrideRefused
    ├── UnknownOverrideTarget   the site has no such segment or zone (or target kind)
    ├── OverrideOutOfBounds     the value (or the class's level) is outside the bounds
    ├── OverrideClassRefused    no such class, another family, or no level for it
    └── OverrideWindowRefused   end <= start
"""

from __future__ import annotations

from laterne.models.layout import SiteLayout
from laterne.models.lighting import UnknownLightingClass, dim_pct_for_class, lighting_class
from laterne.models.site import Segment, SiteConfig
from laterne.models.snapshot import OverrideRecord
from laterne.models.values import Override, OverrideRequest

__all__ = [
    "TARGETS",
    "OverrideClassRefused",
    "OverrideOutOfBounds",
    "OverrideRefused",
    "OverrideWindowRefused",
    "UnknownOverrideTarget",
    "resolve_override",
]

#: target kind -> the actuator group of the layout it overrides
TARGETS = {"segment": "dim", "zone": "setpoint"}
_UNITS = {"segment": "%", "zone": "°C"}


class OverrideRefused(ValueError):
    """An override this site cannot apply; the message says why, for an operator."""


class UnknownOverrideTarget(OverrideRefused):
    """An override names a segment or zone the site does not have."""


class OverrideOutOfBounds(OverrideRefused):
    """The value an override commands lies outside its segment's or zone's bounds."""


class OverrideClassRefused(OverrideRefused):
    """A lighting class that is unknown, of another family, or not deliverable here."""


class OverrideWindowRefused(OverrideRefused):
    """An override that ends at or before its start."""


def _segment(site: SiteConfig, segment_id: str) -> Segment:
    for s in site.segments:
        if s.id == segment_id:
            return s
    raise UnknownOverrideTarget(f"unknown segment {segment_id!r}")  # checked before


def _class_level(site: SiteConfig, segment_id: str, name: str, lo: float) -> float:
    seg = _segment(site, segment_id)
    try:
        wanted = lighting_class(name)
    except UnknownLightingClass as exc:
        raise OverrideClassRefused(str(exc)) from None
    if seg.design_class is None:
        for band, level in zip(seg.bands, seg.band_levels_pct(), strict=True):
            if band.lighting_class == wanted.name:
                return level
        have = ", ".join(b.lighting_class for b in seg.bands)
        raise OverrideClassRefused(
            f"segment {segment_id!r} has no design_class and no band of class {wanted.name} "
            f"(its bands: {have}): give --level instead"
        )
    design = lighting_class(seg.design_class)
    try:
        need = dim_pct_for_class(wanted, design)
    except ValueError:
        raise OverrideClassRefused(
            f"class {wanted.name} is not of the family of segment {segment_id!r} "
            f"({design.family}, design class {design.name})"
        ) from None
    return need if need == 0 else max(need, lo)


def resolve_override(
    site: SiteConfig, layout: SiteLayout, request: OverrideRequest | OverrideRecord
) -> Override:
    """The override the safety filter applies for ``request``, or why it cannot be.

    Raises
    ------
    OverrideRefused
        one of its subclasses (see the module docstring); the message is for an operator.
    """
    kind, target_id = request.target, request.target_id
    if request.end <= request.start:
        raise OverrideWindowRefused(
            f"override end {request.end.isoformat()} is not after its start "
            f"{request.start.isoformat()}"
        )
    group_name = TARGETS.get(kind)
    if group_name is None:
        raise UnknownOverrideTarget(
            f"unknown override target {kind!r}: one of {', '.join(TARGETS)}"
        )
    group = layout.actuators[group_name]
    index = group.index.get(target_id)
    if index is None:
        known = ", ".join(group.ids) or "none"
        raise UnknownOverrideTarget(f"unknown {kind} {target_id!r} (this site has: {known})")
    lo, hi = float(group.lo[index]), float(group.hi[index])
    off_allowed = bool(group.off_allowed[index])
    unit = _UNITS[kind]
    if (request.value is None) == (request.lighting_class is None):
        raise OverrideRefused("an override needs exactly one of a value and a lighting class")
    if request.lighting_class is not None:
        if kind != "segment":
            raise OverrideClassRefused("a lighting class overrides a segment, not a zone")
        value = _class_level(site, target_id, request.lighting_class, lo)
        what = f"class {request.lighting_class} needs {value:g} {unit}, which"
    else:
        value = float(request.value) if request.value is not None else 0.0
        what = f"{value:g} {unit}"
    if value != value:  # NaN
        raise OverrideOutOfBounds(f"override value for {kind} {target_id!r} is not a number")
    off = value == 0 and off_allowed
    if not off and not lo <= value <= hi:
        allowed = f"[{lo:g}, {hi:g}] {unit}" + (" or 0 (off)" if off_allowed else "")
        raise OverrideOutOfBounds(f"{what} is outside the bounds {allowed} of {kind} {target_id!r}")
    return Override(
        target=kind,
        id=target_id,
        value=value,
        start=request.start,
        end=request.end,
        reason=request.reason,
        author=request.author,
    )
