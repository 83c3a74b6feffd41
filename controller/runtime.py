"""The live runtime: the async shell that polls devices, runs the pure policy and writes commands.

Rule: this is the only controller module that does I/O. One cycle is: poll the devices that are
due (concurrently; a gateway serialises its own requests), check every commanded point's
read-back, build the observation, call ``Policy.step``, pass the wish through ``apply_safety``,
write what changed (and what a device no longer holds) to devices that answer, queue every
reading and command for the history, publish a snapshot. Time comes from the injected
:class:`Clock` only.

Keeps controlling:

- **No device can stop the cycle.** Whatever one device's client raises — a typed
  ``DriverError`` or anything else — marks that device (OFFLINE or FAULTY, logged once, on the
  change) and the others are polled and commanded as usual.
- **No store can stop the cycle.** Readings, commands, state changes, drift events and the saved
  policy state go through the write-behind :class:`~laterne.controller.recorder.Recorder`: a
  locked or failing history costs a cycle at most ``RECORD_WAIT_S``, once, and loses nothing
  until its queue's bound.
- **Every poll of a commanded point is a read-back.** A point found holding something else than
  its last command (a controller that reset to 0 %, a register left at 150 %, a setpoint changed
  at the BMS) is a drift: recorded (history, the device's last error), and the command re-sent at
  once, then with a doubling back-off; after ``RESENDS_BEFORE_FAULTY`` re-sends that did not hold
  the device is FAULTY.
- **A restart resumes.** The policy's state is saved every ``STATE_SAVE_EVERY_S`` and resumed
  at start when it belongs to the same layout and is younger than the flow window; otherwise the
  policy starts cold (and steps no band down until its estimate is warm).
- **The loop reports on itself**: last successful cycle, consecutive failures and the last error
  (:meth:`Runtime.loop_status`), for the health endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Protocol

import numpy as np

from laterne.drivers.base import DeviceClient
from laterne.drivers.codec import readback_tolerance
from laterne.drivers.errors import CommunicationError, DriverError, InvalidCommand
from laterne.drivers.sqlite_store import HistoryError, SqliteHistory
from laterne.models.layout import SiteLayout
from laterne.models.site import PointSpec, SiteConfig
from laterne.models.snapshot import (
    AggregateRecord,
    CommandRecord,
    DeviceStateRecord,
    DriftRecord,
    HistoryStatus,
    LoopStatus,
    MirrorStatus,
    SiteSnapshot,
)
from laterne.models.values import (
    ActuatorCommand,
    Commands,
    DeviceState,
    Override,
    PointReading,
    PointWrite,
    Quality,
    Reason,
)

from .clock import Clock
from .cycle import ControlPolicy, decide
from .health import (
    age_device_state,
    age_reading,
    changed,
    initial_device_state,
    next_device_state,
)
from .observe import ReadingKey, build_observation
from .policy import Policy, PolicyState
from .recorder import HistorySink, Recorder, StoreQueue
from .resume import ResumeRefused, dump_state, layout_fingerprint, load_state
from .safety import override_arrays
from .snapshot import build_snapshot

__all__ = [
    "COMPACT_EVERY_S",
    "RECORD_WAIT_S",
    "RESENDS_BEFORE_FAULTY",
    "RESEND_MAX_DELAY_S",
    "STATE_SAVE_EVERY_S",
    "CycleReport",
    "HistoryMirror",
    "HistorySink",
    "Runtime",
    "commands_to_writes",
]

#: how often old raw readings are folded into aggregates [s of clock time]
COMPACT_EVERY_S = 3600.0
#: how long a cycle waits for the history to take its records [s of real time]
RECORD_WAIT_S = 1.0
#: re-sends of a command that the device does not hold before the device is FAULTY
RESENDS_BEFORE_FAULTY = 3
#: longest back-off between two re-sends of a drifted command [s of clock time]
RESEND_MAX_DELAY_S = 600.0
#: how often the policy's state is saved for a restart [s of clock time]
STATE_SAVE_EVERY_S = 60.0
#: how long a stop may wait for the history's queue to be written [s of real time]
CLOSE_FLUSH_S = 10.0


class HistoryMirror(HistorySink, Protocol):
    """A second history that receives a copy of everything (e.g. InfluxDB through an outbox).
    Its record calls must not block on a network: they only queue."""

    def status(self) -> MirrorStatus: ...


log = logging.getLogger("laterne.runtime")


@dataclass(frozen=True)
class CycleReport:
    ts: datetime
    cycle: int
    polled: int
    readings: int
    writes: int
    failed_writes: int
    # where the cycle's time went [s], measured with perf_counter (instrumentation, not control)
    poll_s: float = 0.0
    decide_s: float = 0.0
    write_s: float = 0.0
    record_s: float = 0.0


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


_Published = tuple[
    datetime | None,
    int,
    PolicyState,
    Commands | None,
    dict[ReadingKey, PointReading],
    dict[str, DeviceState],
]


class Runtime:
    """Runs one site: implements :class:`~laterne.controller.view.SiteView` for the API."""

    def __init__(
        self,
        site: SiteConfig,
        clients: Mapping[str, DeviceClient],
        history: SqliteHistory,
        clock: Clock,
        mirrors: Sequence[HistoryMirror] = (),
        *,
        layout: SiteLayout | None = None,
        policy: ControlPolicy[PolicyState] | None = None,
    ) -> None:
        missing = {d.id for d in site.devices} - set(clients)
        if missing:
            raise ValueError(f"no client for devices: {', '.join(sorted(missing))}")
        self.site = site
        self.layout = layout if layout is not None else SiteLayout.from_config(site)
        self.policy: ControlPolicy[PolicyState] = (
            policy if policy is not None else Policy(self.layout, site.policy)
        )
        self._overrides: tuple[Override, ...] = ()
        self._clients = clients
        self._history = history
        self._mirrors = tuple(mirrors)
        queues = [StoreQueue("sqlite", history)]
        queues += [StoreQueue(f"mirror {i + 1}", m) for i, m in enumerate(self._mirrors)]
        self._recorder = Recorder(queues)
        self._last_compact: datetime | None = None
        self._clock = clock
        now = clock.now()
        self._started_at = now
        self._fingerprint = layout_fingerprint(self.layout)
        self._state: PolicyState = self._resume(now)
        self._last_state_save: datetime | None = None
        self._commands: Commands | None = None
        self._latest: dict[ReadingKey, PointReading] = {}
        self._devices: dict[str, DeviceState] = {
            d.id: initial_device_state(d.id, now) for d in site.devices
        }
        self._protocol = {d.id: site.profiles[d.profile].protocol for d in site.devices}
        self._stale_after_s = {d.id: d.stale_after_s for d in site.devices}  # one rule
        # the history shows every start: each device offline until its first good poll
        for st in self._devices.values():
            self._recorder.device_state(st)
        self._last_poll: dict[str, datetime] = {}
        self._written: dict[ReadingKey, float] = {}  # last command that was written
        self._held: dict[ReadingKey, float] = {}  # what the device read back for it
        self._retry: dict[ReadingKey, _Retry] = {}
        self._resend: set[ReadingKey] = set()  # drifted: write again this cycle
        self._drifts: list[DriftRecord] = []  # found this cycle
        self._cycle = 0
        self._cycles_ok = 0
        self._last_success_at: datetime | None = None
        self._failures = 0
        self._last_error = ""
        self._last_error_at: datetime | None = None
        # the snapshot is built when asked for (by the API, from its threads), at most once per
        # cycle, from a frozen copy of the cycle's results: serving it costs the cycle nothing
        self._published: _Published = (None, 0, self._state, None, {}, dict(self._devices))
        self._cached: tuple[_Published, SiteSnapshot] | None = None

    # ------------------------------------------------------------------ SiteView (API side)

    def snapshot(self) -> SiteSnapshot:
        published, cached = self._published, self._cached
        if cached is not None and cached[0] is published:
            return cached[1]
        ts, cycle, state, cmds, latest, devices = published
        snap = build_snapshot(self.site, self.layout, ts, cycle, state, cmds, latest, devices)
        self._cached = (published, snap)
        return snap

    def recent_commands(
        self, limit: int = 100, device_id: str | None = None
    ) -> list[CommandRecord]:
        return self._history.recent_commands(limit=limit, device_id=device_id)

    def readings(
        self,
        device_id: str,
        point: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[PointReading]:
        return self._history.readings(
            device_id, point, since=since, until=until, limit=limit, newest_first=newest_first
        )

    def device_state_changes(
        self, device_id: str | None = None, limit: int = 100
    ) -> list[DeviceStateRecord]:
        return [
            DeviceStateRecord(
                device_id=s.device_id,
                quality=s.quality,
                since=s.since,
                last_good_at=s.last_good_at,
                last_error=s.last_error,
            )
            for s in self._history.device_state_history(device_id=device_id, limit=limit)
        ]

    def aggregates(
        self,
        device_id: str,
        point: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 10_000,
    ) -> list[AggregateRecord]:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else x

        return [
            AggregateRecord(
                start=a.start,
                end=a.end,
                count=a.count,
                good_count=a.good_count,
                mean=num(a.mean),
                min=num(a.min),
                max=num(a.max),
                last=num(a.last),
            )
            for a in self._history.aggregates(
                device_id, point, since=since, until=until, limit=limit
            )
        ]

    def history_status(self) -> HistoryStatus:
        cfg = self.site.history
        return HistoryStatus(
            sqlite_path=str(self._history.path),
            sqlite_bytes=self._history.file_size_bytes(),
            raw_retention_days=cfg.raw_retention_days,
            aggregate_minutes=cfg.aggregate_minutes,
            mirrors=[m.status() for m in self._mirrors],
            queues=self._recorder.status(),
        )

    def drift_events(self, device_id: str | None = None, limit: int = 100) -> list[DriftRecord]:
        return self._history.drift_events(device_id=device_id, limit=limit)

    def loop_status(self) -> LoopStatus:
        now = self._clock.now()
        ref = self._last_success_at or self._started_at
        return LoopStatus(
            cycle_s=self.site.policy.cycle_s,
            cycles=self._cycles_ok,
            last_success_at=self._last_success_at,
            since_success_s=max(0.0, (now - ref).total_seconds()),
            consecutive_failures=self._failures,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
        )

    @property
    def device_states(self) -> Mapping[str, DeviceState]:
        return dict(self._devices)

    @property
    def policy_state(self) -> PolicyState:
        return self._state

    @property
    def commands(self) -> Commands | None:
        return self._commands

    # --------------------------------------------------------------------------- the cycle

    async def run_cycle(self) -> CycleReport:
        now = self._clock.now()
        due = [
            d
            for d in self.site.devices
            if d.id not in self._last_poll
            or (now - self._last_poll[d.id]).total_seconds() >= d.poll_interval_s - 1e-6
        ]
        t0 = time.perf_counter()
        results = await asyncio.gather(*(self._poll(d.id, now) for d in due))
        t1 = time.perf_counter()
        fresh = [r for batch in results for r in batch]
        self._recorder.readings(fresh)  # what was seen is kept even if deciding fails
        self._age(now)

        obs = build_observation(self.layout, self._latest, now, self._stale_after_s)
        decision = decide(
            self.policy,
            self.layout,
            self.site.policy,
            self._state,
            obs,
            now,
            overrides=self._overrides,
            last_written=self._last_written(),
        )
        state, safe = decision.state, decision.commands
        self._state, self._commands = state, safe
        t2 = time.perf_counter()
        records = await self._write_all(commands_to_writes(self.layout, safe), now)
        t3 = time.perf_counter()
        self._recorder.commands(records)
        if self._drifts:
            self._recorder.drifts(self._drifts)
            self._drifts = []
        self._maybe_save_state(now)
        self._maybe_compact(now)
        await self._recorder.settle(RECORD_WAIT_S)
        t4 = time.perf_counter()

        self._cycle += 1
        self._published = (now, self._cycle, state, safe, dict(self._latest), dict(self._devices))
        return CycleReport(
            ts=now,
            cycle=self._cycle,
            polled=len(due),
            readings=len(fresh),
            writes=len(records),
            failed_writes=sum(1 for r in records if not r.ok),
            poll_s=t1 - t0,
            decide_s=t2 - t1,
            write_s=t3 - t2,
            record_s=t4 - t3,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Run cycles every ``policy.cycle_s`` of clock time until ``stop`` is set."""
        period = self.site.policy.cycle_s
        while not stop.is_set():
            started = self._clock.now()
            try:
                await self.run_cycle()
            except Exception as exc:  # a bug, not a device problem: keep the site running
                self._cycle_failed(exc, self._clock.now())
            else:
                self._cycle_succeeded(self._clock.now())  # when it ended
            spent = (self._clock.now() - started).total_seconds()
            sleeper = asyncio.ensure_future(self._clock.sleep(max(0.0, period - spent)))
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for t in (sleeper, stopper):
                t.cancel()

    async def flush_history(self, timeout_s: float = CLOSE_FLUSH_S) -> bool:
        """Wait until everything queued is in every store (True), or ``timeout_s`` passed."""
        return await self._recorder.flush(timeout_s)

    async def close(self) -> None:
        """Close every client and write what is queued (for at most ``CLOSE_FLUSH_S``)."""
        for c in self._clients.values():
            try:
                await c.close()
            except Exception as exc:  # one client that fails to close must not keep the others
                log.debug("closing %s: %s", c.device_id, exc)
        await self._recorder.close(CLOSE_FLUSH_S)

    def set_overrides(self, overrides: Sequence[Override]) -> None:
        """The overrides the next cycles apply (each only while in force); replaces the old set.

        Raises
        ------
        UnknownOverrideTarget
            one names a segment or zone this site does not have (nothing is changed).
        """
        override_arrays(self.layout, overrides, self._clock.now())  # refuses unknown targets
        self._overrides = tuple(overrides)

    @property
    def overrides(self) -> tuple[Override, ...]:
        return self._overrides

    def _last_written(self) -> Commands:
        """What each actuator's point was last sent (NaN: nothing yet), per group."""
        groups = {}
        for name, group in self.layout.actuators.items():
            values = np.array(
                [self._written.get((r.device, r.point), np.nan) for r in group.refs], dtype=float
            )
            groups[name] = ActuatorCommand(values, np.zeros(group.size, dtype=np.int8))
        return Commands(groups=groups)

    # ------------------------------------------------------------------ loop bookkeeping

    def _cycle_failed(self, exc: Exception, at: datetime) -> None:
        self._failures += 1
        error = f"{type(exc).__name__}: {exc}"
        if self._failures == 1 or error != self._last_error:
            log.exception("control cycle failed (%d in a row)", self._failures)
        self._last_error, self._last_error_at = error, at

    def _cycle_succeeded(self, at: datetime) -> None:
        if self._failures:
            log.warning("control cycles succeed again after %d failures", self._failures)
        self._failures = 0
        self._cycles_ok += 1
        self._last_success_at = at

    def _resume(self, now: datetime) -> PolicyState:
        """The saved state if it fits this layout and is recent, else a cold start."""
        cold = self.policy.initial_state()
        try:
            saved = self._history.saved_policy_state()
        except HistoryError as exc:
            log.warning("cannot read the saved policy state (%s); starting cold", exc)
            return cold
        if saved is None:
            log.info("no saved policy state; starting cold")
            return cold
        try:
            state = load_state(
                saved.payload,
                saved.fingerprint,
                saved.ts,
                self.layout,
                cold,
                now,
                max_age_s=self.site.policy.flow_window_s,
            )
        except ResumeRefused as exc:
            log.info("not resuming the saved policy state: %s; starting cold", exc)
            return cold
        age_s = (now - saved.ts).total_seconds()
        log.info("resuming the policy state saved %.0f s ago", age_s)
        return state

    def _maybe_save_state(self, now: datetime) -> None:
        last = self._last_state_save
        if last is not None and (now - last).total_seconds() < STATE_SAVE_EVERY_S:
            return
        self._last_state_save = now
        self._recorder.policy_state(now, self._fingerprint, dump_state(self._state))

    # ------------------------------------------------------------------------- internals

    def _age(self, now: datetime) -> None:
        """Values and devices not heard from for ``stale_after_polls`` poll intervals go STALE."""
        for d in self.site.devices:
            state = age_device_state(self._devices[d.id], now, d.stale_after_s)
            qualities = set()
            for point in self.site.profiles[d.profile].points:
                key = (d.id, point)
                r = self._latest.get(key)
                if r is not None:
                    self._latest[key] = aged = age_reading(r, now, d.stale_after_s)
                    qualities.add(aged.quality)
            if state.quality is Quality.GOOD and qualities == {Quality.STALE}:
                # it answers, but with nothing newer than the limit (e.g. a quiet subscription)
                error = f"no value newer than {d.stale_after_s:g} s"
                state = next_device_state(state, Quality.STALE, error, now)
            self._set_device(state)

    def _set_device(self, new: DeviceState) -> None:
        prev = self._devices[new.device_id]
        self._devices[new.device_id] = new
        if changed(prev, new):
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
            self._recorder.device_state(new)
            if new.quality is Quality.OFFLINE:
                # rewrite its commands once it is back: it may have rebooted to its defaults
                for key in [k for k in self._written if k[0] == new.device_id]:
                    del self._written[key]
                for key in [k for k in self._retry if k[0] == new.device_id]:
                    del self._retry[key]

    async def _poll(self, device_id: str, now: datetime) -> list[PointReading]:
        self._last_poll[device_id] = now
        client = self._clients[device_id]
        prev = self._devices[device_id]
        try:
            readings = await client.read(now)
        except CommunicationError as exc:
            self._set_device(next_device_state(prev, Quality.OFFLINE, str(exc), now))
            return self._mark_points(device_id, Quality.OFFLINE, str(exc), now)
        except DriverError as exc:
            self._set_device(next_device_state(prev, Quality.FAULTY, str(exc), now))
            return self._mark_points(device_id, Quality.FAULTY, str(exc), now)
        except Exception as exc:  # a driver bug must not stop the site: this device is FAULTY
            error = f"unexpected {type(exc).__name__} from the driver: {exc}"
            if prev.quality is not Quality.FAULTY or prev.last_error != error:
                log.error("device %s: %s", device_id, error, exc_info=exc)
            self._set_device(next_device_state(prev, Quality.FAULTY, error, now))
            return self._mark_points(device_id, Quality.FAULTY, error, now)
        faulty = [r for r in readings.values() if r.quality is not Quality.GOOD]
        drift_errors, held_no_command = self._check_drift(device_id, readings, now)
        if faulty:
            drifted = drift_errors.split("; ") if drift_errors else []
            err = "; ".join(
                [f"{r.point}: {r.error}" for r in faulty if (device_id, r.point) not in self._retry]
                + drifted
            )
            self._set_device(next_device_state(prev, Quality.FAULTY, err, now))
        elif held_no_command:
            self._set_device(next_device_state(prev, Quality.FAULTY, held_no_command, now))
        else:
            self._set_device(next_device_state(prev, Quality.GOOD, drift_errors, now))
        for r in readings.values():
            self._latest[(device_id, r.point)] = r
        return list(readings.values())

    def _check_drift(
        self, device_id: str, readings: Mapping[str, PointReading], now: datetime
    ) -> tuple[str, str]:
        """Compare every commanded point's reading with what was written to it.

        Returns (drift message for the device's last error, message when a point has not held
        its command through ``RESENDS_BEFORE_FAULTY`` re-sends: the device is FAULTY).
        """
        messages: list[str] = []
        hopeless: list[str] = []
        profile = self.site.profile_of(device_id)
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
                delay_s = min(self.site.policy.cycle_s * 2 ** (retry.attempts - 1),
                              RESEND_MAX_DELAY_S)
                retry.next_at = now + timedelta(seconds=delay_s)
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
        return "; ".join(messages), "; ".join(hopeless)

    def _mark_points(
        self, device_id: str, quality: Quality, error: str, now: datetime
    ) -> list[PointReading]:
        """Every point of a failed device gets a reading that says so (value NaN)."""
        points = self.site.profile_of(device_id).points
        out = [PointReading(device_id, p, math.nan, quality, now, error) for p in points]
        for r in out:
            self._latest[(device_id, r.point)] = r
        return out

    async def _write_all(self, writes: Sequence[PointWrite], now: datetime) -> list[CommandRecord]:
        todo: list[PointWrite] = []
        for w in writes:
            key = (w.device_id, w.point)
            if self._devices[w.device_id].quality is Quality.OFFLINE:
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
                delay_s = min(self.site.policy.cycle_s * 2 ** (retry.attempts - 1),
                              RESEND_MAX_DELAY_S)
                retry.next_at = now + timedelta(seconds=delay_s)
            offline = isinstance(exc, CommunicationError)
            quality = Quality.OFFLINE if offline else Quality.FAULTY
            self._set_device(next_device_state(self._devices[w.device_id], quality, error, now))
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

    def _maybe_compact(self, now: datetime) -> None:
        """Fold raw readings past their retention into aggregates, once per COMPACT_EVERY_S,
        in the history's worker (the cycle does not wait for it)."""
        if self._last_compact is not None:
            if (now - self._last_compact).total_seconds() < COMPACT_EVERY_S:
                return
        self._last_compact = now
        self._recorder.maintenance(partial(_compact, self._history, self.site, now))


def _compact(history: SqliteHistory, site: SiteConfig, now: datetime) -> None:
    cfg = site.history
    report = history.compact(
        now, cfg.raw_retention_days, cfg.aggregate_minutes, cfg.aggregate_retention_days
    )
    if report.rows_aggregated or report.aggregates_deleted:
        log.info(
            "history compacted: %d raw readings folded into aggregates, %d old aggregates "
            "deleted",
            report.rows_aggregated,
            report.aggregates_deleted,
        )
