"""The latest value of every subscribed OPC-UA point, fed by one subscription's publish responses.

Rule: this module only keeps a table; it opens nothing and sends nothing. The driver creates the
server-side subscription through asyncua's session services and hands :meth:`Feed.on_publish` to
asyncua as that subscription's publish callback. We do not use asyncua's ``Subscription`` class:
its handler mode schedules one task per notification (10 000 tasks/s for 1 000 nodes at 10 Hz),
and its ``last_publish_at`` runs on the real clock, while ours is injected.

Theory of operation
-------------------
Every publish response for our subscription proves the link alive, the server's keep-alives
included (a keep-alive is a publish response without notification data, sent after
``keepalive_count`` publishing intervals without a change). :attr:`Feed.heard_s` is the
monotonic time of the last one, or of the last full read that refreshed the table.

Data-change notifications carry a ``DataValue`` per monitored item, keyed by the client handle
we chose (the point's index). A sample replaces the stored one unless it is older by source (or
server) timestamp: a full read and a notification may cross on the wire, and the newer value
must win whichever arrives last.

A status-change notification with a bad status (the server's ``BadTimeout`` when it expired
the subscription, or the ``BadShutdown`` asyncua fakes when it sees the connection drop) sets
:attr:`Feed.lost`: the table can no longer be trusted and the driver rebuilds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from asyncua import ua

__all__ = ["Feed", "Sample", "keepalive_count"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One node value as the server reported it."""

    value: ua.DataValue
    received_s: float  # monotonic time of arrival [s]

    @property
    def source_ts(self) -> datetime | None:
        """When the value was taken at its source, else when the server stamped it (UTC)."""
        return self.value.SourceTimestamp or self.value.ServerTimestamp


def keepalive_count(publishing_interval_ms: float, stale_after_s: float) -> int:
    """Publishing intervals between keep-alives, so that a healthy subscription is heard from at
    least twice per ``stale_after_s``; at least 1 [unitless]."""
    return max(1, math.floor(stale_after_s * 1000.0 / 2.0 / publishing_interval_ms))


class Feed:
    """The latest sample per point of one subscription, and when the subscription was last heard.

    Parameters
    ----------
    handles : point name of each client handle we asked for
    monotonic : clock [s]
    """

    def __init__(self, handles: dict[int, str], monotonic: Callable[[], float]) -> None:
        self.handles = handles
        self._monotonic = monotonic
        self.samples: dict[str, Sample] = {}
        self.heard_s = monotonic()
        self.lost = False
        self.lost_reason = ""
        self.notifications = 0  # data-change items received [count]
        self.subscription_id: int | None = None

    def update(self, point: str, value: ua.DataValue) -> None:
        """Store ``value`` for ``point`` unless the stored one is newer at its source."""
        new = Sample(value, self._monotonic())
        old = self.samples.get(point)
        if old is not None:
            old_ts, new_ts = old.source_ts, new.source_ts
            if old_ts is not None and new_ts is not None and new_ts < old_ts:
                return
        self.samples[point] = new

    def refreshed(self) -> None:
        """A full read just refreshed every sample: the table is as good as a fresh poll."""
        self.heard_s = self._monotonic()

    def silent_s(self) -> float:
        """Seconds since the subscription (or a full read) was last heard from."""
        return self._monotonic() - self.heard_s

    def on_publish(self, result: ua.PublishResult) -> None:
        """asyncua's publish callback: every response is a sign of life; apply its data."""
        data = result.NotificationMessage.NotificationData or []
        for notification in data:
            if isinstance(notification, ua.StatusChangeNotification):
                status = notification.Status
                if status is not None and not status.is_good():
                    self.lost = True
                    self.lost_reason = f"subscription status {status.name}"
                    return
        self.heard_s = self._monotonic()
        for notification in data:
            if isinstance(notification, ua.DataChangeNotification):
                for item in notification.MonitoredItems:
                    point = self.handles.get(item.ClientHandle)
                    if point is not None:
                        self.update(point, item.Value)
                        self.notifications += 1
