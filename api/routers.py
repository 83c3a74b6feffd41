"""The API's routers, one module per concern, each an ``APIRouter`` with its OpenAPI tag.

Rule: a router holds routes and nothing else — no state, no site: each handler gets the site's
:class:`~laterne.controller.readmodel.SiteReadModel` through the ``ReadModelDep`` dependency
(:mod:`laterne.api.deps`). :data:`ROUTERS` is the order the app includes them in, which is the
order of ``/openapi.json``'s paths.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import compliance, devices, faults, health, history, hvac, lighting, site

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    site.router,
    devices.router,
    lighting.router,
    faults.router,
    compliance.router,
    hvac.router,
    history.router,
)
