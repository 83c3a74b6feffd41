"""``/api/compliance``: the live compliance record — per segment the intervals lit and lit below
the EN 13201-2 class their measured traffic required, and the last closed intervals.

Rule: the record comes from the read model (the runtime's tally as of the last cycle); an
unknown segment is a 404 naming the known ones. Tagged ``lighting``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from laterne.models.snapshot import ComplianceView

from .deps import ReadModelDep
from .errors import not_found

__all__ = ["router"]

router = APIRouter(tags=["lighting"])


@router.get("/api/compliance", response_model=ComplianceView)
def compliance(
    read_model: ReadModelDep,
    segment: str | None = None,
    since: Annotated[
        AwareDatetime | None,
        Query(description="only intervals ending after this; ISO 8601 with offset"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
) -> ComplianceView:
    if segment is not None:
        known = [s.id for s in read_model.snapshot().segments]
        if segment not in known:
            raise not_found("segment", segment, known)
    return read_model.compliance(segment=segment, since=since, limit=limit)
