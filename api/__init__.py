"""Laterne api layer: the HTTP API and the dashboard page.

Rule: this package reads the site through
:class:`laterne.controller.readmodel.SiteReadModel` only and never imports ``laterne.drivers``.
"""

from .app import create_app

__all__ = ["create_app"]
