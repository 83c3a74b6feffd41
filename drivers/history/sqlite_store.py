"""Embedded history store on SQLite: readings, commands and device states, in one file.

Rules
-----
- **Times are UTC epoch milliseconds on disk and aware UTC datetimes in Python.** Every datetime
  passed in must be timezone-aware (any zone; it is converted to UTC); a naive datetime raises
  :class:`ValueError` before anything is written. Resolution is one millisecond: finer parts are
  truncated toward the past (floor), on writes and on query bounds alike, so a value always falls
  in the same ``[since, until)`` window before and after the round trip.
- **NaN is stored as NULL and read back as NaN.** A reading's quality and error text are stored
  beside the value, so a failed read keeps its reason (never ``None``).
- **One call, one transaction.** ``record_*`` write all their rows with ``executemany`` inside a
  single transaction, or none of them.
- **Every sqlite3 error leaves as** :class:`HistoryError` ``from exc``. Caller mistakes (naive
  datetime, limit < 1) are :class:`ValueError`.
- **Thread-safe within one process.** One connection (``check_same_thread=False``) guarded by a
  :class:`threading.Lock`: the runtime may write from one thread while the API reads from its
  thread pool. The file is in WAL mode with ``synchronous=NORMAL``: readers in other processes are
  not blocked by the writer, and a committed batch survives a process crash (the last batches may
  be lost on power failure, which history can afford).

Schema (version :data:`SCHEMA_VERSION`, recorded in table ``schema_version``)::

    readings(ts, device_id, point, value REAL NULL=NaN, quality, error)
    commands(ts, device_id, point, value REAL NULL=NaN, reason, source, ok 0|1, error)
    device_states(ts = DeviceState.since, device_id, quality, last_error, last_good_at NULL=never)
    aggregates(bucket_start, bucket_ms, device_id, point, count, good_count,
               mean, min, max, last NULL=no good value, last_ts)          -- since version 2
    drift_events(ts, device_id, point, commanded, actual NULL=none, detail, attempt, resent)
    policy_state(id = 1, ts, fingerprint, payload)   -- one row: the newest saved state, v3
    overrides(id AUTOINCREMENT, target, target_id, value NULL=by class, lighting_class NULL,
              start, end, reason, author, created_at, cancelled_at NULL)      -- since v4
    compliance_intervals(segment_id, start, end, flow_veh_h NULL=unknown, lit, required_class,
              delivered_class, min_dim_pct NULL, violation)                 -- since v5

Migrations run in place, in one transaction, when a file is opened: version 1 → 2 adds the
``aggregates`` table, 2 → 3 the drift events and the saved policy state, 3 → 4 the operators'
overrides, 4 → 5 the compliance record. A file of a newer
version than this code knows is refused.

Locks. The busy timeout is short (:data:`BUSY_TIMEOUT_S`): when another process holds the file
(a DB browser, a backup tool), a write fails fast with :class:`HistoryError` instead of holding
the connection for seconds; the runtime's write-behind queue keeps the data and retries.

Retention and downsampling (:meth:`SqliteHistory.compact`)
----------------------------------------------------------
Raw readings older than the retention are folded into fixed buckets of ``aggregate_minutes``,
aligned to UTC multiples of the bucket width since the epoch, and then deleted — fold and delete
in one transaction, all in SQL (``INSERT … SELECT … GROUP BY … ON CONFLICT DO UPDATE``), so a
million rows take seconds, not minutes.

- ``count`` counts every raw reading of the bucket; ``good_count``, ``mean``, ``min``, ``max`` and
  ``last`` use only readings whose quality is GOOD and whose value is not NaN. A bucket without
  one has ``good_count = 0`` and NaN statistics (NULL on disk). ``last`` is the value of the
  latest such reading (``last_ts``; on equal times the one inserted last).
- A bucket that already has a row (the retention cut ran through it last time, or a reading
  arrived late) is merged: counts add, ``mean`` is the good-count-weighted mean, ``min``/``max``
  combine, ``last`` follows the later ``last_ts``. Running compact twice changes nothing the
  second time, because the folded raw rows are gone.
- A bucket row is keyed by ``(device_id, point, bucket_start, bucket_ms)``: changing
  ``aggregate_minutes`` starts new rows of the new width instead of merging unequal buckets.
- Aggregates whose bucket *ends* before ``now - aggregate_retention_days`` are deleted.
- **Commands and device states are never deleted**: they are the audit trail of what was done.
  Nor is the compliance record (96 rows per segment and day), nor are overrides: cancelling
  one sets its ``end`` to the time of cancelling (and ``cancelled_at``); the row stays.

File size. New files are created with ``auto_vacuum = INCREMENTAL``; after a compaction that freed
pages, ``PRAGMA incremental_vacuum`` returns them to the file system and a
``wal_checkpoint(TRUNCATE)`` empties the WAL, so the file shrinks. Files created before version 2
have ``auto_vacuum = NONE``, which SQLite can only change with a full ``VACUUM``: their freed
pages are reused by later inserts (the file stops growing but does not shrink) until an operator
runs :meth:`SqliteHistory.vacuum` once, at a quiet moment (it rewrites the whole file, needs as
much free disk again, and blocks writers while it runs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from laterne.drivers.history._sqlite import SqliteFile, from_epoch_ms, reclaim_space, transaction
from laterne.models.snapshot import (
    CommandRecord,
    ComplianceIntervalView,
    DriftRecord,
    OverrideRecord,
)
from laterne.models.values import DeviceState, OverrideRequest, PointReading, Quality

__all__ = [
    "BUSY_TIMEOUT_S",
    "SCHEMA_VERSION",
    "Aggregate",
    "CompactReport",
    "HistoryError",
    "OverrideAlreadyEnded",
    "OverrideNotFound",
    "SavedState",
    "SqliteHistory",
]

SCHEMA_VERSION = 5
#: a write waits this long for another process's lock before it fails [s]
BUSY_TIMEOUT_S = 1.0

#: SQLite page cache while compacting [KiB]
_COMPACT_CACHE_KIB = 64 * 1024

# version 1; the table ``schema_version`` is SqliteFile's
_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    ts        INTEGER NOT NULL,  -- UTC epoch ms
    device_id TEXT    NOT NULL,
    point     TEXT    NOT NULL,
    value     REAL,              -- NULL for NaN
    quality   TEXT    NOT NULL,
    error     TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS readings_device_point_ts ON readings (device_id, point, ts);
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts);
CREATE TABLE IF NOT EXISTS commands (
    ts        INTEGER NOT NULL,
    device_id TEXT    NOT NULL,
    point     TEXT    NOT NULL,
    value     REAL,
    reason    TEXT    NOT NULL,
    source    TEXT    NOT NULL,
    ok        INTEGER NOT NULL,
    error     TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS commands_device_ts ON commands (device_id, ts);
CREATE INDEX IF NOT EXISTS commands_ts ON commands (ts);
CREATE TABLE IF NOT EXISTS device_states (
    ts           INTEGER NOT NULL,  -- DeviceState.since
    device_id    TEXT    NOT NULL,
    quality      TEXT    NOT NULL,
    last_error   TEXT    NOT NULL DEFAULT '',
    last_good_at INTEGER            -- NULL: never answered
);
CREATE INDEX IF NOT EXISTS device_states_device_ts ON device_states (device_id, ts);
CREATE INDEX IF NOT EXISTS device_states_ts ON device_states (ts);
"""

