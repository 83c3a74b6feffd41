"""SqliteHistory's overrides table on a real SQLite file: add, list, cancel, migration from v3."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from laterne.drivers.history import sqlite_store
from laterne.drivers.history.sqlite_store import (
    SCHEMA_VERSION,
    OverrideAlreadyEnded,
    OverrideNotFound,
    SqliteHistory,
)
from laterne.models.values import OverrideRequest

T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
H = timedelta(hours=1)


def request(
    start_h: float = 0, end_h: float = 2, *, value: float | None = 100.0, cls: str | None = None,
    target: str = "segment", target_id: str = "bahnhofstr",
) -> OverrideRequest:  # fmt: skip
    return OverrideRequest(
        target, target_id, T0 + start_h * H, T0 + end_h * H, value, cls, "event", "ops"
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteHistory]:
    s = SqliteHistory(tmp_path / "h.sqlite")
    yield s
    s.close()


def test_add_returns_the_stored_record_with_a_new_id(store: SqliteHistory) -> None:
    a = store.add_override(request(), created_at=T0 - H)
    b = store.add_override(request(value=None, cls="M3"), created_at=T0 - H)
    assert (a.id, b.id) == (1, 2)
    assert (a.target, a.target_id) == ("segment", "bahnhofstr")
    assert (a.value, a.lighting_class) == (100, None)
    assert (b.value, b.lighting_class) == (None, "M3")
    assert (a.start, a.end, a.reason, a.author) == (T0, T0 + 2 * H, "event", "ops")
    assert a.created_at == T0 - H and a.cancelled_at is None
    assert store.overrides() == [a, b]


def test_list_in_force_upcoming_and_all(store: SqliteHistory) -> None:
    past = store.add_override(request(-3, -1), T0 - 4 * H)
    now = store.add_override(request(-1, 1), T0 - 4 * H)
    later = store.add_override(request(2, 3), T0 - 4 * H)
    assert store.overrides(T0) == [now]
    assert store.overrides(T0, upcoming=True) == [now, later]
    assert store.overrides() == [past, now, later]
    # start inclusive, end exclusive
    assert store.overrides(T0 + H) == []
    assert store.overrides(T0 - H) == [now]


def test_cancel_ends_it_now_and_keeps_the_row(store: SqliteHistory) -> None:
    o = store.add_override(request(-1, 2), T0 - H)
    cancelled = store.cancel_override(o.id, T0)
    assert cancelled.end == T0 and cancelled.cancelled_at == T0 and cancelled.start == o.start
    assert store.overrides(T0, upcoming=True) == []
    assert store.overrides() == [cancelled]
    with pytest.raises(OverrideAlreadyEnded, match="already ended"):
        store.cancel_override(o.id, T0 + H)
    with pytest.raises(OverrideNotFound, match="99"):
        store.cancel_override(99, T0)


def test_an_upcoming_override_cancelled_never_takes_effect(store: SqliteHistory) -> None:
    o = store.add_override(request(1, 2), T0)
    cancelled = store.cancel_override(o.id, T0)
    assert cancelled.end == cancelled.start == T0 + H
    assert store.overrides(T0 + 1.5 * H) == []
    assert store.overrides(T0, upcoming=True) == []
    assert store.overrides() == [cancelled]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (request(2, 2), "not after"),
        (request(2, 1), "not after"),
        (request(value=None), "exactly one"),
        (request(value=50.0, cls="M3"), "exactly one"),
        (request(value=float("nan")), "finite"),
    ],
)
def test_bad_requests_store_nothing(store: SqliteHistory, bad: OverrideRequest, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        store.add_override(bad, T0)
    assert store.overrides() == []


def test_naive_times_refused(store: SqliteHistory) -> None:
    naive = OverrideRequest("segment", "x", datetime(2026, 1, 1), datetime(2026, 1, 2), 50.0)
    with pytest.raises(ValueError, match="naive"):
        store.add_override(naive, T0)


def test_overrides_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with SqliteHistory(path) as s:
        o = s.add_override(request(), T0)
    with SqliteHistory(path) as s:
        assert s.overrides(T0, upcoming=True) == [o]
        assert s.add_override(request(), T0).id == 2


# ---------------------------------------------------------------------------------- migration


def make_v3_file(path: Path) -> None:
    """A history file as schema version 3 wrote it: the v1 tables and migrations 1 and 2."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (3)")
        conn.executescript(sqlite_store._SCHEMA)
        conn.executescript(sqlite_store._MIGRATIONS[1])
        conn.executescript(sqlite_store._MIGRATIONS[2])
        conn.execute(
            "INSERT INTO commands VALUES (0, 'seg-1', 'dim_pct', 40.0, 'traffic', 'policy', 1, '')"
        )
        conn.execute("INSERT INTO policy_state VALUES (1, 0, 'abc', '{}')")
    conn.close()


def test_a_version_3_file_gets_the_overrides_table(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite"
    make_v3_file(path)
    with SqliteHistory(path) as store:
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT version FROM schema_version").fetchall() == [
                (SCHEMA_VERSION,)
            ]
        other.close()
        assert SCHEMA_VERSION >= 4
        assert [c.device_id for c in store.recent_commands()] == ["seg-1"]
        saved = store.saved_policy_state()
        assert saved is not None and saved.fingerprint == "abc"
        assert store.overrides() == []
        assert store.add_override(request(), T0).id == 1
    with SqliteHistory(path) as again:  # reopening a migrated file is a no-op
        assert [o.id for o in again.overrides()] == [1]


def test_a_failed_migration_leaves_version_3(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite"
    make_v3_file(path)
    with sqlite3.connect(path) as conn:  # something in the way of the migration
        conn.execute("CREATE VIEW overrides_end AS SELECT 1")
    conn.close()
    with pytest.raises(sqlite_store.HistoryError):
        SqliteHistory(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(3,)]
        assert conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'overrides'"
        ).fetchone() == (0,)
    conn.close()
