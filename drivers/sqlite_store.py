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
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from laterne.models.snapshot import CommandRecord
from laterne.models.values import DeviceState, PointReading, Quality

__all__ = ["SCHEMA_VERSION", "HistoryError", "SqliteHistory"]

SCHEMA_VERSION = 1

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
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


class HistoryError(Exception):
    """The history store failed (I/O, locking, corruption, wrong schema, or closed).

    The underlying :class:`sqlite3.Error`, when there is one, is the ``__cause__``.
    """


def _to_epoch_ms(ts: datetime) -> int:
    """Aware datetime → UTC epoch milliseconds (floor). Naive → :class:`ValueError`."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"naive datetime {ts.isoformat()} refused: history times must be aware")
    return (ts - _EPOCH) // _ONE_MS


def _from_epoch_ms(ms: int) -> datetime:
    """UTC epoch milliseconds → aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=ms)


def _nan_to_null(value: float) -> float | None:
    return None if math.isnan(value) else value


def _null_to_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


class SqliteHistory:
    """History of readings, commands and device states in one SQLite file.

    Parameters
    ----------
    path : the database file; missing parent directories are created.

    Raises
    ------
    HistoryError
        The file cannot be opened, WAL mode cannot be enabled, or it holds another schema version.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HistoryError(f"cannot create directory for history {self.path}: {exc}") from exc
        try:
            # isolation_level=None: no implicit transactions; we BEGIN/COMMIT explicitly.
            self._conn = sqlite3.connect(
                self.path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot open history {self.path}: {exc}") from exc
        try:
            self._initialise()
        except BaseException:
            self._conn.close()
            self._closed = True
            raise

    # -- lifecycle --------------------------------------------------------------------------

    def _initialise(self) -> None:
        with self._locked() as conn:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise HistoryError(f"history {self.path}: cannot enable WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Check the version before touching any other table of a foreign schema.
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                rows = conn.execute("SELECT version FROM schema_version").fetchall()
                if not rows:
                    conn.execute(
                        "INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,)
                    )
                elif len(rows) != 1 or rows[0][0] != SCHEMA_VERSION:
                    found = ", ".join(str(r[0]) for r in rows)
                    raise HistoryError(
                        f"history {self.path} has schema version {found}; "
                        f"this Laterne reads version {SCHEMA_VERSION}"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the file. Idempotent; any later call raises :class:`HistoryError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.close()
            except sqlite3.Error as exc:
                raise HistoryError(f"closing history {self.path} failed: {exc}") from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, with sqlite3 errors mapped to :class:`HistoryError`."""
        with self._lock:
            if self._closed:
                raise HistoryError(f"history {self.path} is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise HistoryError(f"history {self.path}: {exc}") from exc

    def _write_many(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self._locked() as conn:
            conn.execute("BEGIN")
            try:
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # -- writes -----------------------------------------------------------------------------

    def record_readings(self, readings: Sequence[PointReading]) -> None:
        """Append readings in one transaction. A naive ``ts`` refuses the whole batch."""
        cache: dict[datetime, int] = {}  # a cycle's readings mostly share a few timestamps
        rows: list[tuple[Any, ...]] = []
        for r in readings:
            ms = cache.get(r.ts)
            if ms is None:
                ms = cache[r.ts] = _to_epoch_ms(r.ts)
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
                _to_epoch_ms(c.ts),
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
        last_good = None if state.last_good_at is None else _to_epoch_ms(state.last_good_at)
        row = (
            _to_epoch_ms(state.since),
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

    # -- reads ------------------------------------------------------------------------------

    def recent_commands(
        self, limit: int = 100, device_id: str | None = None
    ) -> list[CommandRecord]:
        """The ``limit`` most recent commands, newest first, optionally of one device."""
        _check_limit(limit)
        sql = "SELECT ts, device_id, point, value, reason, source, ok, error FROM commands"
        params: list[Any] = []
        if device_id is not None:
            sql += " WHERE device_id = ?"
            params.append(device_id)
        sql += " ORDER BY ts DESC, rowid DESC LIMIT ?"
        params.append(limit)
        with self._locked() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [
            CommandRecord(
                ts=_from_epoch_ms(ts),
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
    ) -> list[PointReading]:
        """Readings of one point within ``[since, until)``, oldest first.

        ``limit`` keeps the *oldest* matching rows, so a caller pages forward by passing the last
        ``ts`` + 1 ms as the next ``since``. Naive bounds raise :class:`ValueError`.
        """
        _check_limit(limit)
        sql = "SELECT ts, value, quality, error FROM readings WHERE device_id = ? AND point = ?"
        params: list[Any] = [device_id, point]
        if since is not None:
            sql += " AND ts >= ?"
            params.append(_to_epoch_ms(since))
        if until is not None:
            sql += " AND ts < ?"
            params.append(_to_epoch_ms(until))
        sql += " ORDER BY ts ASC, rowid ASC LIMIT ?"
        params.append(limit)
        with self._locked() as conn:
            rows = conn.execute(sql, params).fetchall()
        try:
            return [
                PointReading(
                    device_id=device_id,
                    point=point,
                    value=_null_to_nan(value),
                    quality=Quality(quality),
                    ts=_from_epoch_ms(ts),
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
        sql = "SELECT ts, device_id, quality, last_error, last_good_at FROM device_states"
        params: list[Any] = []
        if device_id is not None:
            sql += " WHERE device_id = ?"
            params.append(device_id)
        sql += " ORDER BY ts DESC, rowid DESC LIMIT ?"
        params.append(limit)
        with self._locked() as conn:
            rows = conn.execute(sql, params).fetchall()
        try:
            return [
                DeviceState(
                    device_id=dev,
                    quality=Quality(quality),
                    last_good_at=None if last_good is None else _from_epoch_ms(last_good),
                    last_error=last_error,
                    since=_from_epoch_ms(ts),
                )
                for ts, dev, quality, last_error, last_good in rows
            ]
        except ValueError as exc:
            raise HistoryError(f"history {self.path}: corrupt device_states row: {exc}") from exc
