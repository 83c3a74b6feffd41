"""Polling the field: which devices are due, reading them, and the health of every device.

Rules
-----
- **Each device on its own interval, at its own phase** (:class:`PollSchedule`, pure). Polls
  happen within control cycles (the runtime calls :meth:`Poller.poll_due` once per cycle). The
  first cycle polls every device. After that a device whose ``poll_interval_s`` exceeds
  ``cycle_s`` is due on its own grid of slots ``origin + (phase + k) × poll_interval_s``: the
  phase is a fraction of the interval derived deterministically from the device's id (a hash,
  the same in every process), so devices with equal intervals spread over the cycles instead of
  all being read on the same tick, and the slots never drift: a device with ``poll_interval_s``
  30 on a 10 s cycle is polled every third cycle, and one with 25 s is polled 4 times per 100 s
  (every second or third cycle), not quantised up to every third. A device is polled on the
  first cycle at or after its slot; slots missed by a long cycle are skipped, not caught up.
  Should the clock step back (so that the next poll would be more than an interval away), the
  device is polled at once and its grid starts again from there.
- **Faster than the cycle means every cycle.** A device whose ``poll_interval_s`` is at most
  ``cycle_s`` is polled every cycle (when at least ``poll_interval_s`` has passed since its last
  poll, which a cycle period always has); ``poll_interval_s`` < ``cycle_s`` is said once, in one
  log line at start.
- **No device can stop a poll.** Whatever one device's client raises — a typed ``DriverError``
  or anything else — marks that device OFFLINE (communication) or FAULTY (anything else, an
  unexpected exception type named in the error) and every point of it gets a reading that says
  so; the other devices are polled as usual, concurrently.
- **Health changes in one place** (:class:`DeviceTable`): a device's quality moves only through
  :func:`~laterne.controller.health.next_device_state`; each change is logged once and handed to
  the history, and a device that goes OFFLINE is reported to the listeners (the writer forgets
  what it sent there). Values and devices not heard from for ``stale_after_polls`` poll
  intervals go STALE (:meth:`Poller.age`).
- Every poll of a commanded point is a read-back, checked by the :class:`Readback` given (the
  writer); a drift, or a point that does not hold its command, makes the device's last error.

Time is an argument (``now``, of the injected clock); nothing here reads a clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from laterne.drivers.field.base import DeviceClient
from laterne.drivers.field.errors import CommunicationError, DriverError
from laterne.models.site import SiteConfig
from laterne.models.values import DeviceState, PointReading, Quality

from .health import (
    age_device_state,
    age_reading,
    changed,
    initial_device_state,
    next_device_state,
)
from .observe import ReadingKey
from .writer import Readback

__all__ = [
    "DeviceTable",
    "PollSchedule",
    "Polled",
    "Poller",
    "ReadbackCheck",
    "phase_fraction",
]

log = logging.getLogger("laterne.runtime")

#: tolerance of a due time against the clock [s]: a slot this close to ``now`` is due
_EPS_S = 1e-6


def phase_fraction(device_id: str) -> float:
    """The device's phase as a fraction of its poll interval, in [0, 1): from a hash of its id,
    so it is the same in every process and on every start (``hash()`` is salted per process)."""
    digest = hashlib.sha256(device_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class PollSchedule:
    """When each device is due, pure (see the module docstring for the rules).

    Parameters
    ----------
    intervals_s : poll interval of each device [s], in the order devices are polled
    cycle_s : the control cycle's period [s]
    phases : each device's phase as a fraction of its interval in [0, 1); by default
        :func:`phase_fraction` of its id
    """

    def __init__(
        self,
        intervals_s: Mapping[str, float],
        cycle_s: float,
        phases: Mapping[str, float] | None = None,
    ) -> None:
        self._interval_s = dict(intervals_s)
        self._cycle_s = cycle_s
        self._phase = {
            d: (phases[d] if phases is not None and d in phases else phase_fraction(d))
            for d in self._interval_s
        }
        for d, p in self._phase.items():
            if not 0.0 <= p < 1.0:
                raise ValueError(f"phase of {d} must lie in [0, 1), got {p}")
        self._last: dict[str, datetime] = {}  # last poll
        self._origin: dict[str, datetime] = {}  # where the device's grid of slots starts
        self._next: dict[str, datetime] = {}  # its next slot

    def every_cycle(self, device_id: str) -> bool:
        """The device's interval is at most the cycle: it is polled every cycle."""
        return self._interval_s[device_id] <= self._cycle_s + _EPS_S

    @property
    def faster_than_cycle(self) -> list[str]:
        """Devices whose ``poll_interval_s`` < ``cycle_s`` (polled every cycle all the same)."""
        return [d for d, i in self._interval_s.items() if i < self._cycle_s - _EPS_S]

    def next_due(self, device_id: str) -> datetime | None:
        """The device's next slot; None before its first poll (due at once) or when it is
        polled every cycle."""
        return self._next.get(device_id)

    def due(self, now: datetime) -> list[str]:
        """The devices to poll at ``now``, in the order given."""
        return [d for d in self._interval_s if self._is_due(d, now)]

    def _is_due(self, device_id: str, now: datetime) -> bool:
        last = self._last.get(device_id)
        if last is None:
            return True  # the first cycle polls every device
        interval_s = self._interval_s[device_id]
        if self.every_cycle(device_id):
            since_s = (now - last).total_seconds()
            # (a clock that stepped back to before the last poll: poll now, not an hour later)
            return since_s >= interval_s - _EPS_S or since_s < -_EPS_S
        wait_s = (self._next[device_id] - now).total_seconds()
        if wait_s > interval_s + _EPS_S:
            return True  # the clock stepped back: poll now, the grid starts again from here
        return wait_s <= _EPS_S

    def polled(self, device_id: str, now: datetime) -> None:
        """Record that the device was polled at ``now``: its next slot is the first after it."""
        last = self._last.get(device_id)
        self._last[device_id] = now
        if self.every_cycle(device_id):
            return
        interval_s = self._interval_s[device_id]
        origin = self._origin.get(device_id)
        stepped_back = last is not None and (now - last).total_seconds() < -_EPS_S
        if origin is None or stepped_back:
            origin = self._origin[device_id] = now
        phase = self._phase[device_id]
        elapsed_s = (now - origin).total_seconds()
        k = math.floor((elapsed_s + _EPS_S) / interval_s - phase) + 1
        self._next[device_id] = origin + timedelta(seconds=(phase + k) * interval_s)


