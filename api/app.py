"""The HTTP API and the dashboard page: a read-only window on a running site.

Rules
-----
- **The API depends on** :class:`~laterne.controller.view.SiteView` **only.** Nothing in ``api/``
  imports ``laterne.drivers``; the runtime (or a test) hands :func:`create_app` something that
  implements the Protocol, and every answer is built from what it returns.
- **Responses are the models of** :mod:`laterne.models.snapshot`, so ``/openapi.json`` documents
  exactly what the runtime builds. JSON has no NaN: a NaN float is sent as ``null``.
- **Times are aware.** Query datetimes are ISO 8601 *with* an offset (``Z`` or ``+01:00``); a naive
  one is refused with 422, never guessed. Answers are UTC.
- **Errors have one shape.** Unknown ids are 404 ``{"detail": "unknown device 'x'; known: a, b"}``
  (an unknown point: ``unknown point 'p' of device 'x'; known: ...``); every bad query parameter
  is FastAPI's 422 ``{"detail": [{"loc", "msg", "type"}, ...]}``.
- **No internet needed.** ``/docs`` (Swagger UI) and ``/redoc`` load their JavaScript and CSS from
  this app (the assets of the ``fastapi-offline`` package, mounted at :data:`DOCS_STATIC_URL`),
  never from a CDN: a city's control network is usually cut off from the internet.
- Handlers are plain ``def``: the view may read history from disk, so FastAPI runs them in its
  thread pool and the event loop never blocks on a query.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from importlib import metadata, resources
from typing import Annotated, Literal, Protocol, TypeVar

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import AwareDatetime, BaseModel, ConfigDict

from laterne.controller.view import SiteView
from laterne.models.snapshot import (
    AggregateRecord,
    BuildingView,
    CommandRecord,
    DeviceStateRecord,
    DeviceView,
    DriftRecord,
    HistoryStatus,
    LoopStatus,
    QueueStatus,
    SegmentView,
    SiteSnapshot,
)
from laterne.models.values import Quality

__all__ = ["Health", "ReadingOut", "create_app"]

TITLE = "Laterne"
_FALLBACK_VERSION = "0.1.0"
_MAX_KNOWN_IDS = 50  # ids listed in a 404 message before "… and N more"
COMMANDS_LIMIT_MAX = 1000
READINGS_LIMIT_MAX = 10_000
#: where the Swagger UI / ReDoc assets (shipped in the ``fastapi_offline`` package) are served
DOCS_STATIC_URL = "/static-docs"
_DOCS_ASSETS_PACKAGE = "fastapi_offline"


#: the loop is ``stalled`` when no cycle succeeded for this many cycle periods
STALL_CYCLES = 3


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


class ReadingOut(BaseModel):
    """One recorded reading of a point. ``value`` is null when it was NaN (not good)."""

    model_config = ConfigDict(frozen=True)

    ts: datetime
    value: float | None
    quality: Quality
    error: str


def _version() -> str:
    try:
        return metadata.version("laterne")
    except metadata.PackageNotFoundError:
        return _FALLBACK_VERSION


def _index_html() -> str:
    return (resources.files("laterne.api") / "static" / "index.html").read_text(encoding="utf-8")


def _not_found(kind: str, wanted: str, known: Sequence[str], of: str = "") -> HTTPException:
    """404 naming what was asked and what exists: ``unknown device 'x'; known: a, b``.

    ``of`` qualifies the id, e.g. ``" of device 'ctr-1'"`` for a point.
    """
    shown = ", ".join(known[:_MAX_KNOWN_IDS]) if known else "(none)"
    if len(known) > _MAX_KNOWN_IDS:
        shown += f", … and {len(known) - _MAX_KNOWN_IDS} more"
    return HTTPException(status_code=404, detail=f"unknown {kind} {wanted!r}{of}; known: {shown}")


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


_V = TypeVar("_V", bound=_HasId)


def _by_id(kind: str, wanted: str, items: Sequence[_V]) -> _V:
    """The item with id ``wanted``, else the 404 that names the known ids."""
    for item in items:
        if item.id == wanted:
            return item
    raise _not_found(kind, wanted, [i.id for i in items])


def _invalid_query(name: str, message: str, value: object) -> RequestValidationError:
    """A 422 shaped exactly like FastAPI's own validation errors."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", name), "msg": message, "input": value}]
    )


