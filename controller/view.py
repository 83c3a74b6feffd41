"""What the API may ask of a running site: the read side and the command side, as one Protocol.

Rule: the API depends on this Protocol only, never on a driver or the runtime's internals. The
runtime implements it; tests may implement it with plain data.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from laterne.models.snapshot import (
    AggregateRecord,
    CommandRecord,
    DeviceStateRecord,
    DriftRecord,
    HistoryStatus,
    LoopStatus,
    SiteSnapshot,
)
from laterne.models.values import PointReading

__all__ = ["SiteView"]


class SiteView(Protocol):
    def snapshot(self) -> SiteSnapshot:
        """State after the last completed control cycle."""
        ...

    def recent_commands(
        self, limit: int = 100, device_id: str | None = None
    ) -> list[CommandRecord]:
        """Most recent commands first, optionally of one device."""
        ...

    def readings(
        self,
        device_id: str,
        point: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[PointReading]:
        """Recorded readings of one point within [since, until), oldest first (or newest)."""
        ...

    def drift_events(self, device_id: str | None = None, limit: int = 100) -> list[DriftRecord]:
        """Commanded points found not holding their command, newest first."""
        ...

    def loop_status(self) -> LoopStatus:
        """Is the control loop alive: last successful cycle, failures in a row, last error."""
        ...

    def device_state_changes(
        self, device_id: str | None = None, limit: int = 100
    ) -> list[DeviceStateRecord]:
        """Quality changes of devices, newest first, optionally of one device."""
        ...

    def history_status(self) -> HistoryStatus:
        """Size of the embedded history and the state of every mirror (nothing lost?)."""
        ...

    def aggregates(
        self,
        device_id: str,
        point: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 10_000,
    ) -> list[AggregateRecord]:
        """Aggregated buckets of one point (readings past raw retention), oldest first."""
        ...
