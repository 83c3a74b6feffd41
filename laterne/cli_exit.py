"""How the ``laterne`` commands give up on bad input: one line on stderr and exit 2, never a
traceback; a bad site file is reported as ``laterne validate`` reports it (file, line, field).

Rule: part of the composition root; the command modules (``cli``, ``simulate_cli``,
``override_cli``) call these two instead of writing their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from laterne.models.site import SiteConfig, SiteConfigError, load_site

__all__ = ["fail", "load_site_or_exit"]


def fail(message: str) -> NoReturn:
    """``message`` on stderr, exit 2."""
    typer.echo(message, err=True)
    raise typer.Exit(code=2)


def load_site_or_exit(path: Path) -> SiteConfig:
    """The site at ``path``, or its refusal on stderr and exit 2."""
    try:
        return load_site(path)
    except SiteConfigError as exc:
        fail(str(exc))