def create_app(view: SiteView) -> FastAPI:
    """Build the FastAPI application serving ``view``.

    The app keeps no state of its own: each request asks ``view`` afresh.
    """
    app = FastAPI(
        title=TITLE,
        version=_version(),
        description="Street lighting and public-building HVAC: live state, commands, history.",
        docs_url=None,  # FastAPI's own pages load Swagger UI / ReDoc from a CDN: served below
        redoc_url=None,
        openapi_url="/openapi.json",
        # Swagger UI would otherwise ask validator.swagger.io for a badge image
        swagger_ui_parameters={"validatorUrl": None},
    )
    index_html = _index_html()  # read once: a missing page fails at startup, not per request
    _add_offline_docs(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(index_html)

    @app.get(
        "/api/health",
        response_model=Health,
        tags=["site"],
        responses={503: {"model": Health, "description": "the control loop is stalled"}},
    )
    def health() -> JSONResponse:
        """Is the controller controlling? 200 unless the loop is stalled (503)."""
        found = _health(view)
        code = 503 if found.status == "stalled" else 200
        return JSONResponse(found.model_dump(mode="json"), status_code=code)

    @app.get("/api/site", response_model=SiteSnapshot, tags=["site"])
    def site() -> SiteSnapshot:
        return view.snapshot()

    @app.get("/api/devices", response_model=list[DeviceView], tags=["devices"])
    def devices(
        quality: Annotated[
            Quality | None, Query(description="only devices of this quality")
        ] = None,
    ) -> list[DeviceView]:
        found: list[DeviceView] = view.snapshot().devices
        return found if quality is None else [d for d in found if d.quality == quality]

    @app.get("/api/devices/{device_id}", response_model=DeviceView, tags=["devices"])
    def device(device_id: str) -> DeviceView:
        return _by_id("device", device_id, view.snapshot().devices)

    @app.get(
        "/api/devices/{device_id}/states",
        response_model=list[DeviceStateRecord],
        tags=["devices"],
    )
    def device_states(
        device_id: str,
        limit: Annotated[int, Query(ge=1, le=1000, description="at most this many")] = 100,
    ) -> list[DeviceStateRecord]:
        """Quality changes of one device (online, stale, faulty, offline), newest first."""
        _by_id("device", device_id, view.snapshot().devices)
        return view.device_state_changes(device_id=device_id, limit=limit)

    @app.get(
        "/api/devices/{device_id}/drifts",
        response_model=list[DriftRecord],
        tags=["devices"],
    )
    def device_drifts(
        device_id: str,
        limit: Annotated[int, Query(ge=1, le=1000, description="at most this many")] = 100,
    ) -> list[DriftRecord]:
        """Times a commanded point of this device was found holding something else than its
        command (reset, changed by hand, out of range), newest first, and whether the command
        was re-sent."""
        _by_id("device", device_id, view.snapshot().devices)
        return view.drift_events(device_id=device_id, limit=limit)

    @app.get("/api/segments", response_model=list[SegmentView], tags=["lighting"])
    def segments() -> list[SegmentView]:
        found: list[SegmentView] = view.snapshot().segments
        return found

    @app.get("/api/segments/{segment_id}", response_model=SegmentView, tags=["lighting"])
    def segment(segment_id: str) -> SegmentView:
        return _by_id("segment", segment_id, view.snapshot().segments)

    @app.get("/api/buildings", response_model=list[BuildingView], tags=["hvac"])
    def buildings() -> list[BuildingView]:
        found: list[BuildingView] = view.snapshot().buildings
        return found

    @app.get("/api/buildings/{building_id}", response_model=BuildingView, tags=["hvac"])
    def building(building_id: str) -> BuildingView:
        return _by_id("building", building_id, view.snapshot().buildings)

    @app.get("/api/commands", response_model=list[CommandRecord], tags=["history"])
    def commands(
        limit: Annotated[int, Query(ge=1, le=COMMANDS_LIMIT_MAX)] = 100,
        device_id: Annotated[str | None, Query(description="only commands to this device")] = None,
    ) -> list[CommandRecord]:
        """Most recent commands first."""
        if device_id is not None:
            _by_id("device", device_id, view.snapshot().devices)
        found: list[CommandRecord] = view.recent_commands(limit=limit, device_id=device_id)
        return found

    @app.get("/api/history", response_model=HistoryStatus, tags=["history"])
    def history() -> HistoryStatus:
        """The embedded history's size and retention, and every mirror's backlog and health."""
        return view.history_status()

    def _known_point(device_id: str, point: str) -> None:
        dev = _by_id("device", device_id, view.snapshot().devices)
        points = [p.point for p in dev.points]
        if point not in points:
            raise _not_found("point", point, points, of=f" of device {device_id!r}")

    def _window(since: datetime | None, until: datetime | None) -> None:
        if since is not None and until is not None and since >= until:
            raise _invalid_query(
                "until",
                f"until ({until.isoformat()}) must be after since ({since.isoformat()})",
                until.isoformat(),
            )

    @app.get("/api/aggregates", response_model=list[AggregateRecord], tags=["history"])
    def aggregates(
        device_id: str,
        point: str,
        since: Annotated[
            AwareDatetime | None,
            Query(description="inclusive; ISO 8601 with offset, e.g. 2024-11-05T22:00:00Z"),
        ] = None,
        until: Annotated[
            AwareDatetime | None, Query(description="exclusive; ISO 8601 with offset")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    ) -> list[AggregateRecord]:
        """Buckets of one point's readings older than the raw retention, oldest first: count,
        good count, mean, min, max and last of each bucket (see /api/history for the width)."""
        _window(since, until)
        _known_point(device_id, point)
        return view.aggregates(device_id, point, since=since, until=until, limit=limit)

    @app.get("/api/readings", response_model=list[ReadingOut], tags=["history"])
    def readings(
        device_id: str,
        point: str,
        since: Annotated[
            AwareDatetime | None,
            Query(description="inclusive; ISO 8601 with offset, e.g. 2024-11-05T22:00:00Z"),
        ] = None,
        until: Annotated[
            AwareDatetime | None, Query(description="exclusive; ISO 8601 with offset")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=READINGS_LIMIT_MAX)] = 1000,
        order: Annotated[
            Literal["asc", "desc"],
            Query(description="asc: oldest first (the default); desc: newest first"),
        ] = "asc",
    ) -> list[ReadingOut]:
        """Recorded readings of one point within ``[since, until)``, oldest first, or newest
        first with ``order=desc`` (``limit`` then keeps the newest)."""
        _window(since, until)
        _known_point(device_id, point)
        found = view.readings(
            device_id, point, since=since, until=until, limit=limit, newest_first=order == "desc"
        )
        return [
            ReadingOut(
                ts=r.ts,
                value=None if math.isnan(r.value) else r.value,
                quality=r.quality,
                error=r.error,
            )
            for r in found
        ]

    return app


def _health(view: SiteView) -> Health:
    snap = view.snapshot()
    loop = view.loop_status()
    queues = view.history_status().queues
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
        names = ", ".join(f"{d.id} ({d.quality.value})" for d in not_good[:_MAX_KNOWN_IDS])
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


def _add_offline_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with every asset served by ``app`` itself."""
    app.mount(
        DOCS_STATIC_URL,
        StaticFiles(packages=[(_DOCS_ASSETS_PACKAGE, "static")]),
        name="static-docs",
    )
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
            swagger_js_url=f"{root}{DOCS_STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )
