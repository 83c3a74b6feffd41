"""``/api/buildings``: buildings — outdoor temperature, heating power, zones and setpoints.

Rule: buildings come from the snapshot; an unknown id is a 404 naming the known ones. Tagged
``hvac``.
"""

from __future__ import annotations

from fastapi import APIRouter

from laterne.models.snapshot import BuildingView

from .deps import ReadModelDep
from .errors import by_id

__all__ = ["router"]

router = APIRouter(tags=["hvac"])


@router.get("/api/buildings", response_model=list[BuildingView])
def buildings(read_model: ReadModelDep) -> list[BuildingView]:
    found: list[BuildingView] = read_model.snapshot().buildings
    return found


@router.get("/api/buildings/{building_id}", response_model=BuildingView)
def building(building_id: str, read_model: ReadModelDep) -> BuildingView:
    return by_id("building", building_id, read_model.snapshot().buildings)