class ReadbackCheck(Protocol):
    """What the poller asks of the writer about the points it commands."""

    def check_readback(
        self, device_id: str, readings: Mapping[str, PointReading], now: datetime
    ) -> Readback:
        """Compare the device's commanded points' readings with what they were sent."""
        ...

    def retrying(self, key: ReadingKey) -> bool:
        """The point is being re-sent (a drift or a failed write)."""
        ...


class DeviceTable:
    """The health state of every device and the latest reading of every point.

    Parameters
    ----------
    site : the site's devices (all start OFFLINE: nothing they say has been seen yet)
    now : the start
    record : hands each device state to the history (also every initial one)
    """

    def __init__(
        self, site: SiteConfig, now: datetime, record: Callable[[DeviceState], None]
    ) -> None:
        self._record = record
        self._offline_listeners: list[Callable[[str], None]] = []
        self.states: dict[str, DeviceState] = {
            d.id: initial_device_state(d.id, now) for d in site.devices
        }
        self.latest: dict[ReadingKey, PointReading] = {}
        # the history shows every start: each device offline until its first good poll
        for st in self.states.values():
            record(st)

    def on_offline(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(device_id)`` whenever a device goes OFFLINE."""
        self._offline_listeners.append(listener)

    def quality_of(self, device_id: str) -> Quality:
        return self.states[device_id].quality

    def mark(self, device_id: str, quality: Quality, error: str, now: datetime) -> None:
        """The device's state after an outcome of ``quality`` with ``error``."""
        self.set(next_device_state(self.states[device_id], quality, error, now))

    def set(self, new: DeviceState) -> None:
        """Replace a device's state; a change of quality is logged once and recorded."""
        prev = self.states[new.device_id]
        self.states[new.device_id] = new
        if not changed(prev, new):
            return
        if new.quality is Quality.GOOD:
            log.info("device %s: %s -> good", new.device_id, prev.quality.value)
        else:
            log.warning(
                "device %s: %s -> %s (%s)",
                new.device_id,
                prev.quality.value,
                new.quality.value,
                new.last_error,
            )
        self._record(new)
        if new.quality is Quality.OFFLINE:
            for listener in self._offline_listeners:
                listener(new.device_id)


@dataclass(frozen=True)
class Polled:
    """What one :meth:`Poller.poll_due` did: the devices polled and every reading it got
    (a failed device's points included, NaN with the failure's quality)."""

    devices: tuple[str, ...]
    readings: tuple[PointReading, ...]


class Poller:
    """Polls the devices that are due and keeps their health (see the module docstring).

    Parameters
    ----------
    site : devices, their profiles, intervals and staleness; ``policy.cycle_s``
    clients : one client per device id
    table : the devices' states and latest readings, updated here
    readback : checks the readings of commanded points (the writer)
    schedule : when each device is due; by default each at its id's phase
    """

    def __init__(
        self,
        site: SiteConfig,
        clients: Mapping[str, DeviceClient],
        table: DeviceTable,
        readback: ReadbackCheck,
        schedule: PollSchedule | None = None,
    ) -> None:
        self._site = site
        self._clients = clients
        self._table = table
        self._readback = readback
        self.schedule = schedule or PollSchedule(
            {d.id: d.poll_interval_s for d in site.devices}, site.policy.cycle_s
        )
        fast = self.schedule.faster_than_cycle
        if fast:
            log.info(
                "%d device(s) have a poll_interval_s below the %g s cycle and are polled every "
                "cycle: %s",
                len(fast),
                site.policy.cycle_s,
                ", ".join(fast),
            )

    async def poll_due(self, now: datetime) -> Polled:
        """Poll every device due at ``now``, concurrently (a gateway serialises its own)."""
        due = self.schedule.due(now)
        results = await asyncio.gather(*(self._poll(d, now) for d in due))
        return Polled(tuple(due), tuple(r for batch in results for r in batch))

    def age(self, now: datetime) -> None:
        """Values and devices not heard from for ``stale_after_polls`` poll intervals go
        STALE; a device that answers with nothing newer than that too."""
        table = self._table
        for d in self._site.devices:
            state = age_device_state(table.states[d.id], now, d.stale_after_s)
            qualities = set()
            for point in self._site.profiles[d.profile].points:
                key = (d.id, point)
                r = table.latest.get(key)
                if r is not None:
                    table.latest[key] = aged = age_reading(r, now, d.stale_after_s)
                    qualities.add(aged.quality)
            if state.quality is Quality.GOOD and qualities == {Quality.STALE}:
                # it answers, but with nothing newer than the limit (e.g. a quiet subscription)
                error = f"no value newer than {d.stale_after_s:g} s"
                state = next_device_state(state, Quality.STALE, error, now)
            table.set(state)

    async def _poll(self, device_id: str, now: datetime) -> Sequence[PointReading]:
        self.schedule.polled(device_id, now)
        client = self._clients[device_id]
        table = self._table
        prev = table.states[device_id]
        try:
            readings = await client.read(now)
        except CommunicationError as exc:
            table.mark(device_id, Quality.OFFLINE, str(exc), now)
            return self._mark_points(device_id, Quality.OFFLINE, str(exc), now)
        except DriverError as exc:
            table.mark(device_id, Quality.FAULTY, str(exc), now)
            return self._mark_points(device_id, Quality.FAULTY, str(exc), now)
        except Exception as exc:  # a driver bug must not stop the site: this device is FAULTY
            error = f"unexpected {type(exc).__name__} from the driver: {exc}"
            if prev.quality is not Quality.FAULTY or prev.last_error != error:
                log.error("device %s: %s", device_id, error, exc_info=exc)
            table.mark(device_id, Quality.FAULTY, error, now)
            return self._mark_points(device_id, Quality.FAULTY, error, now)
        faulty = [r for r in readings.values() if r.quality is not Quality.GOOD]
        found = self._readback.check_readback(device_id, readings, now)
        if faulty:
            drifted = found.drift.split("; ") if found.drift else []
            err = "; ".join(
                [
                    f"{r.point}: {r.error}"
                    for r in faulty
                    if not self._readback.retrying((device_id, r.point))
                ]
                + drifted
            )
            table.set(next_device_state(prev, Quality.FAULTY, err, now))
        elif found.hopeless:
            table.set(next_device_state(prev, Quality.FAULTY, found.hopeless, now))
        else:
            table.set(next_device_state(prev, Quality.GOOD, found.drift, now))
        for r in readings.values():
            table.latest[(device_id, r.point)] = r
        return list(readings.values())

    def _mark_points(
        self, device_id: str, quality: Quality, error: str, now: datetime
    ) -> list[PointReading]:
        """Every point of a failed device gets a reading that says so (value NaN)."""
        points = self._site.profile_of(device_id).points
        out = [PointReading(device_id, p, math.nan, quality, now, error) for p in points]
        for r in out:
            self._table.latest[(device_id, r.point)] = r
        return out
