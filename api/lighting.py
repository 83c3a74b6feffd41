"""``/api/segments``: street segments — flow, lighting class, commanded and actual dim level.

Rule: segments come from the snapshot; an unknown id is a 404 naming the known ones. Tagged
``lighting``.
"""

from __future__ import annotations

from fastapi import APIRouter

from laterne.models.snapshot import SegmentView

from .deps import ReadModelDep
from .errors import by_id

__all__ = ["router"]

router = APIRouter(tags=["lighting"])


@router.get("/api/segments", response_model=list[SegmentView])
def segments(read_model: ReadModelDep) -> list[SegmentView]:
    found: list[SegmentView] = read_model.snapshot().segments
    return found


@router.get("/api/segments/{segment_id}", response_model=SegmentView)
def segment(segment_id: str, read_model: ReadModelDep) -> SegmentView:
    return by_id("segment", segment_id, read_model.snapshot().segments)
