"""The HTTP API and the dashboard page: a read-only window on a running site.

Rules
-----
- **The API depends on** :class:`~laterne.controller.readmodel.SiteReadModel` **only.** Nothing
  in ``api/`` imports ``laterne.drivers``; the runtime (or a test) hands :func:`create_app`
  something that implements the Protocol, kept in ``app.state`` and given to every route by the
  ``ReadModelDep`` dependency (:mod:`laterne.api.deps`); every answer is built from what it
  returns.
- **Routers by concern**, one module each (:data:`laterne.api.routers.ROUTERS`): ``health`` and
  ``site`` (tag ``site``), ``devices``, ``lighting``, ``hvac``, ``history``; each is an
  ``APIRouter`` with its tag, so a dependency (authentication) can be added per router.
- **Responses are the models of** :mod:`laterne.models.snapshot` (and the routers' own
  ``Health`` and ``ReadingOut``), so ``/openapi.json`` documents exactly what the runtime
  builds. JSON has no NaN: a NaN float is sent as ``null``.
- **Times are aware.** Query datetimes are ISO 8601 *with* an offset (``Z`` or ``+01:00``); a naive
  one is refused with 422, never guessed. Answers are UTC.
- **Errors have one shape** (:mod:`laterne.api.errors`): unknown ids are 404 ``{"detail":
  "unknown device 'x'; known: a, b"}``; every bad query parameter is FastAPI's 422 ``{"detail":
  [{"loc", "msg", "type"}, ...]}``.
- **No internet needed.** ``/docs`` (Swagger UI) and ``/redoc`` load their JavaScript and CSS from
  this app (the assets of the ``fastapi-offline`` package, mounted at :data:`DOCS_STATIC_URL`),
  never from a CDN: a city's control network is usually cut off from the internet.
- Handlers are plain ``def``: the read model may read history from disk, so FastAPI runs them in
  its thread pool and the event loop never blocks on a query.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from laterne.controller.readmodel import SiteReadModel
from laterne.models.version import version

from .health import Health
from .history import ReadingOut
from .routers import ROUTERS

__all__ = ["DOCS_STATIC_URL", "TITLE", "Health", "ReadingOut", "create_app"]

TITLE = "Laterne"
#: where the Swagger UI / ReDoc assets (shipped in the ``fastapi_offline`` package) are served
DOCS_STATIC_URL = "/static-docs"
_DOCS_ASSETS_PACKAGE = "fastapi_offline"


def _index_html() -> str:
    return (resources.files("laterne.api") / "static" / "index.html").read_text(encoding="utf-8")


def create_app(read_model: SiteReadModel) -> FastAPI:
    """Build the FastAPI application serving ``read_model``.

    The app keeps no state of its own but ``read_model``: each request asks it afresh.
    """
    app = FastAPI(
        title=TITLE,
        version=version(),
        description="Street lighting and public-building HVAC: live state, commands, history.",
        docs_url=None,  # FastAPI's own pages load Swagger UI / ReDoc from a CDN: served below
        redoc_url=None,
        openapi_url="/openapi.json",
        # Swagger UI would otherwise ask validator.swagger.io for a badge image
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.read_model = read_model
    index_html = _index_html()  # read once: a missing page fails at startup, not per request
    _add_offline_docs(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(index_html)

    for router in ROUTERS:
        app.include_router(router)
    return app


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
