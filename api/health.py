"""``GET /api/health``: is the controller controlling? For people and for an external monitor.

Rule: the answer is built from the read model's snapshot, loop status and history queues only.
``status``, worst first: ``stalled`` (no cycle succeeded for ``STALL_CYCLES`` × ``cycle_s``:
**HTTP 503**), ``failing`` (the last cycle failed), ``degraded`` (a device not good, or a store
not taking writes), ``ok``; every reason is in ``problems``, in words. Tagged ``site``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from laterne.controller.readmodel import SiteReadModel
from laterne.models.snapshot import LoopStatus, QueueStatus
from laterne.models.values import Quality

from .deps import ReadModelDep
from .errors import MAX_KNOWN_IDS

__all__ = ["STALL_CYCLES", "Health", "assess", "router"]

#: the loop is ``stalled`` when no cycle succeeded for this many cycle periods
STALL_CYCLES = 3

router = APIRouter(tags=["site"])


class Health(BaseModel):
    """Liveness and progress of the control loop, the devices and the history.

    ``status``, worst first:

    - ``stalled`` — no control cycle succeeded for ``STALL_CYCLES`` × ``cycle_s``: the answer is
      **HTTP 503**, so an external monitor alerts;
    - ``failing`` — the last cycle failed (``consecutive_failures`` > 0, ``last_error`` says why);
    - ``degraded`` — cycles succeed, but a device is not good or a history store does not take
      writes (its records wait in memory: ``history``);
    - ``ok`` — everything is good.

    ``problems`` says each reason in words.
    """

    model_config = ConfigDict(frozen=True)

    status: Literal["ok", "degraded", "failing", "stalled"]
    problems: list[str]
    devices_not_good: int
    cycle: int
    last_cycle_at: datetime | None  # None before the first completed cycle
    loop: LoopStatus
    history: list[QueueStatus]


@router.get(
    "/api/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "the control loop is stalled"}},
)
def health(read_model: ReadModelDep) -> JSONResponse:
    """Is the controller controlling? 200 unless the loop is stalled (503)."""
    found = assess(read_model)
    code = 503 if found.status == "stalled" else 200
    return JSONResponse(found.model_dump(mode="json"), status_code=code)


def assess(read_model: SiteReadModel) -> Health:
    """The site's health now (see the module docstring for the rules)."""
    snap = read_model.snapshot()
    loop = read_model.loop_status()
    queues = read_model.history_status().queues
    problems: list[str] = []
    stalled = loop.since_success_s > STALL_CYCLES * loop.cycle_s
    if stalled:
        problems.append(
            f"no control cycle succeeded for {loop.since_success_s:.0f} s "
            f"(cycle every {loop.cycle_s:g} s)"
        )
    if loop.consecutive_failures:
        problems.append(f"{loop.consecutive_failures} cycle(s) failed in a row: {loop.last_error}")
    not_good = [d for d in snap.devices if d.quality != Quality.GOOD]
    if not_good:
        names = ", ".join(f"{d.id} ({d.quality.value})" for d in not_good[:MAX_KNOWN_IDS])
        problems.append(f"{len(not_good)} device(s) not good: {names}")
    for q in queues:
        if not q.writable:
            problems.append(
                f"history {q.store} does not take writes ({q.last_error}); "
                f"{q.queued_readings} readings and {q.queued_records} records wait in memory"
            )
        if q.dropped_readings:
            problems.append(f"history {q.store}: {q.dropped_readings} readings dropped")
    status: Literal["ok", "degraded", "failing", "stalled"]
    if stalled:
        status = "stalled"
    elif loop.consecutive_failures:
        status = "failing"
    elif problems:
        status = "degraded"
    else:
        status = "ok"
    return Health(
        status=status,
        problems=problems,
        devices_not_good=len(not_good),
        cycle=snap.cycle,
        last_cycle_at=snap.ts,
        loop=loop,
        history=list(queues),
    )
