"""Laterne's version: one answer for the command line, the API and anything else that reports it.

Rule: the version is the installed distribution's (``importlib.metadata``, i.e. ``pyproject.toml``
at install time), never a second literal kept in step by hand. When Laterne runs from a tree that
is not installed there is no metadata; :func:`version` then answers :data:`UNKNOWN_VERSION`, a
valid PEP 440 version that sorts below every release and says plainly that it is not known. The
metadata is read once per process (it cannot change under a running interpreter); this read of
the package's own metadata is the only I/O in ``models/`` besides loading the site file.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata

__all__ = ["DISTRIBUTION", "UNKNOWN_VERSION", "version"]

#: the distribution whose metadata carries the version
DISTRIBUTION = "laterne"
#: answered when the distribution is not installed (running from a bare source tree)
UNKNOWN_VERSION = "0+unknown"


@cache
def version() -> str:
    """The installed Laterne's version, or :data:`UNKNOWN_VERSION` when it is not installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION
