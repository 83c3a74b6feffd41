"""Compliance with the lighting plan, per segment and interval: the band (and so the EN 13201-2
class) the interval's measured traffic required, the band the commanded level delivered, and
whether the light was below what was required.

Rule: pure and vectorised over the trailing segment axis (a leading time or scenario axis
broadcasts); no hysteresis and no forecast here — the requirement is read from the measured flow
alone, so a policy cannot judge itself by its own smoothing. The judgement is by class, not by
the plan's levels: a segment is compliant when its level reaches the lowest level that delivers
the class of the band its traffic required (``SegmentArrays.band_need_pct``: the class's
required value ÷ the ``design_class``'s, or the band's own level for a segment without a
design class); a band's own level always does (``models/site.py`` refuses one that does not),
so a policy may light below the plan's level (a curfew) and still comply. The delivered band is
the highest whose class the level delivers. Where the flow is unknown (NaN) or no light is
required (daylight), nothing is required: band ``-1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from laterne.models.layout import SiteLayout
from laterne.models.values import BoolArray, FloatArray

__all__ = ["LEVEL_TOLERANCE_PCT", "Compliance", "compliance", "required_level_pct"]

#: a level this close below a band's level still delivers it: the controllers' 0.1 % grid and
#: the float round trip through a register [%]
LEVEL_TOLERANCE_PCT = 0.05

IdxArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class Compliance:
    """Per (…, segment): the required and delivered band index (``-1``: none required / below
    the first band), and whether the interval was under-lit."""

    required_band: IdxArray
    delivered_band: IdxArray
    violation: BoolArray

    def class_names(self, layout: SiteLayout, band: IdxArray) -> list[str]:
        """The class names of one interval's bands (1-D), ``""`` for ``-1``."""
        return [layout.segments.band_class[s][int(j)] if j >= 0 else "" for s, j in enumerate(band)]


def compliance(
    layout: SiteLayout, flow_veh_h: FloatArray, dim_pct: FloatArray, light_required: BoolArray
) -> Compliance:
    """Judge levels ``dim_pct`` against the bands the measured ``flow_veh_h`` requires (…, S),
    where ``light_required`` (…, S or broadcastable: it is dark) is true."""
    seg = layout.segments
    real = np.isfinite(seg.band_min_flow_veh_h)  # (S, B): padding is +inf
    known = np.isfinite(flow_veh_h) & np.asarray(light_required, dtype=bool)
    q = np.where(known, flow_veh_h, 0.0)
    required = (seg.band_min_flow_veh_h <= q[..., None]).sum(axis=-1) - 1
    required = np.where(known, required, -1).astype(np.intp)
    need_pct = np.take_along_axis(
        np.broadcast_to(seg.band_need_pct, (*q.shape, seg.band_need_pct.shape[-1])),
        np.maximum(required, 0)[..., None],
        axis=-1,
    )[..., 0]
    reaches = real & (seg.band_need_pct <= dim_pct[..., None] + LEVEL_TOLERANCE_PCT)
    b = seg.band_need_pct.shape[-1]
    delivered = np.where(reaches.any(axis=-1), b - 1 - np.argmax(reaches[..., ::-1], axis=-1), -1)
    violation = known & ~(dim_pct + LEVEL_TOLERANCE_PCT >= need_pct)
    return Compliance(
        required_band=required, delivered_band=delivered.astype(np.intp), violation=violation
    )


def required_level_pct(
    layout: SiteLayout, flow_veh_h: FloatArray, light_required: BoolArray
) -> FloatArray:
    """The lowest level (…, S) that :func:`compliance` accepts for the measured ``flow_veh_h``:
    the need of the band the flow required (below the first band: the first band's), 0 where
    nothing is required (daylight, unknown flow)."""
    seg = layout.segments
    known = np.isfinite(flow_veh_h) & np.asarray(light_required, dtype=bool)
    q = np.where(known, flow_veh_h, 0.0)
    band = np.maximum((seg.band_min_flow_veh_h <= q[..., None]).sum(axis=-1) - 1, 0)
    need = np.take_along_axis(
        np.broadcast_to(seg.band_need_pct, (*q.shape, seg.band_need_pct.shape[-1])),
        band[..., None],
        axis=-1,
    )[..., 0]
    out: FloatArray = np.where(known, need, 0.0)
    return out
