"""SqliteHistory on a real SQLite file: round trips, NaN, ordering, windows, WAL, reopen, errors."""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from laterne.drivers.history.sqlite_store import SCHEMA_VERSION, HistoryError, SqliteHistory
from laterne.models.snapshot import CommandRecord
from laterne.models.values import DeviceState, PointReading, Quality

T0 = datetime(2024, 11, 5, 22, 0, tzinfo=UTC)


def reading(
    minute: int,
    value: float = 1.0,
    quality: Quality = Quality.GOOD,
    device_id: str = "ctr-1",
    point: str = "count",
    error: str = "",
) -> PointReading:
    return PointReading(device_id, point, value, quality, T0 + timedelta(minutes=minute), error)


def command(
    minute: int, device_id: str = "seg-1", ok: bool = True, error: str = ""
) -> CommandRecord:
    return CommandRecord(
        ts=T0 + timedelta(minutes=minute),
        device_id=device_id,
        point="dim_pct",
        value=40.0 + minute,
        reason="traffic",
        source="policy",
        ok=ok,
        error=error,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "history.sqlite"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteHistory]:
    s = SqliteHistory(db_path)
    yield s
    s.close()


def test_creates_parent_dirs_wal_and_schema_version(db_path: Path, store: SqliteHistory) -> None:
    assert db_path.is_file()
    # Look with an independent connection: the file itself is in WAL mode.
    with sqlite3.connect(db_path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        indexes = {r[0] for r in other.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"readings_device_point_ts", "readings_ts"} <= indexes
    with store._locked() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_readings_round_trip(store: SqliteHistory) -> None:
    written = [reading(0, 12.5), reading(1, 13.0, Quality.STALE, error="old")]
    store.record_readings(written)
    assert store.readings("ctr-1", "count") == written
    got = store.readings("ctr-1", "count")[0]
    assert got.ts.tzinfo is UTC


def test_nan_keeps_quality_and_error_and_comes_back_nan(store: SqliteHistory) -> None:
    store.record_readings([reading(0, math.nan, Quality.OFFLINE, error="timeout after 2.0 s")])
    [got] = store.readings("ctr-1", "count")
    assert math.isnan(got.value)
    assert got.quality is Quality.OFFLINE
    assert got.error == "timeout after 2.0 s"
    with store._locked() as conn:
        assert conn.execute("SELECT value FROM readings").fetchone() == (None,)


def test_readings_oldest_first_whatever_the_insert_order(store: SqliteHistory) -> None:
    store.record_readings([reading(5), reading(1)])
    store.record_readings([reading(3)])
    got = store.readings("ctr-1", "count")
    assert [r.ts for r in got] == [T0 + timedelta(minutes=m) for m in (1, 3, 5)]


def test_since_inclusive_until_exclusive(store: SqliteHistory) -> None:
    store.record_readings([reading(m, float(m)) for m in range(10)])
    got = store.readings(
        "ctr-1", "count", since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=5)
    )
    assert [r.value for r in got] == [2.0, 3.0, 4.0]
    assert [r.value for r in store.readings("ctr-1", "count", since=T0 + timedelta(minutes=8))] == [
        8.0,
        9.0,
    ]
    assert [r.value for r in store.readings("ctr-1", "count", until=T0 + timedelta(minutes=2))] == [
        0.0,
        1.0,
    ]


def test_bounds_in_other_time_zones_are_the_same_instants(store: SqliteHistory) -> None:
    store.record_readings([reading(m, float(m)) for m in range(4)])
    cet = timezone(timedelta(hours=1))
    since = (T0 + timedelta(minutes=1)).astimezone(cet)
    got = store.readings("ctr-1", "count", since=since, until=since + timedelta(minutes=2))
    assert [r.value for r in got] == [1.0, 2.0]
    assert got[0].ts == T0 + timedelta(minutes=1)
    assert got[0].ts.tzinfo is UTC


def test_limit_keeps_the_oldest(store: SqliteHistory) -> None:
    store.record_readings([reading(m, float(m)) for m in range(10)])
    assert [r.value for r in store.readings("ctr-1", "count", limit=3)] == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="limit"):
        store.readings("ctr-1", "count", limit=0)


def test_readings_filtered_by_device_and_point(store: SqliteHistory) -> None:
    store.record_readings(
        [reading(0, 1.0), reading(0, 2.0, device_id="ctr-2"), reading(0, 3.0, point="speed")]
    )
    assert [r.value for r in store.readings("ctr-1", "count")] == [1.0]
    assert [r.value for r in store.readings("ctr-2", "count")] == [2.0]
    assert [r.value for r in store.readings("ctr-1", "speed")] == [3.0]
    assert store.readings("nope", "count") == []


def test_millisecond_resolution_floors(store: SqliteHistory) -> None:
    ts = T0 + timedelta(microseconds=1999)
    store.record_readings([PointReading("d", "p", 1.0, Quality.GOOD, ts)])
    [got] = store.readings("d", "p", since=ts)
    assert got.ts == T0 + timedelta(milliseconds=1)


