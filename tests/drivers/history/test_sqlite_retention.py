"""SqliteHistory retention: old raw readings folded into aggregates, deletion, migration, size.

The expected statistics are computed independently with numpy over the same readings.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from laterne.drivers.history.sqlite_store import (
    SCHEMA_VERSION,
    Aggregate,
    CompactReport,
    HistoryError,
    SqliteHistory,
)
from laterne.models.snapshot import CommandRecord
from laterne.models.values import DeviceState, PointReading, Quality

T0 = datetime(2024, 11, 5, 0, 0, tzinfo=UTC)
QUALITIES = list(Quality)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteHistory]:
    s = SqliteHistory(tmp_path / "history.sqlite")
    yield s
    s.close()


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def reading(
    minute: float,
    value: float = 1.0,
    quality: Quality = Quality.GOOD,
    device_id: str = "ctr-1",
    point: str = "count",
) -> PointReading:
    return PointReading(device_id, point, value, quality, at(minute))


def raw_count(store: SqliteHistory) -> int:
    with store._locked() as conn:
        n: int = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    return n


@dataclass
class Expected:
    count: int
    good_count: int
    mean: float
    min: float
    max: float
    last: float


def expected_buckets(
    readings: Sequence[PointReading], bucket_min: int, before: datetime
) -> dict[tuple[str, str, datetime], Expected]:
    """numpy reference: per (device, point, bucket start) over readings with ts < before."""
    old = [r for r in readings if r.ts < before]
    ts_ms = np.array(
        [(r.ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1) for r in old],
        dtype=np.int64,
    )
    width_ms = bucket_min * 60_000
    starts = ts_ms - ts_ms % width_ms
    values = np.array([r.value for r in old], dtype=np.float64)
    good = np.array([r.quality is Quality.GOOD for r in old]) & ~np.isnan(values)
    keys = [(r.device_id, r.point, int(s)) for r, s in zip(old, starts, strict=True)]
    out: dict[tuple[str, str, datetime], Expected] = {}
    for key in sorted(set(keys)):
        sel = np.array([k == key for k in keys])
        g = sel & good
        v = values[g]
        order = np.argsort(ts_ms[g], kind="stable")  # stable: on ties the later insert wins
        start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=key[2])
        out[(key[0], key[1], start)] = Expected(
            count=int(sel.sum()),
            good_count=int(g.sum()),
            mean=float(np.mean(v)) if v.size else math.nan,
            min=float(np.min(v)) if v.size else math.nan,
            max=float(np.max(v)) if v.size else math.nan,
            last=float(v[order][-1]) if v.size else math.nan,
        )
    return out


def stored_buckets(
    store: SqliteHistory, readings: Sequence[PointReading]
) -> dict[tuple[str, str, datetime], Aggregate]:
    pairs = sorted({(r.device_id, r.point) for r in readings})
    return {
        (a.device_id, a.point, a.start): a
        for dev, pt in pairs
        for a in store.aggregates(dev, pt, limit=1_000_000)
    }


def assert_matches(
    got: dict[tuple[str, str, datetime], Aggregate],
    want: dict[tuple[str, str, datetime], Expected],
) -> None:
    assert got.keys() == want.keys()
    for key, e in want.items():
        a = got[key]
        assert (a.count, a.good_count) == (e.count, e.good_count), key
        for name in ("mean", "min", "max", "last"):
            assert getattr(a, name) == pytest.approx(getattr(e, name), rel=1e-12, nan_ok=True), (
                key,
                name,
            )


def random_readings(rng: np.random.Generator, n: int, span_min: float) -> list[PointReading]:
    minutes = np.sort(rng.uniform(0, span_min, n))
    devices = rng.choice(["ctr-1", "ctr-2", "meter 3"], n)
    points = rng.choice(["count", "power_w"], n)
    values = rng.normal(50.0, 20.0, n)
    values[rng.random(n) < 0.05] = np.nan
    qualities = rng.choice(4, n, p=[0.8, 0.1, 0.05, 0.05])
    return [
        PointReading(str(d), str(p), float(v), QUALITIES[q], at(float(m)))
        for m, d, p, v, q in zip(minutes, devices, points, values, qualities, strict=True)
    ]


# ---------------------------------------------------------------------------------- retention


def test_retention_deletes_exactly_the_old_raw_rows_and_keeps_the_audit_trail(
    store: SqliteHistory,
) -> None:
    store.record_readings([reading(m, float(m)) for m in range(0, 24 * 60, 10)])
    old_command = CommandRecord(
        ts=at(0),
        device_id="seg-1",
        point="dim_pct",
        value=40.0,
        reason="traffic",
        source="policy",
        ok=True,
    )
    store.record_commands([old_command])
    old_state = DeviceState("ctr-1", Quality.OFFLINE, None, "timeout", at(0))
    store.record_device_state(old_state)

    now = at(24 * 60)
    report = store.compact(now, raw_retention_days=0.5)

    cutoff = now - timedelta(days=0.5)  # minute 720
    kept = store.readings("ctr-1", "count", limit=10_000)
    assert [r.ts for r in kept] == [at(m) for m in range(720, 24 * 60, 10)]
    assert report == CompactReport(
        rows_aggregated=72, raw_deleted=72, aggregates_deleted=0, buckets_written=48
    )
    assert all(r.ts >= cutoff for r in kept)
    assert store.recent_commands() == [old_command]
    assert store.device_state_history() == [old_state]


def test_the_cut_is_exact_to_the_millisecond(store: SqliteHistory) -> None:
    now = at(60)
    cutoff = now - timedelta(days=1 / 24)  # at(0)
    ms = timedelta(milliseconds=1)
    store.record_readings(
        [
            PointReading("d", "p", v, Quality.GOOD, cutoff + dt)
            for v, dt in ((1.0, -ms), (2.0, 0 * ms))
        ]
    )
    store.compact(now, raw_retention_days=1 / 24)
    assert [r.value for r in store.readings("d", "p")] == [2.0]
    [agg] = store.aggregates("d", "p")
    assert (agg.count, agg.last) == (1, 1.0)


# -------------------------------------------------------------------------------- statistics


def test_aggregates_match_numpy_on_random_data(store: SqliteHistory) -> None:
    rng = np.random.default_rng(20241105)
    data = random_readings(rng, 6000, span_min=3 * 24 * 60)
    store.record_readings(data)
    now = at(3 * 24 * 60)
    store.compact(now, raw_retention_days=1.3)
    want = expected_buckets(data, 15, now - timedelta(days=1.3))
    assert len(want) > 300
    assert_matches(stored_buckets(store, data), want)
    assert raw_count(store) == sum(r.ts >= now - timedelta(days=1.3) for r in data)


def test_buckets_are_utc_aligned_multiples_of_the_width(store: SqliteHistory) -> None:
    store.record_readings([reading(m + 0.5) for m in range(0, 180, 7)])
    store.compact(at(24 * 60), raw_retention_days=0.5, aggregate_minutes=60)
    aggs = store.aggregates("ctr-1", "count")
    assert [a.start for a in aggs] == [at(0), at(60), at(120)]
    assert all(a.end - a.start == timedelta(hours=1) for a in aggs)
    assert all(a.start.tzinfo is UTC for a in aggs)
    assert sum(a.count for a in aggs) == len(range(0, 180, 7))


def test_nan_and_non_good_are_counted_but_not_in_the_statistics(store: SqliteHistory) -> None:
    store.record_readings(
        [
            reading(0, 10.0),
            reading(1, 1000.0, Quality.STALE),
            reading(2, math.nan, Quality.OFFLINE),
            reading(3, -1000.0, Quality.FAULTY),
            reading(4, math.nan, Quality.GOOD),  # GOOD but no value: counted, not a statistic
            reading(5, 20.0),
            reading(6, 99.0, Quality.STALE),  # later than the last GOOD: not `last`
            # a bucket with nothing good in it
            reading(15, 5.0, Quality.STALE),
            reading(16, math.nan, Quality.OFFLINE),
        ]
    )
    store.compact(at(24 * 60), raw_retention_days=0.5)
    first, second = store.aggregates("ctr-1", "count")
    assert (first.count, first.good_count) == (7, 2)
    assert (first.mean, first.min, first.max, first.last) == (15.0, 10.0, 20.0, 20.0)
    assert first.last_ts == at(5)
    assert (second.count, second.good_count) == (2, 0)
    assert all(math.isnan(x) for x in (second.mean, second.min, second.max, second.last))
    assert second.last_ts is None


def test_last_on_equal_times_is_the_later_insert(store: SqliteHistory) -> None:
    store.record_readings([reading(1, 3.0), reading(1, 4.0)])
    store.compact(at(24 * 60), raw_retention_days=0.5)
    [agg] = store.aggregates("ctr-1", "count")
    assert agg.last == 4.0


def test_aggregates_window_and_limit(store: SqliteHistory) -> None:
    store.record_readings([reading(m) for m in range(0, 120, 5)])
    store.compact(at(24 * 60), raw_retention_days=0.5)
    assert len(store.aggregates("ctr-1", "count")) == 8
    got = store.aggregates("ctr-1", "count", since=at(15), until=at(45))
    assert [a.start for a in got] == [at(15), at(30)]
    assert [a.start for a in store.aggregates("ctr-1", "count", limit=2)] == [at(0), at(15)]
    assert store.aggregates("nope", "count") == []
    with pytest.raises(ValueError, match="naive"):
        store.aggregates("ctr-1", "count", since=datetime(2024, 1, 1))


# ----------------------------------------------------------------------- merging, idempotence


def test_compacting_twice_changes_nothing(store: SqliteHistory) -> None:
    rng = np.random.default_rng(7)
    data = random_readings(rng, 2000, span_min=2 * 24 * 60)
    store.record_readings(data)
    now = at(2 * 24 * 60)
    store.compact(now, raw_retention_days=1)
    before = stored_buckets(store, data)
    again = store.compact(now, raw_retention_days=1)
    assert again == CompactReport(0, 0, 0, 0)
    assert stored_buckets(store, data) == before


def test_a_bucket_compacted_in_two_parts_equals_one_pass(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    data = random_readings(rng, 4000, span_min=2 * 24 * 60)
    now = at(2 * 24 * 60)
    with (
        SqliteHistory(tmp_path / "once.sqlite") as once,
        SqliteHistory(tmp_path / "twice.sqlite") as twice,
    ):
        once.record_readings(data)
        twice.record_readings(data)
        once.compact(now, raw_retention_days=0.5)
        # first cut falls 7 min 30 s into a bucket, so every point's bucket there splits in two
        twice.compact(now - timedelta(hours=12, minutes=7, seconds=30), raw_retention_days=0.5)
        twice.compact(now, raw_retention_days=0.5)
        want = expected_buckets(data, 15, now - timedelta(days=0.5))
        assert_matches(stored_buckets(once, data), want)
        assert_matches(stored_buckets(twice, data), want)
        assert raw_count(once) == raw_count(twice)


def test_a_late_reading_merges_into_an_existing_bucket(store: SqliteHistory) -> None:
    store.record_readings([reading(0, 10.0), reading(10, 30.0)])
    store.compact(at(24 * 60), raw_retention_days=0.5)
    # a reading for that old bucket arrives later (a device's buffered data), with a NaN beside it
    store.record_readings([reading(5, 50.0), reading(6, math.nan, Quality.OFFLINE)])
    store.compact(at(24 * 60), raw_retention_days=0.5)
    [agg] = store.aggregates("ctr-1", "count")
    assert (agg.count, agg.good_count) == (4, 3)
    assert agg.mean == pytest.approx(30.0)
    assert (agg.min, agg.max) == (10.0, 50.0)
    assert (agg.last, agg.last_ts) == (30.0, at(10))  # the late one is not the latest


def test_merge_into_a_bucket_without_good_values(store: SqliteHistory) -> None:
    store.record_readings([reading(0, math.nan, Quality.OFFLINE)])
    store.compact(at(24 * 60), raw_retention_days=0.5)
    store.record_readings([reading(1, 7.0)])
    store.compact(at(24 * 60), raw_retention_days=0.5)
    [agg] = store.aggregates("ctr-1", "count")
    assert (agg.count, agg.good_count, agg.mean, agg.min, agg.max, agg.last) == (
        2,
        1,
        7.0,
        7.0,
        7.0,
        7.0,
    )


def test_a_new_bucket_width_starts_new_rows(store: SqliteHistory) -> None:
    store.record_readings([reading(m, float(m)) for m in range(0, 60)])
    store.compact(at(24 * 60 + 30), raw_retention_days=1, aggregate_minutes=15)  # cut at 30
    store.compact(at(24 * 60 + 60), raw_retention_days=1, aggregate_minutes=60)
    aggs = store.aggregates("ctr-1", "count")
    assert [(a.start, a.end - a.start, a.count) for a in aggs] == [
        (at(0), timedelta(minutes=15), 15),
        (at(0), timedelta(hours=1), 30),
        (at(15), timedelta(minutes=15), 15),
    ]


# ------------------------------------------------------------------------- aggregate retention


def test_aggregates_past_their_retention_are_deleted(store: SqliteHistory) -> None:
    store.record_readings([reading(m) for m in range(0, 60, 5)])
    store.compact(at(2 * 24 * 60), raw_retention_days=1)
    assert len(store.aggregates("ctr-1", "count")) == 4
    # cutoff at minute 35: the buckets [0,15) and [15,30) ended before it, [30,45) has not
    report = store.compact(
        at(35) + timedelta(days=10), raw_retention_days=1, aggregate_retention_days=10
    )
    assert report.aggregates_deleted == 2
    assert [a.start for a in store.aggregates("ctr-1", "count")] == [at(30), at(45)]


def test_bad_arguments_change_nothing(store: SqliteHistory) -> None:
    store.record_readings([reading(0)])
    with pytest.raises(ValueError, match="naive"):
        store.compact(datetime(2025, 1, 1), raw_retention_days=1)
    with pytest.raises(ValueError, match="aggregate_minutes"):
        store.compact(at(10_000), raw_retention_days=1, aggregate_minutes=0)
    with pytest.raises(ValueError, match="raw_retention_days"):
        store.compact(at(10_000), raw_retention_days=math.nan)
    with pytest.raises(ValueError, match="aggregate_retention_days"):
        store.compact(at(10_000), raw_retention_days=1, aggregate_retention_days=0)
    assert raw_count(store) == 1


def test_a_failed_compaction_rolls_back(store: SqliteHistory) -> None:
    store.record_readings([reading(0)])
    with store._locked() as conn:  # make the aggregate retention DELETE fail after the fold
        conn.execute(
            "CREATE TRIGGER refuse BEFORE DELETE ON aggregates BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
        conn.execute(
            "INSERT INTO aggregates VALUES "
            "(0, 900000, 'x', 'y', 1, 0, NULL, NULL, NULL, NULL, NULL)"
        )
    with pytest.raises(HistoryError, match="no"):
        store.compact(at(10_000), raw_retention_days=1)
    assert raw_count(store) == 1
    assert store.aggregates("ctr-1", "count") == []


# ---------------------------------------------------------------------------------- file size


def test_new_files_have_incremental_auto_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    SqliteHistory(path).close()
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA auto_vacuum").fetchone()[0] == 2


def test_compaction_shrinks_the_file(store: SqliteHistory) -> None:
    rng = np.random.default_rng(3)
    data = random_readings(rng, 50_000, span_min=2 * 24 * 60)
    store.record_readings(data)
    with store._locked() as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    full = store.file_size_bytes()
    store.compact(at(2 * 24 * 60), raw_retention_days=0.1)
    assert store.file_size_bytes() < full / 3


def test_file_stops_growing_over_60_simulated_days(store: SqliteHistory) -> None:
    """8 points read every 2 minutes; compaction once a simulated day, 5 days raw retention and
    10 days of aggregates: once both retentions are full, the file stays the same size."""
    points = [f"p{i}" for i in range(8)]
    minutes = np.arange(0, 24 * 60, 2)
    sizes: list[int] = []
    for day in range(60):
        for chunk in np.array_split(minutes, 4):  # a few batches a day, as the runtime writes
            store.record_readings(
                [
                    PointReading("meter", p, float(m % 97), Quality.GOOD, at(day * 1440 + int(m)))
                    for m in chunk
                    for p in points
                ]
            )
        store.compact(at((day + 1) * 1440), raw_retention_days=5, aggregate_retention_days=10)
        sizes.append(store.file_size_bytes())
    assert raw_count(store) == 5 * 720 * len(points)
    # aggregates cover the days from 10 to 5 days ago; the raw rows the last 5
    assert len(store.aggregates("meter", "p0", limit=100_000)) == 5 * 96
    steady = sizes[20:]  # both retentions full by day 15
    assert max(steady) <= 1.05 * min(steady), sizes
    assert max(sizes) < 4_000_000, sizes  # raw 5 d x 5,760 rows/d, aggregates 5 d x 768 rows/d


# ---------------------------------------------------------------------------------- migration

_V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (1);
CREATE TABLE readings (ts INTEGER NOT NULL, device_id TEXT NOT NULL, point TEXT NOT NULL,
    value REAL, quality TEXT NOT NULL, error TEXT NOT NULL DEFAULT '');
CREATE INDEX readings_device_point_ts ON readings (device_id, point, ts);
CREATE INDEX readings_ts ON readings (ts);
CREATE TABLE commands (ts INTEGER NOT NULL, device_id TEXT NOT NULL, point TEXT NOT NULL,
    value REAL, reason TEXT NOT NULL, source TEXT NOT NULL, ok INTEGER NOT NULL,
    error TEXT NOT NULL DEFAULT '');
CREATE INDEX commands_device_ts ON commands (device_id, ts);
CREATE INDEX commands_ts ON commands (ts);
CREATE TABLE device_states (ts INTEGER NOT NULL, device_id TEXT NOT NULL,
    quality TEXT NOT NULL, last_error TEXT NOT NULL DEFAULT '', last_good_at INTEGER);
CREATE INDEX device_states_device_ts ON device_states (device_id, ts);
CREATE INDEX device_states_ts ON device_states (ts);
"""


