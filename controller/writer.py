"""Sending commands to devices: each value once, again only when the device no longer holds it.

Rule: the :class:`Writer` is the only place that writes to a device and the only keeper of what
was written. A command is sent when it differs from the last one the point took (de-duplication:
an unchanged command is never sent twice); the value the device read back is kept as what it
*holds*. Every later poll of that point is a read-back (:meth:`Writer.check_readback`): a point
found holding something else than its command by more than its resolution is a drift, recorded
and re-sent (``source: resend``) at once, then with a doubling back-off (``cycle_s`` × 2ⁿ, capped
at ``RESEND_MAX_DELAY_S``); after ``RESENDS_BEFORE_FAULTY`` re-sends that did not hold, the
device is reported FAULTY. A write that fails backs off the same way (a refused command,
``InvalidCommand``, never reached the field and is not backed off). Whatever one device's client
raises is that device's failure: it is recorded as a failed command, the device's health is told
at once (OFFLINE for a communication error, else FAULTY) and the other writes go on. Nothing is
written to an OFFLINE device; when a device goes OFFLINE its written state is forgotten
(:meth:`Writer.forget`), so it is rewritten once it is back: it may have rebooted to defaults.

Time is an argument (``now``, of the injected clock); nothing here reads a clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np

from laterne.drivers.field.base import DeviceClient
from laterne.drivers.field.errors import CommunicationError, DriverError, InvalidCommand
from laterne.drivers.field.scaling import readback_tolerance
from laterne.models.layout import SiteLayout
from laterne.models.site import PointSpec, SiteConfig
from laterne.models.snapshot import CommandRecord, DriftRecord
from laterne.models.values import (
    ActuatorCommand,
    Commands,
    PointReading,
    PointWrite,
    Quality,
    Reason,
)

from .observe import ReadingKey

__all__ = [
    "RESENDS_BEFORE_FAULTY",
    "RESEND_MAX_DELAY_S",
    "DeviceHealth",
    "Readback",
    "Writer",
    "commands_to_writes",
]

#: re-sends of a command that the device does not hold before the device is FAULTY
RESENDS_BEFORE_FAULTY = 3
#: longest back-off between two re-sends of a drifted command [s of clock time]
RESEND_MAX_DELAY_S = 600.0

log = logging.getLogger("laterne.runtime")


class DeviceHealth(Protocol):
    """What the writer needs of the devices' health: is one offline, and tell it a failure."""

    def quality_of(self, device_id: str) -> Quality:
        """The device's current quality."""
        ...

    def mark(self, device_id: str, quality: Quality, error: str, now: datetime) -> None:
        """The device's quality after a failure (OFFLINE or FAULTY) with its cause."""
        ...


@dataclass(frozen=True)
class Readback:
    """What one poll's read-back of a device's commanded points found.

    ``drift``: one message per drifted point, for the device's last error ("" if none);
    ``hopeless``: the points that did not hold their command through ``RESENDS_BEFORE_FAULTY``
    re-sends ("" if none): the device is FAULTY.
    """

    drift: str = ""
    hopeless: str = ""


def commands_to_writes(layout: SiteLayout, cmds: Commands) -> list[PointWrite]:
    """One write per element of every actuator group, in engineering units, group by group."""
    out: list[PointWrite] = []
    for name, group in layout.actuators.items():
        g = cmds.group(name)
        out += [
            PointWrite(ref.device, ref.point, float(v), Reason(int(r)).label)
            for ref, v, r in zip(group.refs, g.values, g.reasons, strict=True)
        ]
    return out


@dataclass
class _Retry:
    """A commanded point that does not hold its command (or whose write failed)."""

    attempts: int = 0  # re-sends (or failed writes) so far
    polls: int = 0  # consecutive polls that found it drifted
    next_at: datetime | None = None  # no re-send before this; None: at once


def _drift_tolerance(spec: PointSpec, protocol: str, value: float) -> float:
    """The point's resolution: half a scale step for Modbus integers, a few ULPs for floats
    (OPC-UA nodes carry their own type, usually Float or Double)."""
    if protocol == "opcua":
        return max(abs(value), 1.0) * 1e-6
    return readback_tolerance(value, spec)


