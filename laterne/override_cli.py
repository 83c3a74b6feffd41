"""`laterne override add|list|cancel`: operators' overrides in the site's history file.

Rule: part of the composition root, registered on the one ``laterne`` app by :func:`register`.
Argument handling and printing only: whether an override is acceptable is
:func:`laterne.controller.overrides.resolve_override` (the check the runtime makes), storing it
the SQLite history's. It works on the history file the site's config names (``history.path``, or
``--db``), also while a controller runs on it: the controller reads the overrides again every
``OVERRIDES_RELOAD_EVERY_S``. Bad input is one line on stderr and exit 2, never a traceback.
Times given without an offset are the site's local time.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer

from laterne.controller.overrides import OverrideRefused, resolve_override
from laterne.drivers.history.sqlite_store import (
    HistoryError,
    OverrideAlreadyEnded,
    OverrideNotFound,
    SqliteHistory,
)
from laterne.models.layout import SiteLayout
from laterne.models.site import SiteConfig
from laterne.models.snapshot import OverrideRecord
from laterne.models.values import OverrideRequest

from .cli_exit import fail, load_site_or_exit

__all__ = ["override_app", "register"]

override_app = typer.Typer(
    no_args_is_help=True, help="Operators' overrides of segments and zones, kept in the history."
)

SiteFile = Annotated[Path, typer.Argument(help="site configuration (YAML)")]
DbOption = Annotated[
    Path | None, typer.Option("--db", help="SQLite history file (default: the site's)")
]

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*d)?\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*"
                       r"(?:(\d+(?:\.\d+)?)\s*m(?:in)?)?\s*$")  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add ``override`` (with ``add``, ``list``, ``cancel``) to ``app``."""
    app.add_typer(override_app, name="override")


def _open(site: SiteConfig, db: Path | None) -> SqliteHistory:
    try:
        return SqliteHistory(db or Path(site.history.path))
    except HistoryError as exc:
        fail(str(exc))


def _time(option: str, text: str, tz: ZoneInfo) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option}: not an ISO 8601 time: {text!r}")
    return (t if t.tzinfo is not None else t.replace(tzinfo=tz)).astimezone(UTC)


def parse_duration(text: str) -> timedelta:
    """``2h``, ``90m``, ``1d12h``, ``1.5h`` → a positive timedelta (ValueError otherwise)."""
    found = _DURATION.match(text)
    if found is None or not any(found.groups()):
        raise ValueError(f"not a duration: {text!r} (e.g. 2h, 90m, 1d12h)")
    days, hours, minutes = (float(g) if g else 0.0 for g in found.groups())
    span = timedelta(days=days, hours=hours, minutes=minutes)
    if span <= timedelta(0):
        raise ValueError(f"not a positive duration: {text!r}")
    return span


def _target(
    segment: str | None, zone: str | None, level: float | None, cls: str | None,
    setpoint: float | None,
) -> tuple[str, str, float | None, str | None]:  # fmt: skip
    if (segment is None) == (zone is None):
        fail("give exactly one of --segment ID and --zone BUILDING.ZONE")
    if segment is not None:
        if setpoint is not None:
            fail("--setpoint-c is for a --zone; a segment takes --level or --class")
        if (level is None) == (cls is None):
            fail("a segment override needs exactly one of --level PCT and --class NAME")
        return "segment", segment, level, cls
    assert zone is not None
    if level is not None or cls is not None:
        fail("--level and --class are for a --segment; a zone takes --setpoint-c")
    if setpoint is None:
        fail("a zone override needs --setpoint-c")
    return "zone", zone, setpoint, None


def _as_json(r: OverrideRecord) -> dict[str, object]:
    return r.model_dump(mode="json")


def _line(r: OverrideRecord, tz: ZoneInfo, now: datetime) -> str:
    what = f"class {r.lighting_class}" if r.lighting_class else f"{r.value:g}"
    unit = "" if r.lighting_class else (" %" if r.target == "segment" else " °C")
    state = "in force" if r.active(now) else ("upcoming" if r.start > now else "ended")
    if r.cancelled_at is not None:
        state = "cancelled"
    span = f"{r.start.astimezone(tz):%Y-%m-%d %H:%M} → {r.end.astimezone(tz):%Y-%m-%d %H:%M %Z}"
    who = f" by {r.author}" if r.author else ""
    why = f": {r.reason}" if r.reason else ""
    return f"{r.id:>4}  {r.target} {r.target_id} {what}{unit}  {span}  {state}{who}{why}"