def make_v1_file(path: Path, rows: int) -> None:
    """A history file exactly as Laterne's schema version 1 wrote it (auto_vacuum NONE)."""
    t0_ms = (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_V1_SCHEMA)
        conn.executemany(
            "INSERT INTO readings VALUES (?, 'ctr-1', 'count', ?, 'good', '')",
            [(t0_ms + i * 60_000, float(i)) for i in range(rows)],
        )
        conn.execute(
            "INSERT INTO commands VALUES (?, 'seg-1', 'dim_pct', 40.0, 'traffic', 'policy', 1, '')",
            (t0_ms,),
        )
    conn.close()


def test_a_version_1_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    make_v1_file(path, rows=3 * 1440)
    with SqliteHistory(path) as store:
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT version FROM schema_version").fetchall() == [
                (SCHEMA_VERSION,)
            ]
            assert other.execute("PRAGMA auto_vacuum").fetchone()[0] == 0  # unchanged: NONE
        assert len(store.readings("ctr-1", "count", limit=10_000)) == 3 * 1440
        assert [c.device_id for c in store.recent_commands()] == ["seg-1"]
        report = store.compact(at(3 * 1440), raw_retention_days=1)
        assert report.raw_deleted == 2 * 1440
        aggs = store.aggregates("ctr-1", "count", limit=10_000)
        assert len(aggs) == 2 * 96
        assert aggs[0].mean == pytest.approx(7.0)  # minutes 0..14
    # reopening a migrated file is a no-op
    with SqliteHistory(path) as again:
        assert len(again.aggregates("ctr-1", "count", limit=10_000)) == 2 * 96


def test_vacuum_converts_an_old_file_and_shrinks_it(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    make_v1_file(path, rows=100_000)
    with SqliteHistory(path) as store:
        store.compact(at(100_000), raw_retention_days=1)
        after_compact = store.file_size_bytes()
        store.vacuum()
        assert store.file_size_bytes() < after_compact / 3
        with store._locked() as conn:
            assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        assert len(store.aggregates("ctr-1", "count", limit=100_000)) > 6000


def test_a_failed_migration_leaves_version_1(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    make_v1_file(path, rows=10)
    with sqlite3.connect(path) as conn:  # something in the way of the migration
        conn.execute("CREATE VIEW aggregates_bucket_start AS SELECT 1")
    conn.close()
    with pytest.raises(HistoryError):
        SqliteHistory(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        assert conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'aggregates'"
        ).fetchone() == (0,)
    conn.close()