class Writer:
    """Writes commands to the site's devices and remembers what each point was sent and holds.

    Parameters
    ----------
    site : the site (profiles for the read-back tolerance, ``policy.cycle_s`` for back-offs)
    clients : one client per device id
    health : told at once of every failed write; asked whether a device is OFFLINE
    """

    def __init__(
        self,
        site: SiteConfig,
        clients: Mapping[str, DeviceClient],
        health: DeviceHealth,
    ) -> None:
        self._site = site
        self._clients = clients
        self._health = health
        self._protocol = {d.id: site.profiles[d.profile].protocol for d in site.devices}
        self._written: dict[ReadingKey, float] = {}  # last command that was written
        self._held: dict[ReadingKey, float] = {}  # what the device read back for it
        self._retry: dict[ReadingKey, _Retry] = {}
        self._resend: set[ReadingKey] = set()  # drifted: write again next write()
        self._drifts: list[DriftRecord] = []  # found since the last take_drifts()

    # ---------------------------------------------------------------------------- queries

    def last_written(self, layout: SiteLayout) -> Commands:
        """What each actuator's point was last sent (NaN: nothing yet), per group."""
        groups = {}
        for name, group in layout.actuators.items():
            values = np.array(
                [self._written.get((r.device, r.point), np.nan) for r in group.refs], dtype=float
            )
            groups[name] = ActuatorCommand(values, np.zeros(group.size, dtype=np.int8))
        return Commands(groups=groups)

    def retrying(self, key: ReadingKey) -> bool:
        """The point does not hold its command, or its last write failed: it is being retried."""
        return key in self._retry

    def take_drifts(self) -> list[DriftRecord]:
        """The drift events found since the last call (for the history), oldest first."""
        found, self._drifts = self._drifts, []
        return found

    # ------------------------------------------------------------------------- read-back

    def forget(self, device_id: str) -> None:
        """The device went OFFLINE: rewrite its commands once it is back (it may have
        rebooted to its defaults), without a back-off from before."""
        for key in [k for k in self._written if k[0] == device_id]:
            del self._written[key]
        for key in [k for k in self._retry if k[0] == device_id]:
            del self._retry[key]

    def check_readback(
        self, device_id: str, readings: Mapping[str, PointReading], now: datetime
    ) -> Readback:
        """Compare every commanded point's reading with what was written to it; schedule the
        re-send of a drifted one (at once, then backing off)."""
        messages: list[str] = []
        hopeless: list[str] = []
        profile = self._site.profile_of(device_id)
        for point, reading in readings.items():
            key = (device_id, point)
            held = self._held.get(key)
            if held is None:
                continue  # nothing commanded here yet (or it is being rewritten anyway)
            spec = profile.points[point]
            tol = _drift_tolerance(spec, self._protocol[device_id], held)
            good = reading.quality is Quality.GOOD and math.isfinite(reading.value)
            if good and abs(reading.value - held) <= tol:
                self._retry.pop(key, None)
                continue
            retry = self._retry.setdefault(key, _Retry())
            retry.polls += 1
            actual = reading.value if good else None
            shown = f"{actual:g}" if actual is not None else f"no usable value ({reading.error})"
            failed_resends = retry.attempts  # re-sent that often, and still not held
            due = retry.next_at is None or now >= retry.next_at
            resend = due and key in self._written
            if resend:
                retry.attempts += 1
                retry.next_at = now + timedelta(seconds=self._backoff_s(retry.attempts))
                self._resend.add(key)
            detail = (
                f"{point}: commanded {held:g} but the device holds {shown}"
                + ("; re-sending" if resend else "; re-sending later")
            )
            messages.append(detail)
            if retry.polls == 1 or resend:
                self._drifts.append(
                    DriftRecord(
                        ts=now,
                        device_id=device_id,
                        point=point,
                        commanded=held,
                        actual=actual,
                        detail=detail,
                        attempt=retry.polls,
                        resent=resend,
                    )
                )
            if retry.polls == 1:
                log.warning("device %s: %s", device_id, detail)
            if failed_resends >= RESENDS_BEFORE_FAULTY:
                hopeless.append(
                    f"{point} does not hold its command ({held:g}; holds {shown}) after "
                    f"{RESENDS_BEFORE_FAULTY} re-sends"
                )
        return Readback("; ".join(messages), "; ".join(hopeless))

    # ----------------------------------------------------------------------------- writes

    async def write(self, writes: Sequence[PointWrite], now: datetime) -> list[CommandRecord]:
        """Send what changed, what drifted and what failed before (once its back-off is over),
        concurrently; one record per write sent, in the order of ``writes``."""
        todo: list[PointWrite] = []
        for w in writes:
            key = (w.device_id, w.point)
            if self._health.quality_of(w.device_id) is Quality.OFFLINE:
                continue
            if key in self._resend:
                todo.append(PointWrite(w.device_id, w.point, w.value, w.reason, "resend"))
            elif self._written.get(key) != w.value:
                retry = self._retry.get(key)
                waiting = key not in self._written and retry is not None
                if not waiting or retry is None or retry.next_at is None or now >= retry.next_at:
                    todo.append(w)  # a new command, or a failed one whose back-off is over
        self._resend.clear()
        return list(await asyncio.gather(*(self._write(w, now) for w in todo)))

    def _backoff_s(self, attempts: int) -> float:
        """The wait before the next try after ``attempts`` tries [s of clock time]."""
        return min(self._site.policy.cycle_s * 2.0 ** (attempts - 1), RESEND_MAX_DELAY_S)

    async def _write(self, w: PointWrite, now: datetime) -> CommandRecord:
        client = self._clients[w.device_id]
        key = (w.device_id, w.point)
        ok, error = True, ""
        try:
            held = await client.write(w.point, w.value)
        except Exception as exc:  # typed or not: this device's write failed, the others go on
            ok, error = False, str(exc) or type(exc).__name__
            if not isinstance(exc, DriverError):
                error = f"unexpected {type(exc).__name__} from the driver: {error}"
                log.error("device %s: write %s: %s", w.device_id, w.point, error, exc_info=exc)
            self._written.pop(key, None)
            self._held.pop(key, None)
            if not isinstance(exc, InvalidCommand):  # the field never saw a refused command
                retry = self._retry.setdefault(key, _Retry())
                retry.attempts += 1
                retry.next_at = now + timedelta(seconds=self._backoff_s(retry.attempts))
            quality = Quality.OFFLINE if isinstance(exc, CommunicationError) else Quality.FAULTY
            self._health.mark(w.device_id, quality, error, now)
        else:
            self._written[key] = w.value
            self._held[key] = held if math.isfinite(held) else w.value
        return CommandRecord(
            ts=now,
            device_id=w.device_id,
            point=w.point,
            value=w.value,
            reason=w.reason,
            source=w.source,
            ok=ok,
            error=error,
        )
