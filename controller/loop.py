"""The control loop's account of itself: last successful cycle, failures in a row, last error.

Rule: the runtime's run loop tells a :class:`LoopMonitor` the outcome of every cycle and nothing
else does; a failure is logged (with its traceback) when a run of failures starts or its error
changes, and the recovery once — never every failed cycle. Ages are in the injected clock's time.
"""

from __future__ import annotations

import logging
from datetime import datetime

from laterne.models.snapshot import LoopStatus

from .clock import Clock

__all__ = ["LoopMonitor"]

log = logging.getLogger("laterne.runtime")


class LoopMonitor:
    """Counts the loop's successful cycles and its failures in a row, from ``clock``."""

    def __init__(self, clock: Clock, cycle_s: float) -> None:
        self._clock = clock
        self._cycle_s = cycle_s
        self._started_at = clock.now()
        self._cycles_ok = 0
        self._last_success_at: datetime | None = None
        self._failures = 0
        self._last_error = ""
        self._last_error_at: datetime | None = None

    def failed(self, exc: Exception, at: datetime) -> None:
        """The cycle started ``at`` raised ``exc``."""
        self._failures += 1
        error = f"{type(exc).__name__}: {exc}"
        if self._failures == 1 or error != self._last_error:
            log.error("control cycle failed (%d in a row)", self._failures, exc_info=exc)
        self._last_error, self._last_error_at = error, at

    def succeeded(self, at: datetime) -> None:
        """The cycle started ``at`` completed."""
        if self._failures:
            log.warning("control cycles succeed again after %d failures", self._failures)
        self._failures = 0
        self._cycles_ok += 1
        self._last_success_at = at

    def status(self) -> LoopStatus:
        now = self._clock.now()
        ref = self._last_success_at or self._started_at
        return LoopStatus(
            cycle_s=self._cycle_s,
            cycles=self._cycles_ok,
            last_success_at=self._last_success_at,
            since_success_s=max(0.0, (now - ref).total_seconds()),
            consecutive_failures=self._failures,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
        )
