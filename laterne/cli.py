"""The `laterne` command: the one composition root that wires every layer together.

Rule: this is the only module that may import every layer (models, drivers, controller, api,
simulations). It parses arguments, validates the site before anything starts, and assembles
drivers, history, runtime, API and — for the demo — the emulated site. No logic lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
import uvicorn

from laterne.api.app import create_app
from laterne.controller.clock import Clock, ScaledClock, WallClock
from laterne.controller.runtime import Runtime
from laterne.drivers.factory import build_clients
from laterne.drivers.influx import InfluxHistory
from laterne.drivers.outbox import Outbox
from laterne.drivers.sqlite_store import SqliteHistory
from laterne.models.site import SiteConfig, SiteConfigError, load_site
from laterne.models.snapshot import SiteSnapshot
from laterne.simulations.emulator import SiteEmulator

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Laterne: traffic-adaptive street lighting and public-building HVAC control.",
)
log = logging.getLogger("laterne")

SiteFile = Annotated[Path, typer.Argument(help="site configuration (YAML)")]


def _load_or_exit(path: Path) -> SiteConfig:
    try:
        return load_site(path)
    except SiteConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None


@app.command()
def validate(file: SiteFile) -> None:
    """Check a site configuration and exit; non-zero with file, line and field on any error."""
    site = _load_or_exit(file)
    typer.echo(
        f"{file}: ok — {len(site.devices)} devices, {len(site.segments)} segments "
        f"({sum(s.luminaires for s in site.segments)} luminaires), "
        f"{sum(len(b.zones) for b in site.buildings)} zones in {len(site.buildings)} buildings"
    )


@app.command()
def demo(
    file: Annotated[Path, typer.Argument(help="site configuration")] = Path(
        "site-configs/demo.yaml"
    ),
    speed: Annotated[float, typer.Option(help="simulated seconds per real second")] = 60.0,
    start: Annotated[
        str | None,
        typer.Option(help="simulated start, ISO 8601 with offset (default: today 15:30 local)"),
    ] = None,
    host: Annotated[str, typer.Option(help="API address (loopback only by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    db: Annotated[Path | None, typer.Option(help="SQLite history file")] = None,
    hours: Annotated[
        float | None, typer.Option(help="stop after this many simulated hours")
    ] = None,
) -> None:
    """Emulate the site's devices on loopback (real Modbus TCP and OPC-UA), run the controller
    on an accelerated clock and serve the API at http://HOST:PORT (docs at /docs)."""
    site = _load_or_exit(file)
    _influx_token(site)  # refuse before anything starts
    begin = _parse_start(start, site)
    clock = ScaledClock(begin, speed)
    tz = ZoneInfo(site.site.timezone)
    history = SqliteHistory(db or Path(site.history.path))
    typer.echo(
        f"Laterne demo: {site.site.name}\n"
        f"  simulated time starts {begin.astimezone(tz):%Y-%m-%d %H:%M %Z}"
        f", {speed:g}× real time\n"
        f"  API   http://{host}:{port}/api/site   docs http://{host}:{port}/docs\n"
        f"  history {db or site.history.path}\n  Ctrl-C stops."
    )
    _run(_serve(site, clock, history, host, port, emulate=True, hours=hours))


@app.command()
def run(
    file: SiteFile,
    host: Annotated[str, typer.Option(help="API address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    db: Annotated[Path | None, typer.Option(help="SQLite history file")] = None,
) -> None:
    """Run the controller against the real devices of a site, in real time."""
    site = _load_or_exit(file)
    _influx_token(site)  # refuse before anything starts
    history = SqliteHistory(db or Path(site.history.path))
    _run(_serve(site, WallClock(), history, host, port, emulate=False, hours=None))


@app.command()
def emulate(
    file: SiteFile,
    speed: Annotated[float, typer.Option(help="simulated seconds per real second")] = 1.0,
) -> None:
    """Only serve the site's emulated devices (to point another controller or a Modbus tool at)."""
    site = _load_or_exit(file)
    clock = ScaledClock(datetime.now(UTC), speed)

    async def main() -> None:
        emu = SiteEmulator(site, start=clock.now())
        await emu.start()
        typer.echo(f"emulating {len(site.devices)} devices on loopback; Ctrl-C stops")
        try:
            await emu.run(clock, period_s=site.policy.cycle_s)
        finally:
            await emu.stop()

    _run(main())


def _run(coro: Coroutine[Any, Any, None]) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # the protocol libraries log every connect and server request; Laterne logs state changes
    for noisy in ("asyncua", "pymodbus"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(coro)


def _parse_start(start: str | None, site: SiteConfig) -> datetime:
    tz = ZoneInfo(site.site.timezone)
    if start is None:
        today = datetime.now(tz).date()
        return datetime.combine(today, time(15, 30), tzinfo=tz).astimezone(UTC)
    try:
        t = datetime.fromisoformat(start)
    except ValueError:
        typer.echo(f"--start: not an ISO 8601 time: {start!r}", err=True)
        raise typer.Exit(code=2) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    return t.astimezone(UTC)


async def _serve(
    site: SiteConfig,
    clock: Clock,
    history: SqliteHistory,
    host: str,
    port: int,
    *,
    emulate: bool,
    hours: float | None,
) -> None:
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    emu = SiteEmulator(site, start=clock.now()) if emulate else None
    if emu is not None:
        await emu.start()
        tasks.append(asyncio.create_task(emu.run(clock, period_s=site.policy.cycle_s)))
    influx, outbox = _influx(site)
    mirrors = [influx] if influx is not None else []
    runtime = Runtime(site, build_clients(site), history, clock, mirrors=mirrors)
    if influx is not None:
        tasks.append(asyncio.create_task(influx.run(stop)))
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime), host=host, port=port, log_level="warning")
    )
    tasks.append(asyncio.create_task(runtime.run(stop)))
    tasks.append(asyncio.create_task(_report(runtime, clock, stop, site, hours, server)))
    try:
        await server.serve()
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


def _influx_token(site: SiteConfig) -> str | None:
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
    return InfluxHistory(cfg, _influx_token(site), outbox), outbox


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
        typer.echo(_status_line(runtime.snapshot(), tz))
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


def main() -> None:
    app()
