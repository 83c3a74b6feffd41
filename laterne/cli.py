"""The `laterne` command: the one composition root that wires every layer together.

Rule: with ``laterne.serve`` this is the composition root, the only place that may import every
layer. This module parses arguments and validates the site before anything starts; assembling
drivers, history, runtime, API and — for the demo — the emulated site is ``laterne.serve``'s job.
No control logic lives in either.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from laterne.controller.clock import ScaledClock, WallClock
from laterne.models.site import SiteConfig
from laterne.models.version import version as installed_version

from .cli_exit import load_site_or_exit
from .logs import LogLevel, configure_logging
from .serve import (
    CannotStart,
    influx_token,
    serve,
    start_emulator,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Laterne: traffic-adaptive street lighting and public-building HVAC control.",
)
log = logging.getLogger("laterne")

SiteFile = Annotated[Path, typer.Argument(help="site configuration (YAML)")]
LogLevelOption = Annotated[
    LogLevel,
    typer.Option(
        "--log-level",
        help="Laterne's logging; 'debug' also shows the protocol libraries' own (noisy) logs",
    ),
]
InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure-no-auth",
        help="serve the API on a non-loopback address although it has no authentication yet",
    ),
]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_host(host: str, insecure: bool) -> None:
    """Refuse a non-loopback API address unless the user says they know it is unprotected."""
    if _loopback(host) or insecure:
        return
    typer.echo(
        f"--host {host}: refusing to serve the API beyond this machine: it has no "
        "authentication yet, so anyone who reaches that address could read the site's devices "
        "and history. Serve it on 127.0.0.1 behind an authenticating proxy, or pass "
        "--insecure-no-auth on a network you trust.",
        err=True,
    )
    raise typer.Exit(code=2)


def _version() -> str:
    return installed_version()


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"laterne {_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Laterne: traffic-adaptive street lighting and public-building HVAC control."""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@app.command()
def validate(file: SiteFile) -> None:
    """Check a site configuration and exit; non-zero with file, line and field on any error."""
    site = load_site_or_exit(file)
    typer.echo(
        f"{file}: ok — {_plural(len(site.devices), 'device')}, "
        f"{_plural(len(site.segments), 'segment')} "
        f"({_plural(sum(s.luminaires for s in site.segments), 'luminaire')}), "
        f"{_plural(sum(len(b.zones) for b in site.buildings), 'zone')} in "
        f"{_plural(len(site.buildings), 'building')}"
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
    db: Annotated[
        Path | None, typer.Option(help="SQLite history file (moved aside first if it exists)")
    ] = None,
    hours: Annotated[
        float | None, typer.Option(help="stop after this many simulated hours")
    ] = None,
    log_level: LogLevelOption = LogLevel.info,
    insecure_no_auth: InsecureOption = False,
) -> None:
    """Run an emulated site, the controller on an accelerated clock, and the API.

    The site's devices are emulated on loopback (real Modbus TCP and OPC-UA) and the API is
    served at http://HOST:PORT (docs at /docs). Each run starts with a fresh history (the
    simulated clock restarts): the previous run's history file is moved to <name>.previous.
    """
    _check_host(host, insecure_no_auth)
    site = load_site_or_exit(file)
    influx_token(site)  # refuse before anything starts
    begin = _parse_start(start, site)
    clock = ScaledClock(begin, speed)
    tz = ZoneInfo(site.site.timezone)
    history_path = db or Path(site.history.path)

    def banner(previous: Path | None) -> str:
        moved = f"\n  previous run's history moved to {previous}" if previous is not None else ""
        return (
            f"Laterne demo: {site.site.name}\n"
            f"  simulated time starts {begin.astimezone(tz):%Y-%m-%d %H:%M %Z}"
            f", {speed:g}× real time\n"
            f"  API   http://{host}:{port}/api/site   docs http://{host}:{port}/docs\n"
            f"  history {history_path} (fresh){moved}\n  Ctrl-C stops."
        )

    running = serve(
        site, clock, history_path, host, port, emulate=True, hours=hours, fresh_banner=banner
    )
    _run(running, log_level)


@app.command()
def run(
    file: SiteFile,
    host: Annotated[str, typer.Option(help="API address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    db: Annotated[Path | None, typer.Option(help="SQLite history file")] = None,
    log_level: LogLevelOption = LogLevel.info,
    insecure_no_auth: InsecureOption = False,
) -> None:
    """Run the controller against the real devices of a site, in real time.

    One controller per site: a second `run` (or `demo`) on the same history is refused.
    """
    _check_host(host, insecure_no_auth)
    site = load_site_or_exit(file)
    influx_token(site)  # refuse before anything starts
    history_path = db or Path(site.history.path)
    _run(serve(site, WallClock(), history_path, host, port, emulate=False, hours=None), log_level)


@app.command()
def emulate(
    file: SiteFile,
    speed: Annotated[float, typer.Option(help="simulated seconds per real second")] = 1.0,
    log_level: LogLevelOption = LogLevel.info,
) -> None:
    """Only serve the site's emulated devices (to point another controller or a Modbus tool at).

    Stops cleanly on Ctrl-C (SIGINT) and on SIGTERM.
    """
    site = load_site_or_exit(file)
    clock = ScaledClock(datetime.now(UTC), speed)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            emu = await start_emulator(site, clock)
            typer.echo(
                f"emulating {_plural(len(site.devices), 'device')} on loopback; "
                "Ctrl-C or SIGTERM stops"
            )
            sys.stdout.flush()
            runner = asyncio.create_task(emu.run(clock, period_s=site.policy.cycle_s))
            stopped = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({runner, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (runner, stopped):
                    t.cancel()
                await asyncio.gather(runner, stopped, return_exceptions=True)
                await emu.stop()
            failed = runner.exception() if runner.done() and not runner.cancelled() else None
            if failed is not None:
                raise failed
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    _run(main(), log_level)


def _run(coro: Coroutine[Any, Any, None], log_level: LogLevel = LogLevel.info) -> None:
    """Run ``coro`` with Laterne's logging; a :class:`CannotStart` is one line and exit 1."""
    configure_logging(log_level)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(coro)
    except CannotStart as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None


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


from .opcua_cli import register  # noqa: E402  (the OPC-UA commands: browse, opcua-cert)

register(app)

from .simulate_cli import register as register_simulate  # noqa: E402  (laterne simulate)

register_simulate(app)

from .override_cli import register as register_override  # noqa: E402  (laterne override)

register_override(app)


def main() -> None:
    app()
