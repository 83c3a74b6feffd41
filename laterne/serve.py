"""Assembling a running site: emulator, drivers, history, runtime and API, and their shutdown.

Rule: part of the composition root (with ``laterne.cli``): the only place besides the CLI that
imports every layer. It wires parts together and turns start-up failures into one-line
:class:`CannotStart` messages; it decides nothing about control.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import typer
import uvicorn

from laterne.api.app import create_app
from laterne.controller.clock import Clock
from laterne.controller.runtime import Runtime
from laterne.drivers.field.factory import build_clients
from laterne.drivers.history.influx import InfluxHistory
from laterne.drivers.history.lockfile import SiteLock, SiteLocked
from laterne.drivers.history.outbox import Outbox
from laterne.drivers.history.sqlite_store import SqliteHistory
from laterne.models.site import SiteConfig
from laterne.models.snapshot import SiteSnapshot
from laterne.simulations.emulator import EmulatorError, SiteEmulator

__all__ = [
    "PREVIOUS_SUFFIX",
    "CannotStart",
    "api_url",
    "influx_token",
    "move_aside",
    "serve",
    "sigterm_stops",
    "start_emulator",
]

log = logging.getLogger("laterne")

#: suffix of the demo's history from the run before (``var/demo.sqlite.previous``)
PREVIOUS_SUFFIX = ".previous"


_SQLITE_COMPANIONS = ("", "-wal", "-shm")  # the database and its WAL-mode side files


class CannotStart(Exception):
    """Something the command needs could not be set up; the message is the whole story."""


async def start_emulator(site: SiteConfig, clock: Clock) -> SiteEmulator:
    """The site's emulator, started; any failure (a port in use) is one :class:`CannotStart`."""
    # pymodbus logs its own bind failure; the EmulatorError below says the same, once
    quiet = logging.getLogger("pymodbus")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        emu = SiteEmulator(site, start=clock.now())
        await emu.start()
        return emu
    except EmulatorError as exc:
        reason = _listen_failure(exc)
        hint = " — is another demo running?" if reason == "address in use" else ""
        detail = f" ({reason})" if reason else ""
        raise CannotStart(f"cannot start the emulated site: {exc}{detail}{hint}") from None
    finally:
        quiet.setLevel(level)


_REASONS = {
    errno.EADDRINUSE: "address in use",
    errno.EACCES: "permission denied",
    errno.EADDRNOTAVAIL: "address not available",
}


def _listen_failure(exc: BaseException) -> str:
    """Why a server could not listen: from the exception chain, else by trying the port."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return _REASONS.get(seen.errno, (seen.strerror or "").lower())
        seen = seen.__cause__ or seen.__context__
    # pymodbus says only "Could not start listen": try the host:port the message names
    found = re.search(r"(\d{1,3}(?:\.\d{1,3}){3}):(\d+)", str(exc))
    if found is None:
        return ""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((found.group(1), int(found.group(2))))
    except OSError as probe_exc:
        return _REASONS.get(probe_exc.errno or 0, (probe_exc.strerror or "").lower())
    return ""


def move_aside(path: Path) -> Path | None:
    """Move a SQLite file and its -wal/-shm to ``<name>.previous``; None if there was none.

    An older ``.previous`` (with its side files) is replaced as a whole, so a stale WAL is
    never paired with another database.
    """
    if not path.exists():
        return None
    previous = path.with_name(path.name + PREVIOUS_SUFFIX)
    for suffix in _SQLITE_COMPANIONS:
        previous.with_name(previous.name + suffix).unlink(missing_ok=True)
    for suffix in _SQLITE_COMPANIONS:
        src = path.with_name(path.name + suffix)
        if src.exists():
            os.replace(src, previous.with_name(previous.name + suffix))
    return previous


@contextlib.contextmanager
def sigterm_stops(server: uvicorn.Server) -> Iterator[None]:
    """SIGTERM asks ``server`` to exit, so everything is closed as after Ctrl-C.

    uvicorn handles SIGTERM itself while serving and re-raises it afterwards through the handler
    that was in place before: with the default one that would kill the process before the
    history is closed and the InfluxDB backlog flushed.
    """

    def on_sigterm(signum: int, frame: object) -> None:
        server.should_exit = True

    try:
        before = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


async def serve(
    site: SiteConfig,
    clock: Clock,
    history_path: Path,
    host: str,
    port: int,
    *,
    emulate: bool,
    hours: float | None,
    fresh_banner: Callable[[Path | None], str] | None = None,
) -> None:
    """Emulator (if ``emulate``), history, runtime and API until the server exits.

    With ``fresh_banner`` (the demo) the history file is moved aside once the emulated site has
    started — a demo already running on the same ports keeps its file — and the banner, told
    where the previous history went, is printed.

    One controller per site: the site's lock (beside the history) is taken first; a second
    controller on the same history is refused with the running one's PID, before anything else.
    """
    try:
        lock = SiteLock(history_path)
    except SiteLocked as exc:
        raise CannotStart(
            f"cannot start: {exc}; stop it first, or give this one another history with --db"
        ) from None
    except OSError as exc:
        raise CannotStart(f"cannot create the site's lock file: {exc}") from None
    try:
        await _serve_locked(site, clock, history_path, host, port, emulate, hours, fresh_banner)
    finally:
        lock.release()


async def _serve_locked(
    site: SiteConfig,
    clock: Clock,
    history_path: Path,
    host: str,
    port: int,
    emulate: bool,
    hours: float | None,
    fresh_banner: Callable[[Path | None], str] | None,
) -> None:
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    emu = await start_emulator(site, clock) if emulate else None
    try:
        if fresh_banner is not None:
            typer.echo(fresh_banner(move_aside(history_path)))
            sys.stdout.flush()
        history = SqliteHistory(history_path)
    except BaseException:
        if emu is not None:
            await emu.stop()
        raise
    if emu is not None:
        tasks.append(asyncio.create_task(emu.run(clock, period_s=site.policy.cycle_s)))
    influx, outbox = _influx(site)
    mirrors = [influx] if influx is not None else []
    runtime = Runtime(site, build_clients(site), history, clock, mirrors=mirrors)
    if influx is not None:
        tasks.append(asyncio.create_task(influx.run(stop)))
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime.read_model), host=host, port=port, log_level="warning")
    )
    if fresh_banner is None:  # `laterne run`: say where it serves, as the demo's banner does
        typer.echo(
            f"Laterne: {site.site.name}: {len(site.devices)} devices, history {history_path}\n"
            f"  API   {api_url(host, port)}/api/site   docs {api_url(host, port)}/docs\n"
            "  Ctrl-C or SIGTERM stops."
        )
        sys.stdout.flush()
    tasks.append(asyncio.create_task(runtime.run(stop)))
    tasks.append(asyncio.create_task(_report(runtime, clock, stop, site, hours, server)))
    try:
        with sigterm_stops(server):
            await server.serve()
    except SystemExit:
        if server.started:
            raise
        # uvicorn has logged why it could not listen (e.g. address already in use) and exits
        raise CannotStart(
            f"cannot serve the API on {host}:{port} — is another Laterne running? "
            "Choose another port with --port."
        ) from None
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runtime.close()
        if emu is not None:
            await emu.stop()
        if influx is not None and outbox is not None:
            with contextlib.suppress(Exception):  # what is not sent stays in the outbox
                await asyncio.wait_for(influx.flush(), timeout=5)
            influx.close()
            outbox.close()
        history.close()


def api_url(host: str, port: int) -> str:
    """``http://host:port`` with an IPv6 literal in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def influx_token(site: SiteConfig) -> str | None:
    """The InfluxDB token from the environment variable the site names; exit 2 if unset."""
    cfg = site.history.influxdb
    if cfg is None or cfg.token_env is None:
        return None
    token = os.environ.get(cfg.token_env)
    if token is None:
        typer.echo(
            f"history.influxdb.token_env: environment variable {cfg.token_env} is not set",
            err=True,
        )
        raise typer.Exit(code=2)
    return token


def _influx(site: SiteConfig) -> tuple[InfluxHistory | None, Outbox | None]:
    cfg = site.history.influxdb
    if cfg is None:
        return None, None
    outbox = Outbox(Path(cfg.outbox_path))
    return InfluxHistory(cfg, influx_token(site), outbox), outbox


async def _report(
    runtime: Runtime,
    clock: Clock,
    stop: asyncio.Event,
    site: SiteConfig,
    hours: float | None,
    server: uvicorn.Server,
) -> None:
    """Print one status line per simulated quarter hour; stop after ``hours`` if given."""
    tz = ZoneInfo(site.site.timezone)
    end = clock.now() + timedelta(hours=hours) if hours is not None else None
    while not stop.is_set():
        await clock.sleep(900)
        typer.echo(_status_line(runtime.read_model.snapshot(), tz))
        sys.stdout.flush()
        if end is not None and clock.now() >= end:
            server.should_exit = True
            return


def _status_line(snap: SiteSnapshot, tz: ZoneInfo) -> str:
    if snap.ts is None:
        return "waiting for the first cycle"
    segs = " ".join(
        f"{s.id}:{'-' if s.flow_veh_h is None else round(s.flow_veh_h)}veh/h→{s.dim_pct:.0f}%"
        for s in snap.segments
    )
    zones = " ".join(
        f"{b.id}.{z.id}:{_fmt(z.temperature_c, '.1f')}→{z.setpoint_c:.0f}°C"
        for b in snap.buildings
        for z in b.zones
    )
    offline = [d.id for d in snap.devices if d.quality.value != "good"]
    sun = f"{snap.sun_elevation_deg:+.0f}°" if snap.sun_elevation_deg is not None else "?"
    return f"{snap.ts.astimezone(tz):%a %H:%M} sun {sun} | {segs} | {zones}" + (
        f" | not good: {', '.join(offline)}" if offline else ""
    )


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)
