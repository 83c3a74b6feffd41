"""``GET /api/site``: the whole snapshot — devices, segments, buildings — as of the last cycle.

Rule: the answer is the read model's :class:`~laterne.models.snapshot.SiteSnapshot`, unchanged.
Tagged ``site``.
"""

from __future__ import annotations

from fastapi import APIRouter

from laterne.models.snapshot import SiteSnapshot

from .deps import ReadModelDep

__all__ = ["router"]

router = APIRouter(tags=["site"])


@router.get("/api/site", response_model=SiteSnapshot)
def site(read_model: ReadModelDep) -> SiteSnapshot:
    return read_model.snapshot()