#: statements that bring a file from version ``v`` to ``v + 1``, run in one transaction
_MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE IF NOT EXISTS aggregates (
    bucket_start INTEGER NOT NULL,  -- UTC epoch ms, a multiple of bucket_ms
    bucket_ms    INTEGER NOT NULL,  -- bucket width [ms]
    device_id    TEXT    NOT NULL,
    point        TEXT    NOT NULL,
    count        INTEGER NOT NULL,  -- raw readings folded in, any quality
    good_count   INTEGER NOT NULL,  -- of which GOOD with a value: the base of the statistics
    mean         REAL,              -- NULL when good_count = 0
    min          REAL,
    max          REAL,
    last         REAL,              -- value of the latest GOOD reading
    last_ts      INTEGER,           -- its time [UTC epoch ms]
    PRIMARY KEY (device_id, point, bucket_start, bucket_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS aggregates_bucket_start ON aggregates (bucket_start);
""",
    2: """
CREATE TABLE IF NOT EXISTS drift_events (
    ts        INTEGER NOT NULL,  -- UTC epoch ms
    device_id TEXT    NOT NULL,
    point     TEXT    NOT NULL,
    commanded REAL    NOT NULL,
    actual    REAL,              -- NULL: no usable value (e.g. out of range)
    detail    TEXT    NOT NULL,
    attempt   INTEGER NOT NULL,
    resent    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS drift_events_device_ts ON drift_events (device_id, ts);
CREATE TABLE IF NOT EXISTS policy_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    ts          INTEGER NOT NULL,  -- UTC epoch ms of the cycle that produced it
    fingerprint TEXT    NOT NULL,  -- the site layout it belongs to
    payload     TEXT    NOT NULL   -- JSON
);
""",
    3: """
CREATE TABLE IF NOT EXISTS overrides (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, also after a delete
    target         TEXT    NOT NULL,  -- 'segment' | 'zone'
    target_id      TEXT    NOT NULL,
    value          REAL,              -- level [%] or setpoint [degC], NULL: by lighting_class
    lighting_class TEXT,              -- EN 13201-2 class, NULL: by value
    start          INTEGER NOT NULL,  -- UTC epoch ms, inclusive
    "end"          INTEGER NOT NULL,  -- UTC epoch ms, exclusive
    reason         TEXT    NOT NULL,
    author         TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    cancelled_at   INTEGER,           -- NULL: not cancelled
    CHECK ((value IS NULL) <> (lighting_class IS NULL)),
    CHECK ("end" >= start)  -- equal: cancelled before it started
);
CREATE INDEX IF NOT EXISTS overrides_end ON overrides ("end");
""",
    4: """
CREATE TABLE IF NOT EXISTS compliance_intervals (
    segment_id      TEXT    NOT NULL,
    start           INTEGER NOT NULL,  -- UTC epoch ms, inclusive
    "end"           INTEGER NOT NULL,  -- UTC epoch ms, exclusive
    flow_veh_h      REAL,              -- measured over the interval, NULL: too little coverage
    lit             INTEGER NOT NULL,  -- light was required (dark, flow known)
    required_class  TEXT    NOT NULL,  -- '' where nothing was required
    delivered_class TEXT    NOT NULL,
    min_dim_pct     REAL,              -- lowest level commanded while dark, NULL: no dark cycle
    violation       INTEGER NOT NULL,
    PRIMARY KEY (segment_id, start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS compliance_intervals_end ON compliance_intervals ("end");
""",
}

# Fold raw readings older than :cutoff into buckets of :bucket_ms, merging into existing rows.
# ``gv`` is the value when it may enter the statistics (GOOD and not NaN), else NULL; SQL's
# aggregates skip NULLs, which is exactly the rule. Bucket starts are floored also for times
# before 1970 (SQLite's % truncates toward zero). Inside DO UPDATE a bare column is the stored
# row and ``excluded.*`` the new part; every SET expression sees the values before the update.
# ``WHERE true`` resolves SQLite's INSERT … SELECT … ON CONFLICT parsing ambiguity.
_FOLD_SQL = """
INSERT INTO aggregates
    (bucket_start, bucket_ms, device_id, point, count, good_count, mean, min, max, last, last_ts)
SELECT g.bucket_start, :bucket_ms, g.device_id, g.point, g.n, g.good_n, g.mean, g.lo, g.hi,
       (SELECT r.value FROM readings AS r
         WHERE r.device_id = g.device_id AND r.point = g.point AND r.ts = g.last_ts
           AND r.quality = 'good' AND r.value IS NOT NULL
         ORDER BY r.rowid DESC LIMIT 1),
       g.last_ts
FROM (
    SELECT device_id, point,
           ts - ((ts % :bucket_ms) + :bucket_ms) % :bucket_ms AS bucket_start,
           count(*) AS n,
           count(gv) AS good_n,
           avg(gv) AS mean,
           min(gv) AS lo,
           max(gv) AS hi,
           max(CASE WHEN gv IS NOT NULL THEN ts END) AS last_ts
    FROM (
        SELECT device_id, point, ts, CASE WHEN quality = 'good' THEN value END AS gv
        FROM readings WHERE ts < :cutoff
    )
    GROUP BY device_id, point, bucket_start
) AS g
WHERE true
ON CONFLICT (device_id, point, bucket_start, bucket_ms) DO UPDATE SET
    count = count + excluded.count,
    good_count = good_count + excluded.good_count,
    mean = CASE
        WHEN excluded.good_count = 0 THEN mean
        WHEN good_count = 0 THEN excluded.mean
        ELSE (mean * good_count + excluded.mean * excluded.good_count)
             / (good_count + excluded.good_count)
        END,
    min = CASE WHEN min IS NULL OR excluded.min < min THEN excluded.min ELSE min END,
    max = CASE WHEN max IS NULL OR excluded.max > max THEN excluded.max ELSE max END,
    last = CASE
        WHEN excluded.last_ts IS NOT NULL AND (last_ts IS NULL OR excluded.last_ts >= last_ts)
        THEN excluded.last ELSE last END,
    last_ts = CASE
        WHEN excluded.last_ts IS NOT NULL AND (last_ts IS NULL OR excluded.last_ts >= last_ts)
        THEN excluded.last_ts ELSE last_ts END
"""


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Statistics of one point over one bucket ``[start, end)``.

    ``count`` counts every raw reading, whatever its quality; ``mean``, ``min``, ``max`` and
    ``last`` are computed over the ``good_count`` readings that were GOOD with a value, and are
    NaN when there was none (``last_ts`` is then ``None``).
    """

    device_id: str
    point: str
    start: datetime  # aware UTC, a multiple of the bucket width since the epoch
    end: datetime
    count: int
    good_count: int
    mean: float
    min: float
    max: float
    last: float  # value of the latest GOOD reading
    last_ts: datetime | None  # its time; None: no GOOD reading in the bucket


@dataclass(frozen=True, slots=True)
class CompactReport:
    """What one :meth:`SqliteHistory.compact` did."""

    rows_aggregated: int  # raw readings folded into aggregates (the same rows were deleted)
    raw_deleted: int
    aggregates_deleted: int  # buckets past the aggregate retention
    buckets_written: int = 0  # aggregate rows inserted or merged into


@dataclass(frozen=True, slots=True)
class SavedState:
    """The policy state saved by the last cycle before a stop: when, for which layout, what."""

    ts: datetime
    fingerprint: str
    payload: str


class HistoryError(Exception):
    """The history store failed (I/O, locking, corruption, wrong schema, or closed).

    The underlying :class:`sqlite3.Error`, when there is one, is the ``__cause__``.
    """


class OverrideNotFound(LookupError):
    """No override with this id is stored."""


class OverrideAlreadyEnded(ValueError):
    """The override asked to be cancelled has already ended (or was cancelled before)."""


_OVERRIDE_COLUMNS = (
    'id, target, target_id, value, lighting_class, start, "end", reason, author, created_at, '
    "cancelled_at"
)


def _override_record(row: tuple[Any, ...]) -> OverrideRecord:
    oid, target, target_id, value, cls, start, end, reason, author, created, cancelled = row
    return OverrideRecord(
        id=oid,
        target=target,
        target_id=target_id,
        value=value,
        lighting_class=cls,
        start=from_epoch_ms(start),
        end=from_epoch_ms(end),
        reason=reason,
        author=author,
        created_at=from_epoch_ms(created),
        cancelled_at=None if cancelled is None else from_epoch_ms(cancelled),
    )


def _nan_to_null(value: float) -> float | None:
    return None if math.isnan(value) else value


def _null_to_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


class SqliteHistory(SqliteFile):
    """History of readings, commands and device states in one SQLite file.

    Opening, locking, the schema version and its migrations, :meth:`close` and the context
    manager are :class:`~laterne.drivers.history._sqlite.SqliteFile`'s.

    Parameters
    ----------
    path : the database file; missing parent directories are created.

    Raises
    ------
    HistoryError
        The file cannot be opened, WAL mode cannot be enabled, or it holds another schema version.
    """

    _WHAT = "history"
    _ERROR = HistoryError
    _SCHEMA = _SCHEMA
    _SCHEMA_VERSION = SCHEMA_VERSION
    _MIGRATIONS = _MIGRATIONS
    _BUSY_TIMEOUT_S = BUSY_TIMEOUT_S

    # -- plumbing ---------------------------------------------------------------------------

    def _write_many(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self._locked() as conn, transaction(conn):
            conn.executemany(sql, rows)

    def _select(
        self, select: str, where: Sequence[tuple[str, Any]], order_by: str, limit: int
    ) -> list[Any]:
        """Rows of ``select WHERE c1 AND c2 … ORDER BY order_by LIMIT limit``, ``where`` holding
        ``(condition with one ?, its value)`` pairs (none: no WHERE)."""
        sql = select
        if where:
            sql += " WHERE " + " AND ".join(condition for condition, _ in where)
        sql += f" ORDER BY {order_by} LIMIT ?"
        params = [value for _, value in where]
        params.append(limit)
        with self._locked() as conn:
            rows: list[Any] = conn.execute(sql, params).fetchall()
        return rows

    def _window(
        self, column: str, since: datetime | None, until: datetime | None
    ) -> list[tuple[str, Any]]:
        """The conditions ``since <= column < until`` for :meth:`_select`; ``None`` is open."""
        where: list[tuple[str, Any]] = []
        if since is not None:
            where.append((f"{column} >= ?", self._to_epoch_ms(since)))
        if until is not None:
            where.append((f"{column} < ?", self._to_epoch_ms(until)))
        return where

    # -- writes -----------------------------------------------------------------------------

    def record_readings(self, readings: Sequence[PointReading]) -> None:
        """Append readings in one transaction. A naive ``ts`` refuses the whole batch."""
        cache: dict[datetime, int] = {}  # a cycle's readings mostly share a few timestamps
        rows: list[tuple[Any, ...]] = []
        for r in readings:
            ms = cache.get(r.ts)
            if ms is None:
                ms = cache[r.ts] = self._to_epoch_ms(r.ts)
            rows.append((ms, r.device_id, r.point, _nan_to_null(r.value), r.quality.value, r.error))
        self._write_many(
            "INSERT INTO readings (ts, device_id, point, value, quality, error) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )

    def record_commands(self, records: Sequence[CommandRecord]) -> None:
        """Append command records in one transaction."""
        rows = [
            (
                self._to_epoch_ms(c.ts),
                c.device_id,
                c.point,
                _nan_to_null(c.value),
                c.reason,
                c.source,
                int(c.ok),
                c.error,
            )
            for c in records
        ]
        self._write_many(
            "INSERT INTO commands (ts, device_id, point, value, reason, source, ok, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def record_device_state(self, state: DeviceState) -> None:
        """Append one device state, timed by ``state.since`` (when it entered this quality)."""
        last_good = None if state.last_good_at is None else self._to_epoch_ms(state.last_good_at)
        row = (
            self._to_epoch_ms(state.since),
            state.device_id,
            state.quality.value,
            state.last_error,
            last_good,
        )
        self._write_many(
            "INSERT INTO device_states (ts, device_id, quality, last_error, last_good_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [row],
        )

    def record_drifts(self, drifts: Sequence[DriftRecord]) -> None:
        """Append drift events (a point found not holding its command) in one transaction."""
        rows = [
            (
                self._to_epoch_ms(d.ts),
                d.device_id,
                d.point,
                d.commanded,
                None if d.actual is None else _nan_to_null(d.actual),
                d.detail,
                d.attempt,
                int(d.resent),
            )
            for d in drifts
        ]
        self._write_many(
            "INSERT INTO drift_events "
            "(ts, device_id, point, commanded, actual, detail, attempt, resent) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def save_policy_state(self, ts: datetime, fingerprint: str, payload: str) -> None:
        """Replace the saved policy state (one row) by this one."""
        self._write_many(
            "INSERT INTO policy_state (id, ts, fingerprint, payload) VALUES (1, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET ts = excluded.ts, fingerprint = excluded.fingerprint,"
            " payload = excluded.payload",
            [(self._to_epoch_ms(ts), fingerprint, payload)],
        )

    # -- the compliance record ---------------------------------------------------------------

    def record_compliance(self, records: Sequence[ComplianceIntervalView]) -> None:
        """Store closed compliance intervals in one transaction (an interval stored again, e.g.
        after a restart within it, replaces the earlier row)."""
        rows = [
            (
                r.segment_id,
                self._to_epoch_ms(r.start),
                self._to_epoch_ms(r.end),
                r.flow_veh_h,
                int(r.lit),
                r.required_class,
                r.delivered_class,
                r.min_dim_pct,
                int(r.violation),
            )
            for r in records
        ]
        self._write_many(
            "INSERT OR REPLACE INTO compliance_intervals (segment_id, start, \"end\", flow_veh_h,"
            " lit, required_class, delivered_class, min_dim_pct, violation)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def compliance_intervals(
        self, segment: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[ComplianceIntervalView]:
        """Stored compliance intervals, newest first (of one segment; ending after ``since``)."""
        _check_limit(limit)
        where: list[tuple[str, Any]] = []
        if segment is not None:
            where.append(("segment_id = ?", segment))
        if since is not None:
            where.append(('"end" > ?', self._to_epoch_ms(since)))
        rows = self._select(
            "SELECT segment_id, start, \"end\", flow_veh_h, lit, required_class,"
            " delivered_class, min_dim_pct, violation FROM compliance_intervals",
            where,
            "start DESC, segment_id ASC",
            limit,
        )
        return [
            ComplianceIntervalView(
                segment_id=sid,
                start=from_epoch_ms(start),
                end=from_epoch_ms(end),
                flow_veh_h=flow,
                lit=bool(lit),
                required_class=req,
                delivered_class=dlv,
                min_dim_pct=lo,
                violation=bool(bad),
            )
            for sid, start, end, flow, lit, req, dlv, lo, bad in rows
        ]

    def compliance_counts(self) -> dict[str, tuple[int, int]]:
        """Per segment (lit intervals, violation intervals) over everything stored."""
        with self._locked() as conn:
            rows = conn.execute(
                "SELECT segment_id, sum(lit), sum(violation) FROM compliance_intervals"
                " GROUP BY segment_id"
            ).fetchall()
        return {sid: (int(lit), int(bad)) for sid, lit, bad in rows}

    # -- overrides --------------------------------------------------------------------------

    def add_override(self, request: OverrideRequest, created_at: datetime) -> OverrideRecord:
        """Store an operator's override; its record (with the new id) is returned.

        Raises
        ------
        ValueError
            Naive times, ``end <= start``, or not exactly one of ``value`` and
            ``lighting_class``, or a NaN value; nothing is stored. (Whether the site has the
            target and the value is within its bounds is the runtime's check, not the store's.)
        """
        start_ms, end_ms = self._to_epoch_ms(request.start), self._to_epoch_ms(request.end)
        created_ms = self._to_epoch_ms(created_at)
        if end_ms <= start_ms:
            raise ValueError(
                f"override end {request.end.isoformat()} is not after its start "
                f"{request.start.isoformat()}"
            )
        if (request.value is None) == (request.lighting_class is None):
            raise ValueError("an override needs exactly one of value and lighting_class")
        if request.value is not None and not math.isfinite(request.value):
            raise ValueError(f"override value {request.value} is not a finite number")
        with self._locked() as conn, transaction(conn):
            cur = conn.execute(
                "INSERT INTO overrides (target, target_id, value, lighting_class, start, \"end\","
                " reason, author, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.target,
                    request.target_id,
                    request.value,
                    request.lighting_class,
                    start_ms,
                    end_ms,
                    request.reason,
                    request.author,
                    created_ms,
                ),
            )
            row = conn.execute(
                f"SELECT {_OVERRIDE_COLUMNS} FROM overrides WHERE id = ?", (cur.lastrowid,)
            ).fetchone()
        return _override_record(row)

    def overrides(
        self, at: datetime | None = None, *, upcoming: bool = False, limit: int = 1000
    ) -> list[OverrideRecord]:
        """Stored overrides, by start then id (oldest first).

        ``at`` None: all of them, ended and cancelled ones too. ``at`` given: those in force at
        ``at`` (``start <= at < end``); with ``upcoming`` also those that start later — every
        override not yet ended at ``at``, what a starting runtime loads (one cancelled before
        it started never is).
        """
        _check_limit(limit)
        where: list[tuple[str, Any]] = []
        if at is not None:
            at_ms = self._to_epoch_ms(at)
            where.append(('"end" > ?', at_ms))
            where.append(('"end" - start > ?', 0))  # not cancelled before it started
            if not upcoming:
                where.append(("start <= ?", at_ms))
        rows = self._select(
            f"SELECT {_OVERRIDE_COLUMNS} FROM overrides", where, "start ASC, id ASC", limit
        )
        return [_override_record(r) for r in rows]

    def cancel_override(self, override_id: int, now: datetime) -> OverrideRecord:
        """End an override at ``now`` (one that has not started yet ends at its start, so it
        never takes effect); the row stays, with ``cancelled_at``.

        Raises
        ------
        OverrideNotFound
            no override has this id.
        OverrideAlreadyEnded
            it ended (or was cancelled) at or before ``now``; nothing is changed.
        """
        now_ms = self._to_epoch_ms(now)
        with self._locked() as conn, transaction(conn, "BEGIN IMMEDIATE"):
            row = conn.execute(
                f"SELECT {_OVERRIDE_COLUMNS} FROM overrides WHERE id = ?", (override_id,)
            ).fetchone()
            if row is None:
                raise OverrideNotFound(f"no override with id {override_id}")
            found = _override_record(row)
            if row[6] <= now_ms:
                raise OverrideAlreadyEnded(
                    f"override {override_id} already ended at {found.end.isoformat()}"
                )
            conn.execute(
                'UPDATE overrides SET "end" = max(start, ?), cancelled_at = ? WHERE id = ?',
                (now_ms, now_ms, override_id),
            )
            row = conn.execute(
                f"SELECT {_OVERRIDE_COLUMNS} FROM overrides WHERE id = ?", (override_id,)
            ).fetchone()
        return _override_record(row)

    # -- reads ------------------------------------------------------------------------------

    def saved_policy_state(self) -> SavedState | None:
        """The policy state saved last, or None when no cycle has saved one in this file."""
        with self._locked() as conn:
            row = conn.execute("SELECT ts, fingerprint, payload FROM policy_state").fetchone()
        if row is None:
            return None
        return SavedState(from_epoch_ms(row[0]), str(row[1]), str(row[2]))

    def drift_events(self, device_id: str | None = None, limit: int = 100) -> list[DriftRecord]:
        """Drift events, newest first, optionally of one device."""
        _check_limit(limit)
        rows = self._select(
            "SELECT ts, device_id, point, commanded, actual, detail, attempt, resent "
            "FROM drift_events",
            [] if device_id is None else [("device_id = ?", device_id)],
            "ts DESC, rowid DESC",
            limit,
        )
        return [
            DriftRecord(
                ts=from_epoch_ms(ts),
                device_id=dev,
                point=point,
                commanded=commanded,
                actual=actual,
                detail=detail,
                attempt=attempt,
                resent=bool(resent),
            )
            for ts, dev, point, commanded, actual, detail, attempt, resent in rows
        ]

    def recent_commands(
        self, limit: int = 100, device_id: str | None = None
    ) -> list[CommandRecord]:
        """The ``limit`` most recent commands, newest first, optionally of one device."""
        _check_limit(limit)
        rows = self._select(
            "SELECT ts, device_id, point, value, reason, source, ok, error FROM commands",
            [] if device_id is None else [("device_id = ?", device_id)],
            "ts DESC, rowid DESC",
            limit,
        )
        return [
            CommandRecord(
                ts=from_epoch_ms(ts),
                device_id=dev,
                point=point,
                value=_null_to_nan(value),
                reason=reason,
                source=source,
                ok=bool(ok),
                error=error,
            )
            for ts, dev, point, value, reason, source, ok, error in rows
        ]

    def readings(
        self,
        device_id: str,
        point: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[PointReading]:
        """Readings of one point within ``[since, until)``, oldest first (or newest first).

        ``limit`` keeps the *oldest* matching rows, so a caller pages forward by passing the last
        ``ts`` + 1 ms as the next ``since``; with ``newest_first`` it keeps the newest, and a
        caller pages back by passing the last ``ts`` as the next ``until``. Naive bounds raise
        :class:`ValueError`.
        """
        _check_limit(limit)
        rows = self._select(
            "SELECT ts, value, quality, error FROM readings",
            [("device_id = ?", device_id), ("point = ?", point), *self._window("ts", since, until)],
            "ts DESC, rowid DESC" if newest_first else "ts ASC, rowid ASC",
            limit,
        )
        try:
            return [
                PointReading(
                    device_id=device_id,
                    point=point,
                    value=_null_to_nan(value),
                    quality=Quality(quality),
                    ts=from_epoch_ms(ts),
                    error=error,
                )
                for ts, value, quality, error in rows
            ]
        except ValueError as exc:  # an unknown quality text: written by something else
            raise HistoryError(f"history {self.path}: corrupt readings row: {exc}") from exc

    def device_state_history(
        self, device_id: str | None = None, limit: int = 100
    ) -> list[DeviceState]:
        """Recorded device states, newest ``since`` first, optionally of one device."""
        _check_limit(limit)
        rows = self._select(
            "SELECT ts, device_id, quality, last_error, last_good_at FROM device_states",
            [] if device_id is None else [("device_id = ?", device_id)],
            "ts DESC, rowid DESC",
            limit,
        )
        try:
            return [
                DeviceState(
                    device_id=dev,
                    quality=Quality(quality),
                    last_good_at=None if last_good is None else from_epoch_ms(last_good),
                    last_error=last_error,
                    since=from_epoch_ms(ts),
                )
                for ts, dev, quality, last_error, last_good in rows
            ]
        except ValueError as exc:
            raise HistoryError(f"history {self.path}: corrupt device_states row: {exc}") from exc

    def aggregates(
        self,
        device_id: str,
        point: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 10_000,
    ) -> list[Aggregate]:
        """Aggregate buckets of one point whose start lies in ``[since, until)``, oldest first.

        Like :meth:`readings`, ``limit`` keeps the oldest rows. Naive bounds raise
        :class:`ValueError`.
        """
        _check_limit(limit)
        rows = self._select(
            "SELECT bucket_start, bucket_ms, count, good_count, mean, min, max, last, last_ts "
            "FROM aggregates",
            [
                ("device_id = ?", device_id),
                ("point = ?", point),
                *self._window("bucket_start", since, until),
            ],
            "bucket_start ASC, bucket_ms ASC",
            limit,
        )
        return [
            Aggregate(
                device_id=device_id,
                point=point,
                start=from_epoch_ms(start),
                end=from_epoch_ms(start + width),
                count=count,
                good_count=good_count,
                mean=_null_to_nan(mean),
                min=_null_to_nan(lo),
                max=_null_to_nan(hi),
                last=_null_to_nan(last),
                last_ts=None if last_ts is None else from_epoch_ms(last_ts),
            )
            for start, width, count, good_count, mean, lo, hi, last, last_ts in rows
        ]

    # -- retention --------------------------------------------------------------------------

    def compact(
        self,
        now: datetime,
        raw_retention_days: float,
        aggregate_minutes: int = 15,
        aggregate_retention_days: float = 3650,
        *,
        reclaim: bool = True,
    ) -> CompactReport:
        """Fold raw readings older than ``now - raw_retention_days`` into aggregates, delete them,
        and delete aggregates older than ``now - aggregate_retention_days``.

        Fold and deletes run in one transaction (all or nothing); see the module docstring for the
        bucket rules. Commands and device states are never touched. With ``reclaim`` (default),
        freed pages are then returned to the file system (incremental vacuum, where the file has
        it) and the WAL is checkpointed and truncated, so :meth:`file_size_bytes` drops.

        Parameters
        ----------
        now : aware datetime the retention is measured from (time is an argument)
        raw_retention_days : raw readings younger than this stay [d], >= 0
        aggregate_minutes : bucket width [min], 1 .. 1440
        aggregate_retention_days : aggregate buckets ending before this age are deleted [d], > 0

        Raises
        ------
        ValueError
            Naive ``now`` or an argument out of range; nothing is changed.
        HistoryError
            SQLite failed; the transaction is rolled back, nothing is changed.
        """
        if not raw_retention_days >= 0:  # also refuses NaN
            raise ValueError(f"raw_retention_days must be >= 0, got {raw_retention_days}")
        if not 1 <= aggregate_minutes <= 1440:
            raise ValueError(f"aggregate_minutes must lie in 1..1440, got {aggregate_minutes}")
        if not aggregate_retention_days > 0:
            raise ValueError(
                f"aggregate_retention_days must be > 0, got {aggregate_retention_days}"
            )
        now_ms = self._to_epoch_ms(now)
        cutoff_ms = now_ms - round(raw_retention_days * 86_400_000)
        aggregate_cutoff_ms = now_ms - round(aggregate_retention_days * 86_400_000)
        bucket_ms = int(aggregate_minutes) * 60_000
        with self._locked() as conn:
            # Deleting a million rows updates two indexes at scattered pages: with SQLite's
            # default 2 MB page cache that thrashes (5 s instead of 1.2 s per million rows).
            # A larger cache for this call only; shrinking it back frees the pages.
            cache_pages = conn.execute("PRAGMA cache_size").fetchone()[0]
            conn.execute(f"PRAGMA cache_size = {-_COMPACT_CACHE_KIB}")
            try:
                with transaction(conn, "BEGIN IMMEDIATE"):
                    buckets = conn.execute(
                        _FOLD_SQL, {"cutoff": cutoff_ms, "bucket_ms": bucket_ms}
                    ).rowcount
                    raw_deleted = conn.execute(
                        "DELETE FROM readings WHERE ts < ?", (cutoff_ms,)
                    ).rowcount
                    aggregates_deleted = conn.execute(
                        "DELETE FROM aggregates WHERE bucket_start < :cut "
                        "AND bucket_start + bucket_ms <= :cut",
                        {"cut": aggregate_cutoff_ms},
                    ).rowcount
            finally:
                conn.execute(f"PRAGMA cache_size = {int(cache_pages)}")
            if reclaim:
                reclaim_space(conn)
        return CompactReport(
            rows_aggregated=raw_deleted,
            raw_deleted=raw_deleted,
            aggregates_deleted=aggregates_deleted,
            buckets_written=buckets,
        )

    def vacuum(self) -> None:
        """Rewrite the whole file compactly and switch it to incremental auto-vacuum.

        A one-off for files created before schema version 2 (``auto_vacuum = NONE``), to run at a
        quiet moment: it blocks every other call until done, takes time proportional to the file
        and needs as much free disk space again.
        """
        with self._locked() as conn:
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def file_size_bytes(self) -> int:
        """Bytes on disk: the database file plus its WAL (the shared-memory index not counted)."""
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise HistoryError(f"history {self.path}: cannot stat {path}: {exc}") from exc
        return total