def test_naive_datetimes_refused(store: SqliteHistory) -> None:
    naive = datetime(2024, 11, 5, 22, 0)
    bad = PointReading("d", "p", 1.0, Quality.GOOD, naive)
    with pytest.raises(ValueError, match="naive"):
        store.record_readings([reading(0), bad])
    assert store.readings("ctr-1", "count") == []  # nothing of the batch was written
    with pytest.raises(ValueError, match="naive"):
        store.readings("d", "p", since=naive)
    with pytest.raises(ValueError, match="naive"):
        store.readings("d", "p", until=naive)
    with pytest.raises(ValueError, match="naive"):
        store.record_device_state(DeviceState("d", Quality.GOOD, None, "", naive))


def test_commands_round_trip_newest_first_limit_and_device(store: SqliteHistory) -> None:
    written = [command(0), command(2, "seg-2", ok=False, error="write mismatch"), command(1)]
    store.record_commands(written)
    got = store.recent_commands()
    assert got == [written[1], written[2], written[0]]
    assert got[0].ts.tzinfo is UTC
    assert store.recent_commands(limit=1) == [written[1]]
    assert store.recent_commands(device_id="seg-1") == [written[2], written[0]]
    assert store.recent_commands(device_id="nope") == []


def test_command_with_nan_value(store: SqliteHistory) -> None:
    rec = command(0).model_copy(update={"value": math.nan})
    store.record_commands([rec])
    [got] = store.recent_commands()
    assert math.isnan(got.value)


def test_device_states_round_trip_newest_first(store: SqliteHistory) -> None:
    good = DeviceState("ctr-1", Quality.GOOD, T0, "", T0)
    offline = DeviceState(
        "ctr-1", Quality.OFFLINE, T0, "connection refused", T0 + timedelta(minutes=1)
    )
    never = DeviceState("seg-1", Quality.OFFLINE, None, "timeout", T0 + timedelta(seconds=30))
    for s in (good, offline, never):
        store.record_device_state(s)
    assert store.device_state_history() == [offline, never, good]
    assert store.device_state_history("ctr-1") == [offline, good]
    assert store.device_state_history(limit=1) == [offline]


def test_empty_batches_are_fine(store: SqliteHistory) -> None:
    store.record_readings([])
    store.record_commands([])
    assert store.readings("d", "p") == []


def test_data_survives_close_and_reopen(db_path: Path) -> None:
    store = SqliteHistory(db_path)
    store.record_readings([reading(0, math.nan, Quality.FAULTY, error="out of range")])
    store.record_commands([command(0)])
    store.record_device_state(DeviceState("ctr-1", Quality.GOOD, T0, "", T0))
    store.close()
    store.close()  # idempotent
    with SqliteHistory(db_path) as again:
        [r] = again.readings("ctr-1", "count")
        assert r.quality is Quality.FAULTY and math.isnan(r.value)
        assert again.recent_commands() == [command(0)]
        assert len(again.device_state_history()) == 1


def test_use_after_close_raises_history_error(db_path: Path) -> None:
    store = SqliteHistory(db_path)
    store.close()
    with pytest.raises(HistoryError, match="closed"):
        store.readings("d", "p")
    with pytest.raises(HistoryError, match="closed"):
        store.record_readings([reading(0)])


def test_sqlite_errors_are_wrapped(db_path: Path, store: SqliteHistory) -> None:
    with store._locked() as conn:
        conn.execute("DROP TABLE readings")
    with pytest.raises(HistoryError, match="no such table") as info:
        store.record_readings([reading(0)])
    assert isinstance(info.value.__cause__, sqlite3.Error)


def test_other_schema_version_refused(db_path: Path) -> None:
    SqliteHistory(db_path).close()
    with sqlite3.connect(db_path) as other:
        other.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(HistoryError, match="schema version 99"):
        SqliteHistory(db_path)


def test_not_a_database_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(HistoryError) as info:
        SqliteHistory(path)
    assert isinstance(info.value.__cause__, sqlite3.Error)


def test_thousands_of_rows_in_one_call(store: SqliteHistory) -> None:
    batch = [reading(0, float(i), device_id=f"lum-{i % 500}") for i in range(20_000)]
    store.record_readings(batch)
    with store._locked() as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (20_000,)
    assert len(store.readings("lum-7", "count")) == 40


def test_read_from_one_thread_while_another_writes(store: SqliteHistory) -> None:
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for batch in range(20):
                store.record_readings([reading(batch, float(i)) for i in range(200)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        got = store.readings("ctr-1", "count", limit=100_000)
        assert len(got) % 200 == 0  # a batch is visible whole or not at all
    thread.join()
    assert errors == []
    assert len(store.readings("ctr-1", "count", limit=100_000)) == 20 * 200
