"""Logging for the `laterne` commands: Laterne's own transitions, the libraries only when asked.

Rule: Laterne logs a device, a store or the loop once when its state changes and once when it
recovers, with the cause. The protocol libraries log every failed request (pymodbus: an ERROR line
and a hex dump per unanswered request; asyncua: a traceback whenever a server goes away): at every
level but ``debug`` they are silenced, since each of their failures reaches the log as one of
Laterne's transitions. ``--log-level debug`` brings them back, hex dumps included.
"""

from __future__ import annotations

import logging
from enum import StrEnum

__all__ = ["LIBRARY_LOGGERS", "LogLevel", "configure_logging"]

#: loggers of the protocol and server libraries that are quiet unless the level is debug
LIBRARY_LOGGERS = ("pymodbus", "asyncua")


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def configure_logging(level: LogLevel = LogLevel.info) -> None:
    """Root at ``level``; the libraries' loggers at CRITICAL, or DEBUG with ``level`` debug."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level.value.upper())
    for name in LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        lib.setLevel(logging.DEBUG if level is LogLevel.debug else logging.CRITICAL)
