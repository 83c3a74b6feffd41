"""``/api/faults``: open lamp and driver faults of the street segments — the maintenance list.

Rule: faults come from the snapshot (the last completed cycle), optionally of one segment (an
unknown segment is a 404 naming the known ones). Tagged ``lighting``.
"""

from __future__ import annotations

from fastapi import APIRouter

from laterne.models.snapshot import FaultView

from .deps import ReadModelDep
from .errors import not_found

__all__ = ["router"]

router = APIRouter(tags=["lighting"])


@router.get("/api/faults", response_model=list[FaultView])
def faults(read_model: ReadModelDep, segment: str | None = None) -> list[FaultView]:
    snap = read_model.snapshot()
    if segment is None:
        return list(snap.faults)
    known = [s.id for s in snap.segments]
    if segment not in known:
        raise not_found("segment", segment, known)
    return [f for f in snap.faults if f.segment_id == segment]
