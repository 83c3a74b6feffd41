"""The live runtime: the async shell that wires polling, deciding, writing and recording.

Rule: the runtime decides nothing and keeps no table of its own making: one cycle is

    poller → observation → decide → writer → faults → recorder → publish

— :class:`~laterne.controller.poller.Poller` polls the devices that are due (each on its own
interval and phase) and keeps their health; :func:`~laterne.controller.observe.build_observation`
turns the latest readings into the observation; the pure
:func:`~laterne.controller.cycle.decide` (policy, safety filter, post-condition) gives the safe
commands; :class:`~laterne.controller.writer.Writer` sends what changed (and what a device no
longer holds); :func:`~laterne.controller.faults.evaluate_faults` holds each segment's measured
power against what its commanded level should draw (lamps out, stuck dimming, no reading,
burning hours; after the writes, so it can never delay a command); the write-behind
:class:`~laterne.controller.recorder.Recorder` queues every reading, command, state change
and drift for the history; the cycle's frozen result is published to the
:class:`~laterne.controller.readmodel.ReadModel` the API reads. Time comes from the
injected :class:`Clock` only. The history is any :class:`~laterne.controller.store.HistoryStore`.

Keeps controlling:

- **No device can stop the cycle** (the poller and the writer isolate each device's failures).
- **No store can stop the cycle.** Everything goes through the recorder: a locked or failing
  history costs a cycle at most ``RECORD_WAIT_S``, once, and loses nothing until its queue's
  bound.
- **Every poll of a commanded point is a read-back** (the writer's rules: re-sent at once, then
  backing off; FAULTY after ``RESENDS_BEFORE_FAULTY`` re-sends that did not hold).
- **A restart resumes.** The policy's state is saved every ``STATE_SAVE_EVERY_S`` and resumed
  at start when it belongs to the same layout and is younger than the flow window; otherwise the
  policy starts cold (and steps no band down until its estimate is warm).
- **Overrides survive a restart and reach a running controller.** They live in the history
  (``add_override``, ``cancel_override``, ``set_overrides`` write there first); the runtime loads
  every one not yet ended at start and reloads them every ``OVERRIDES_RELOAD_EVERY_S``, so one
  stored by ``laterne override`` (another process) takes effect within that time. A stored
  override the site no longer accepts (a segment removed, bounds narrowed) is skipped with a
  warning; a history that cannot be read keeps the last set.
- **The loop reports on itself** (:class:`~laterne.controller.loop.LoopMonitor`): last
  successful cycle, consecutive failures and the last error, for the health endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from laterne.drivers.field.base import DeviceClient
from laterne.drivers.history.sqlite_store import HistoryError
from laterne.models.layout import SiteLayout
from laterne.models.site import SiteConfig
from laterne.models.snapshot import OverrideRecord
from laterne.models.values import (
    Commands,
    DeviceState,
    FloatArray,
    Override,
    OverrideRequest,
    PointReading,
)

from .clock import Clock
from .compliance_record import ComplianceTally, initial_record, record_step
from .cycle import ControlPolicy, decide
from .faults import FaultParams, FaultState, evaluate_faults, initial_fault_state
from .loop import LoopMonitor
from .observe import ReadingKey, build_observation, measured_segment_power_w
from .overrides import OverrideRefused, resolve_override
from .policy import Policy, PolicyState
from .poller import DeviceTable, Poller, PollSchedule
from .readmodel import CycleResult, ReadModel
from .recorder import HistorySink, Recorder, StoreQueue
from .resume import ResumeRefused, dump_state, layout_fingerprint, load_state
from .snapshot import interval_view
from .store import HistoryMirror, HistoryStore
from .writer import RESEND_MAX_DELAY_S, RESENDS_BEFORE_FAULTY, Writer, commands_to_writes

__all__ = [
    "COMPACT_EVERY_S",
    "OVERRIDES_RELOAD_EVERY_S",
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
#: how often the policy's state is saved for a restart [s of clock time]
STATE_SAVE_EVERY_S = 60.0
#: how often the overrides are read again from the history [s of clock time]
OVERRIDES_RELOAD_EVERY_S = 30.0
#: how long a cycle waits for that read [s of real time]; longer: the last set stays
OVERRIDES_RELOAD_WAIT_S = 1.0
#: how long a stop may wait for the history's queue to be written [s of real time]
CLOSE_FLUSH_S = 10.0


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


class Runtime:
    """Runs one site. What the API (and a test) may ask of it is its :attr:`read_model`, a
    :class:`~laterne.controller.readmodel.SiteReadModel`.

    Parameters
    ----------
    site : the site; every device needs a client in ``clients``
    clients : one client per device id
    history : the embedded history (read for the saved policy state at start)
    clock : the only source of time
    mirrors : further histories that get a copy of everything
    layout, policy : the site's arrays and the control policy (built from ``site`` by default)
    schedule : when each device is polled (by default each on its interval at its id's phase)
    fault_params : thresholds of the lamp and driver fault detection
    """

    def __init__(
        self,
        site: SiteConfig,
        clients: Mapping[str, DeviceClient],
        history: HistoryStore,
        clock: Clock,
        mirrors: Sequence[HistoryMirror] = (),
        *,
        layout: SiteLayout | None = None,
        policy: ControlPolicy[PolicyState] | None = None,
        schedule: PollSchedule | None = None,
        fault_params: FaultParams | None = None,
    ) -> None:
        missing = {d.id for d in site.devices} - set(clients)
        if missing:
            raise ValueError(f"no client for devices: {', '.join(sorted(missing))}")
        self.site = site
        self.layout = layout if layout is not None else SiteLayout.from_config(site)
        self.policy: ControlPolicy[PolicyState] = (
            policy if policy is not None else Policy(self.layout, site.policy)
        )
        self._record = initial_record(self.layout)
        self._tally = ComplianceTally.empty(self.layout)
        self._clients = clients
        self._history = history
        self._overrides: tuple[Override, ...] = ()
        self._refused_overrides: frozenset[int] = frozenset()
        self._overrides_unreadable = False
        self._overrides_loaded_at: datetime | None = None
        mirrors = tuple(mirrors)
        queues = [StoreQueue("sqlite", history)]
        queues += [StoreQueue(f"mirror {i + 1}", m) for i, m in enumerate(mirrors)]
        self._recorder = Recorder(queues)
        self._last_compact: datetime | None = None
        self._clock = clock
        now = clock.now()
        self._loop = LoopMonitor(clock, site.policy.cycle_s)
        self._fingerprint = layout_fingerprint(self.layout)
        self._state: PolicyState = self._resume(now)
        self._reload_overrides_now(now)
        self._last_state_save: datetime | None = None
        self._commands: Commands | None = None
        self._stale_after_s = {d.id: d.stale_after_s for d in site.devices}  # one rule
        self._devices = DeviceTable(site, now, self._recorder.device_state)
        self._writer = Writer(site, clients, self._devices)
        self._devices.on_offline(self._writer.forget)
        self._poller = Poller(site, clients, self._devices, self._writer, schedule)
        self._cycle = 0
        self._fault_params = fault_params if fault_params is not None else FaultParams()
        self._faults: FaultState = initial_fault_state(self.layout)
        self.read_model = ReadModel(
            site,
            self.layout,
            history,
            mirrors,
            self._recorder.status,
            self._loop.status,
            CycleResult(None, 0, self._state, None, {}, dict(self._devices.states), self._faults),
        )

    # ------------------------------------------------------------------------- the state

    @property
    def device_states(self) -> Mapping[str, DeviceState]:
        return dict(self._devices.states)

    @property
    def policy_state(self) -> PolicyState:
        return self._state

    @property
    def commands(self) -> Commands | None:
        return self._commands

    def set_overrides(self, overrides: Sequence[Override]) -> None:
        """Replace the stored overrides: every one not yet ended is cancelled now, these are
        stored and applied by the next cycles (each only while in force).

        Raises
        ------
        OverrideRefused
            one names a segment or zone this site does not have, or lies outside its bounds,
            or ends before it starts (nothing is changed).
        HistoryError
            the history failed (what was written before the failure stays written).
        """
        requests = [
            OverrideRequest(o.target, o.id, o.start, o.end, o.value, None, o.reason, o.author)
            for o in overrides
        ]
        for r in requests:
            resolve_override(self.site, self.layout, r)  # refuses before anything is written
        now = self._clock.now()
        for record in self._history.overrides(now, upcoming=True):
            self._history.cancel_override(record.id, now)
        for r in requests:
            self._history.add_override(r, now)
        self._reload_overrides_now(now, strict=True)

    def add_override(self, request: OverrideRequest) -> OverrideRecord:
        """Check ``request`` against the site, store it and apply it from the next cycle.

        Raises
        ------
        OverrideRefused
            the site has no such target, the value (or the class's level) is outside its
            bounds, the class cannot be delivered, or it ends before it starts.
        HistoryError
            the history failed; nothing is applied.
        """
        resolve_override(self.site, self.layout, request)
        now = self._clock.now()
        record = self._history.add_override(request, now)
        self._reload_overrides_now(now, strict=True)
        return record

    def cancel_override(self, override_id: int) -> OverrideRecord:
        """End a stored override now; the next cycle no longer applies it.

        Raises
        ------
        the history's typed errors (the SQLite history: ``OverrideNotFound``,
        ``OverrideAlreadyEnded``, ``HistoryError``).
        """
        now = self._clock.now()
        record = self._history.cancel_override(override_id, now)
        self._reload_overrides_now(now, strict=True)
        return record

    @property
    def overrides(self) -> tuple[Override, ...]:
        """The overrides the next cycles apply (loaded from the history), oldest start first."""
        return self._overrides

    @property
    def faults(self) -> FaultState:
        """Lamp and driver faults and burning hours as of the last cycle."""
        return self._faults

    def _reload_overrides_now(self, now: datetime, *, strict: bool = False) -> None:
        """Read the overrides not yet ended from the history and apply the acceptable ones.
        ``strict``: a history error is raised (an operator's call), else logged once."""
        try:
            records = self._history.overrides(now, upcoming=True)
        except HistoryError as exc:
            if strict:
                raise
            if not self._overrides_unreadable:
                log.warning("cannot read the overrides (%s); keeping the last set", exc)
                self._overrides_unreadable = True
            return
        self._apply_override_records(records, now)

    def _apply_override_records(self, records: Sequence[OverrideRecord], now: datetime) -> None:
        if self._overrides_unreadable:
            log.info("overrides readable again")
            self._overrides_unreadable = False
        self._overrides_loaded_at = now
        applied: list[Override] = []
        refused: set[int] = set()
        for record in records:
            try:
                applied.append(resolve_override(self.site, self.layout, record))
            except OverrideRefused as exc:
                refused.add(record.id)
                if record.id not in self._refused_overrides:
                    log.warning("stored override %d not applied: %s", record.id, exc)
        self._refused_overrides = frozenset(refused)
        new = tuple(applied)
        if new != self._overrides:
            log.info("%d override(s) in force or upcoming", len(new))
        self._overrides = new

    async def _maybe_reload_overrides(self, now: datetime) -> None:
        """Every OVERRIDES_RELOAD_EVERY_S, read the overrides in a worker thread (a history
        busy compacting must not hold the cycle: after OVERRIDES_RELOAD_WAIT_S it goes on)."""
        last = self._overrides_loaded_at
        if last is not None and (now - last).total_seconds() < OVERRIDES_RELOAD_EVERY_S:
            return
        self._overrides_loaded_at = now  # also on failure: try again in the next period
        read = partial(self._history.overrides, now, upcoming=True)
        try:
            records = await asyncio.wait_for(asyncio.to_thread(read), OVERRIDES_RELOAD_WAIT_S)
        except (HistoryError, TimeoutError) as exc:
            if not self._overrides_unreadable:
                why = str(exc) or f"no answer within {OVERRIDES_RELOAD_WAIT_S:g} s"
                log.warning("cannot read the overrides (%s); keeping the last set", why)
                self._overrides_unreadable = True
            return
        self._apply_override_records(records, now)

    # --------------------------------------------------------------------------- the cycle

    async def run_cycle(self) -> CycleReport:
        now = self._clock.now()
        await self._maybe_reload_overrides(now)
        t0 = time.perf_counter()
        polled = await self._poller.poll_due(now)
        t1 = time.perf_counter()
        self._recorder.readings(polled.readings)  # what was seen is kept even if deciding fails
        self._poller.age(now)

        latest = self._devices.latest
        obs = build_observation(self.layout, latest, now, self._stale_after_s)
        decision = decide(
            self.policy,
            self.layout,
            self.site.policy,
            self._state,
            obs,
            now,
            overrides=self._overrides,
            last_written=self._writer.last_written(self.layout),
        )
        state, safe = decision.state, decision.commands
        self._state, self._commands = state, safe
        t2 = time.perf_counter()
        records = await self._writer.write(commands_to_writes(self.layout, safe), now)
        t3 = time.perf_counter()
        self._recorder.commands(records)
        self._check_faults(latest, safe.dim_pct, now)
        self._record, closed = record_step(
            self.layout, self.site.policy.compliance_interval_s, self._record, obs, safe, now
        )
        if closed:
            self._tally = self._tally.add(closed)
            self._recorder.compliance([v for r in closed if (v := interval_view(r)) is not None])
            bad = [r.segment_id for r in closed if r.violation]
            if bad:
                log.warning(
                    "compliance interval to %s: lit below the required class: %s",
                    closed[0].end.isoformat(), ", ".join(bad),
                )
        drifts = self._writer.take_drifts()
        if drifts:
            self._recorder.drifts(drifts)
        self._maybe_save_state(now)
        self._maybe_compact(now)
        await self._recorder.settle(RECORD_WAIT_S)
        t4 = time.perf_counter()

        self._cycle += 1
        self.read_model.publish(
            CycleResult(
                now,
                self._cycle,
                state,
                safe,
                dict(latest),
                dict(self._devices.states),
                self._faults,
                self._tally,
            )
        )
        return CycleReport(
            ts=now,
            cycle=self._cycle,
            polled=len(polled.devices),
            readings=len(polled.readings),
            writes=len(records),
            failed_writes=sum(1 for r in records if not r.ok),
            poll_s=t1 - t0,
            decide_s=t2 - t1,
            write_s=t3 - t2,
            record_s=t4 - t3,
        )

    def _check_faults(
        self, latest: Mapping[ReadingKey, PointReading], dim_pct: FloatArray, now: datetime
    ) -> None:
        power = measured_segment_power_w(self.layout, latest, now, self._stale_after_s)
        step = evaluate_faults(self.layout, self._fault_params, self._faults, power, dim_pct, now)
        self._faults = step.state
        for f in step.raised:
            log.warning("segment %s: %s: %s", f.segment_id, f.kind, f.detail)
        for f in step.cleared:
            log.info("segment %s: %s cleared", f.segment_id, f.kind)

    async def run(self, stop: asyncio.Event) -> None:
        """Run cycles every ``policy.cycle_s`` of clock time until ``stop`` is set."""
        period = self.site.policy.cycle_s
        while not stop.is_set():
            started = self._clock.now()
            try:
                await self.run_cycle()
            except Exception as exc:  # a bug, not a device problem: keep the site running
                self._loop.failed(exc, self._clock.now())
            else:
                self._loop.succeeded(self._clock.now())  # when it ended
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

    # ------------------------------------------------------------ policy state and history

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

    def _maybe_compact(self, now: datetime) -> None:
        """Fold raw readings past their retention into aggregates, once per COMPACT_EVERY_S,
        in the history's worker (the cycle does not wait for it)."""
        if self._last_compact is not None:
            if (now - self._last_compact).total_seconds() < COMPACT_EVERY_S:
                return
        self._last_compact = now
        self._recorder.maintenance(partial(_compact, self._history, self.site, now))


def _compact(history: HistoryStore, site: SiteConfig, now: datetime) -> None:
    cfg = site.history
    report = history.compact(
        now, cfg.raw_retention_days, cfg.aggregate_minutes, cfg.aggregate_retention_days
    )
    if report.rows_aggregated or report.aggregates_deleted:
        log.info(
            "history compacted: %d raw readings folded into aggregates, %d old aggregates deleted",
            report.rows_aggregated,
            report.aggregates_deleted,
        )