@override_app.command("add")
def add(
    file: SiteFile,
    segment: Annotated[str | None, typer.Option(help="segment id")] = None,
    zone: Annotated[str | None, typer.Option(help="zone, as BUILDING.ZONE")] = None,
    level: Annotated[float | None, typer.Option(help="segment dim level [%]")] = None,
    cls: Annotated[
        str | None, typer.Option("--class", help="segment lighting class (EN 13201-2), e.g. M3")
    ] = None,
    setpoint_c: Annotated[
        float | None, typer.Option("--setpoint-c", help="zone heating setpoint [°C]")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="ISO 8601; without offset the site's local time (now)")
    ] = None,
    end: Annotated[str | None, typer.Option(help="ISO 8601, like --start")] = None,
    for_: Annotated[
        str | None, typer.Option("--for", help="duration instead of --end: 2h, 90m, 1d12h")
    ] = None,
    reason: Annotated[str, typer.Option(help="why (kept in the history)")] = "",
    author: Annotated[str, typer.Option(help="who decided (kept in the history)")] = "",
    db: DbOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the stored record as JSON")
    ] = False,
) -> None:
    """Store an override; a running controller applies it within 30 s."""
    site = load_site_or_exit(file)
    tz = ZoneInfo(site.site.timezone)
    kind, target_id, value, lighting = _target(segment, zone, level, cls, setpoint_c)
    now = datetime.now(UTC)
    begin = now if start is None else _time("--start", start, tz)
    if (end is None) == (for_ is None):
        fail("give exactly one of --end TIME and --for DURATION")
    if end is not None:
        finish = _time("--end", end, tz)
    else:
        assert for_ is not None
        try:
            finish = begin + parse_duration(for_)
        except ValueError as exc:
            fail(f"--for: {exc}")
    if finish <= now:
        fail(f"the override would end {finish.isoformat()}, in the past: nothing to do")
    request = OverrideRequest(kind, target_id, begin, finish, value, lighting, reason, author)
    try:
        resolved = resolve_override(site, SiteLayout.from_config(site), request)
    except OverrideRefused as exc:
        fail(str(exc))
    with _open(site, db) as history:
        try:
            record = history.add_override(request, now)
        except (HistoryError, ValueError) as exc:
            fail(str(exc))
    if as_json:
        typer.echo(json.dumps(_as_json(record)))
        return
    unit = "%" if kind == "segment" else "°C"
    typer.echo(f"override {record.id} stored: {kind} {target_id} at {resolved.value:g} {unit}")
    typer.echo(_line(record, tz, now))


@override_app.command("list")
def list_(
    file: SiteFile,
    all_: Annotated[
        bool, typer.Option("--all", help="also ended and cancelled ones (default: not ended)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON array")] = False,
    db: DbOption = None,
) -> None:
    """List the overrides in force or upcoming (with --all: every one ever stored)."""
    site = load_site_or_exit(file)
    tz = ZoneInfo(site.site.timezone)
    now = datetime.now(UTC)
    with _open(site, db) as history:
        try:
            records = history.overrides(None if all_ else now, upcoming=True, limit=100_000)
        except HistoryError as exc:
            fail(str(exc))
    if as_json:
        typer.echo(json.dumps([_as_json(r) for r in records]))
        return
    if not records:
        typer.echo("no overrides" if all_ else "no overrides in force or upcoming")
    for r in records:
        typer.echo(_line(r, tz, now))


@override_app.command("cancel")
def cancel(
    file: SiteFile,
    override_id: Annotated[int, typer.Argument(metavar="ID", help="the override's id")],
    db: DbOption = None,
) -> None:
    """End an override now (one not started yet never takes effect)."""
    site = load_site_or_exit(file)
    tz = ZoneInfo(site.site.timezone)
    now = datetime.now(UTC)
    with _open(site, db) as history:
        try:
            record = history.cancel_override(override_id, now)
        except (OverrideNotFound, OverrideAlreadyEnded, HistoryError) as exc:
            fail(str(exc))
    typer.echo(f"override {record.id} cancelled")
    typer.echo(_line(record, tz, now))
