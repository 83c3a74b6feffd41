"""The live runtime: the async shell that polls devices, runs the pure policy and writes commands.

Rule: this is the only controller module that does I/O. One cycle is: poll the devices that are
due (concurrently; a gateway serialises its own requests), record their readings, build the
observation, call ``Policy.step``, pass the wish through ``apply_safety``, write what changed to
devices that answer, record every command with its reason, publish a snapshot. A device that
fails is marked (logged once, on the change), never allowed to stop the cycle. Time comes from the
injected :class:`Clock` only.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from laterne.drivers.base import DeviceClient
from laterne.drivers.errors import DeviceOffline, DeviceTimeout, DriverError
from laterne.drivers.sqlite_store import SqliteHistory
from laterne.models.layout import SiteLayout
from laterne.models.site import SiteConfig
from laterne.models.snapshot import (
    AggregateRecord,
    CommandRecord,
    DeviceStateRecord,
    HistoryStatus,
    MirrorStatus,
    SiteSnapshot,
)
from laterne.models.values import (
    Commands,
    DeviceState,
    PointReading,
    PointWrite,
    Quality,
    Reason,
)

from .clock import Clock
from .health import (
    age_device_state,
    age_reading,
    changed,
    initial_device_state,
    next_device_state,
)
from .observe import ReadingKey, build_observation
from .policy import Policy, PolicyState
from .safety import SafetyViolation, apply_safety, within_bounds
from .snapshot import build_snapshot

__all__ = [
    "COMPACT_EVERY_S",
    "CycleReport",
    "HistoryMirror",
    "HistorySink",
    "Runtime",
    "commands_to_writes",
]

#: how often old raw readings are folded into aggregates [s of clock time]
COMPACT_EVERY_S = 3600.0


class HistorySink(Protocol):
    """Anything that records what the runtime saw and did."""

    def record_readings(self, readings: Sequence[PointReading]) -> None: ...

    def record_commands(self, records: Sequence[CommandRecord]) -> None: ...

    def record_device_state(self, state: DeviceState) -> None: ...


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
    """One write per segment controller and per zone setpoint, in engineering units."""
    out = [
        PointWrite(ref.device, ref.point, float(v), Reason(int(r)).label)
        for ref, v, r in zip(layout.seg_controller, cmds.dim_pct, cmds.dim_reason, strict=True)
    ]
    out += [
        PointWrite(ref.device, ref.point, float(v), Reason(int(r)).label)
        for ref, v, r in zip(
            layout.zone_setpoint, cmds.setpoint_c, cmds.setpoint_reason, strict=True
        )
    ]
    return out


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
    ) -> None:
        missing = {d.id for d in site.devices} - set(clients)
        if missing:
            raise ValueError(f"no client for devices: {', '.join(sorted(missing))}")
        self.site = site
        self.layout = SiteLayout.from_config(site)
        self.policy = Policy(self.layout, site.policy)
        self._clients = clients
        self._history = history
        self._mirrors = tuple(mirrors)
        self._last_compact: datetime | None = None
        self._clock = clock
        now = clock.now()
        self._state: PolicyState = self.policy.initial_state()
        self._commands: Commands | None = None
        self._latest: dict[ReadingKey, PointReading] = {}
        self._devices: dict[str, DeviceState] = {
            d.id: initial_device_state(d.id, now) for d in site.devices
        }
        # the history shows every start: each device offline until its first good poll
        for st in self._devices.values():
            sinks: tuple[HistorySink, ...] = (history, *self._mirrors)
            for sink in sinks:
                sink.record_device_state(st)
        self._last_poll: dict[str, datetime] = {}
        self._written: dict[ReadingKey, float] = {}
        self._cycle = 0
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
    ) -> list[PointReading]:
        return self._history.readings(device_id, point, since=since, until=until, limit=limit)

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
        self._age(now)

        obs = build_observation(self.layout, self._latest, now, self.site.policy.stale_after_s)
        state, wish = self.policy.step(self._state, obs, now)
        safe = apply_safety(self.layout, self.site.policy, wish, obs, self._commands)
        if not within_bounds(self.layout, safe):  # the filter's postcondition, checked again
            raise SafetyViolation(f"commands outside bounds: {safe}")
        self._state, self._commands = state, safe
        t2 = time.perf_counter()
        records = await self._write_all(commands_to_writes(self.layout, safe), now)
        t3 = time.perf_counter()
        await asyncio.to_thread(self._record, fresh, records)
        await self._maybe_compact(now)
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
            except Exception:  # a bug, not a device problem: keep the site running, loudly
                log.exception("control cycle failed")
            spent = (self._clock.now() - started).total_seconds()
            sleeper = asyncio.ensure_future(self._clock.sleep(max(0.0, period - spent)))
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for t in (sleeper, stopper):
                t.cancel()

    async def close(self) -> None:
        for c in self._clients.values():
            try:
                await c.close()
            except DriverError as exc:
                log.debug("closing %s: %s", c.device_id, exc)

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
            self._history.record_device_state(new)
            for m in self._mirrors:
                m.record_device_state(new)
            if new.quality is Quality.OFFLINE:
                # rewrite its commands once it is back: it may have rebooted to its defaults
                for key in [k for k in self._written if k[0] == new.device_id]:
                    del self._written[key]

    async def _poll(self, device_id: str, now: datetime) -> list[PointReading]:
        self._last_poll[device_id] = now
        client = self._clients[device_id]
        prev = self._devices[device_id]
        try:
            readings = await client.read(now)
        except (DeviceOffline, DeviceTimeout) as exc:
            self._set_device(next_device_state(prev, Quality.OFFLINE, str(exc), now))
            return self._mark_points(device_id, Quality.OFFLINE, str(exc), now)
        except DriverError as exc:
            self._set_device(next_device_state(prev, Quality.FAULTY, str(exc), now))
            return self._mark_points(device_id, Quality.FAULTY, str(exc), now)
        faulty = [r for r in readings.values() if r.quality is not Quality.GOOD]
        if faulty:
            err = "; ".join(f"{r.point}: {r.error}" for r in faulty)
            self._set_device(next_device_state(prev, Quality.FAULTY, err, now))
        else:
            self._set_device(next_device_state(prev, Quality.GOOD, "", now))
        for r in readings.values():
            self._latest[(device_id, r.point)] = r
        return list(readings.values())

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
        todo = [
            w
            for w in writes
            if self._devices[w.device_id].quality is not Quality.OFFLINE
            and self._written.get((w.device_id, w.point)) != w.value
        ]
        return list(await asyncio.gather(*(self._write(w, now) for w in todo)))

    async def _write(self, w: PointWrite, now: datetime) -> CommandRecord:
        client = self._clients[w.device_id]
        ok, error = True, ""
        try:
            await client.write(w.point, w.value)
        except DriverError as exc:
            ok, error = False, str(exc) or type(exc).__name__
            self._written.pop((w.device_id, w.point), None)
            offline = isinstance(exc, DeviceOffline | DeviceTimeout)
            quality = Quality.OFFLINE if offline else Quality.FAULTY
            self._set_device(next_device_state(self._devices[w.device_id], quality, error, now))
        else:
            self._written[(w.device_id, w.point)] = w.value
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

    def _record(self, readings: Sequence[PointReading], commands: Sequence[CommandRecord]) -> None:
        stores: tuple[HistorySink, ...] = (self._history, *self._mirrors)
        for store in stores:
            if readings:
                store.record_readings(readings)
            if commands:
                store.record_commands(commands)

    async def _maybe_compact(self, now: datetime) -> None:
        """Fold raw readings past their retention into aggregates, once per COMPACT_EVERY_S."""
        if self._last_compact is not None:
            if (now - self._last_compact).total_seconds() < COMPACT_EVERY_S:
                return
        self._last_compact = now
        cfg = self.site.history
        report = await asyncio.to_thread(
            self._history.compact,
            now,
            cfg.raw_retention_days,
            cfg.aggregate_minutes,
            cfg.aggregate_retention_days,
        )
        if report.rows_aggregated or report.aggregates_deleted:
            log.info(
                "history compacted: %d raw readings folded into aggregates, %d old aggregates "
                "deleted",
                report.rows_aggregated,
                report.aggregates_deleted,
            )
