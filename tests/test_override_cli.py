"""`laterne override add|list|cancel` on a real history file: round trip, refusals, exit 2."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from laterne.cli import app
from laterne.drivers.history.sqlite_store import SqliteHistory
from laterne.override_cli import parse_duration

from .conftest import DEMO

runner = CliRunner()
FUTURE = "2099-06-01T22:00"  # the site's local time (CEST): 20:00 UTC


def invoke(db: Path, *args: str) -> tuple[int, str, str]:
    sub, *rest = args
    result = runner.invoke(app, ["override", sub, str(DEMO), "--db", str(db), *rest])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "h.sqlite"


def test_add_list_cancel_round_trip(db: Path) -> None:
    code, out, err = invoke(
        db, "add", "--segment", "bahnhofstr", "--class", "M3", "--start", FUTURE, "--for", "2h",
        "--reason", "Kirmes", "--author", "ops", "--json",
    )  # fmt: skip
    assert code == 0, err
    added = json.loads(out)
    assert added["id"] == 1 and added["lighting_class"] == "M3" and added["value"] is None
    assert added["start"] == "2099-06-01T20:00:00Z" and added["end"] == "2099-06-01T22:00:00Z"
    code, out, err = invoke(db, "add", "--zone", "school.gym", "--setpoint-c", "20", "--for", "90m")
    assert code == 0, err
    assert out.startswith("override 2 stored: zone school.gym at 20 °C")

    code, out, _ = invoke(db, "list", "--json")
    assert code == 0
    assert [r["id"] for r in json.loads(out)] == [2, 1]  # oldest start first
    code, out, _ = invoke(db, "list")
    assert "bahnhofstr class M3" in out and "upcoming by ops: Kirmes" in out
    assert "school.gym 20 °C" in out and "in force" in out

    code, out, err = invoke(db, "cancel", "1")
    assert code == 0, err
    assert out.startswith("override 1 cancelled")
    code, out, _ = invoke(db, "list", "--json")
    assert [r["id"] for r in json.loads(out)] == [2]
    code, out, _ = invoke(db, "list", "--all", "--json")
    cancelled = next(r for r in json.loads(out) if r["id"] == 1)
    assert cancelled["cancelled_at"] is not None and cancelled["end"] == cancelled["start"]
    with SqliteHistory(db) as history:  # what the runtime will read
        assert [o.id for o in history.overrides(datetime.now(UTC), upcoming=True)] == [2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--segment", "nowhere", "--level", "50", "--for", "1h"], "unknown segment 'nowhere'"),
        (["--segment", "bahnhofstr", "--level", "150", "--for", "1h"], "outside the bounds"),
        (["--segment", "bahnhofstr", "--class", "P3", "--for", "1h"], "not of the family"),
        (["--zone", "school.gym", "--setpoint-c", "40", "--for", "1h"], "outside the bounds"),
        (["--segment", "bahnhofstr", "--level", "50", "--start", FUTURE, "--end", FUTURE],
         "not after its start"),
        (["--segment", "bahnhofstr", "--level", "50"], "exactly one of --end"),
        (["--segment", "bahnhofstr", "--level", "50", "--start", "2020-01-01T20:00", "--for",
          "1h"], "in the past"),
        (["--segment", "bahnhofstr", "--level", "50", "--for", "soon"], "--for: not a duration"),
        (["--segment", "bahnhofstr", "--level", "50", "--end", "tonight"], "--end: not an ISO"),
        (["--segment", "bahnhofstr", "--for", "1h"], "exactly one of --level PCT and --class"),
        (["--zone", "school.gym", "--level", "50", "--for", "1h"], "are for a --segment"),
        (["--level", "50", "--for", "1h"], "exactly one of --segment"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(db: Path, args: list[str], message: str) -> None:
    code, out, err = invoke(db, "add", *args)
    assert code == 2
    assert message in err and err.count("\n") == 1 and out == ""
    if db.exists():
        with SqliteHistory(db) as history:
            assert history.overrides() == []


@pytest.mark.parametrize(("ident", "message"), [("7", "no override with id 7")])
def test_cancel_unknown_is_refused(db: Path, ident: str, message: str) -> None:
    code, _, err = invoke(db, "cancel", ident)
    assert code == 2 and err.strip() == message


def test_cancel_twice_is_refused(db: Path) -> None:
    assert invoke(db, "add", "--segment", "lindenweg", "--level", "50", "--for", "1h")[0] == 0
    assert invoke(db, "cancel", "1")[0] == 0
    code, _, err = invoke(db, "cancel", "1")
    assert code == 2 and "override 1 already ended" in err


def test_the_site_history_file_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # history.path is relative to the working directory
    args = ["add", str(DEMO), "--segment", "lindenweg", "--level", "50", "--for", "1h"]
    result = runner.invoke(app, ["override", *args])
    assert result.exit_code == 0, result.stderr
    with SqliteHistory(tmp_path / "var" / "demo.sqlite") as history:
        assert [o.target_id for o in history.overrides()] == ["lindenweg"]


@pytest.mark.parametrize(
    ("text", "span"),
    [("2h", timedelta(hours=2)), ("90m", timedelta(minutes=90)), ("1d12h", timedelta(hours=36)),
     ("1.5h", timedelta(minutes=90)), ("30min", timedelta(minutes=30))],
)  # fmt: skip
def test_durations(text: str, span: timedelta) -> None:
    assert parse_duration(text) == span


@pytest.mark.parametrize("text", ["", "h", "0h", "2 hours", "-1h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
