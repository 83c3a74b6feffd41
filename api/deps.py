"""How a route gets the running site: one FastAPI dependency, so the routers never hold state.

Rule: every route that reads the site declares ``read_model: ReadModelDep``; FastAPI resolves it
through :func:`get_read_model` to the :class:`~laterne.controller.readmodel.SiteReadModel` that
:func:`~laterne.api.app.create_app` was given (kept in ``app.state``). A per-router dependency
(authentication, say) is added where the router is built, beside this one, never in a handler.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from laterne.controller.readmodel import SiteReadModel

__all__ = ["ReadModelDep", "get_read_model"]


async def get_read_model(request: Request) -> SiteReadModel:
    """The read model of the app serving ``request`` (async: no thread hop for a lookup)."""
    read_model: SiteReadModel = request.app.state.read_model
    return read_model


#: a route parameter that FastAPI fills with the site's read model
ReadModelDep = Annotated[SiteReadModel, Depends(get_read_model)]
