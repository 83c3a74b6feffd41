"""SQLite plumbing shared by the history store and the Influx outbox: one file, one connection.

Rule: every file Laterne keeps in SQLite is opened, locked, versioned, closed and timed here, the
same way, and a subclass of :class:`SqliteFile` only names itself (``_WHAT``), its error type
(``_ERROR``) and its tables (``_SCHEMA``, ``_SCHEMA_VERSION``, ``_MIGRATIONS``):

- **Opening** creates missing parent directories and connects with ``isolation_level=None`` (no
  implicit transactions: :func:`transaction` BEGINs and COMMITs explicitly),
  ``check_same_thread=False`` and the class's busy timeout (``_BUSY_TIMEOUT_S``, 10 s unless a
  subclass says otherwise); then ``auto_vacuum = INCREMENTAL`` (before
  the first table, so a new file can give freed pages back), WAL mode (refused if SQLite will not
  enable it) and ``synchronous=NORMAL``: a committed transaction survives a crash of the process.
- **Schema version** is one row in ``schema_version``, checked before any other table is touched.
  A new file is created at version 1 and migrated; an older file is migrated in place, in the same
  ``BEGIN IMMEDIATE`` transaction; a newer or foreign one is refused.
- **One connection behind one** :class:`threading.Lock`. :meth:`SqliteFile._locked` refuses a
  closed file and turns every :class:`sqlite3.Error` into the subclass's ``_ERROR`` ``from exc``;
  :meth:`SqliteFile.close` is idempotent.
- **Times are aware datetimes in Python and UTC epoch milliseconds on disk**, floored; a naive
  datetime is a :class:`ValueError` before anything is written.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

__all__ = ["SqliteFile", "execute_script", "from_epoch_ms", "reclaim_space", "transaction"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def from_epoch_ms(ms: int) -> datetime:
    """UTC epoch milliseconds → aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=ms)


@contextmanager
def transaction(conn: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[None]:
    """``begin`` … ``COMMIT``, or ``ROLLBACK`` (if still open) when the block raises."""
    conn.execute(begin)
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated statements inside the caller's transaction (executescript commits)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def reclaim_space(conn: sqlite3.Connection) -> None:
    """Give free pages back (incremental auto-vacuum only) and truncate the WAL."""
    incremental = conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    if incremental and conn.execute("PRAGMA freelist_count").fetchone()[0] > 0:
        # executescript steps the pragma to completion; execute() would free one page only.
        conn.executescript("PRAGMA incremental_vacuum;")
    # Copies the WAL into the main file (which shrinks there) and truncates the WAL. Readers in
    # other processes may keep it from completing; the next call tries again.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


class SqliteFile:
    """One SQLite file on one connection; see the module docstring for the rules.

    Parameters
    ----------
    path : the SQLite file; missing parent directories are created.
    """

    #: how error messages name the file ("history", "outbox")
    _WHAT: ClassVar[str]
    #: the error every failure of the file leaves as
    _ERROR: ClassVar[type[Exception]]
    #: statements creating the tables of version 1, idempotent (``IF NOT EXISTS``)
    _SCHEMA: ClassVar[str]
    #: the version this code writes; it reads 1 to this
    _SCHEMA_VERSION: ClassVar[int]
    #: statements that bring a file from version ``v`` to ``v + 1``
    _MIGRATIONS: ClassVar[Mapping[int, str]] = {}
    #: how the message starts when the parent directory cannot be created
    _MKDIR_FAILED: ClassVar[str] = "cannot create directory for"
    #: how long a statement waits for another process's lock before failing [s]
    _BUSY_TIMEOUT_S: ClassVar[float] = 10.0

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._ERROR(f"{self._MKDIR_FAILED} {self._WHAT} {self.path}: {exc}") from exc
        try:
            # isolation_level=None: no implicit transactions; we BEGIN/COMMIT explicitly.
            self._conn = sqlite3.connect(
                self.path,
                timeout=self._BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._ERROR(f"cannot open {self._WHAT} {self.path}: {exc}") from exc
        try:
            self._initialise()
        except BaseException:
            self._conn.close()
            self._closed = True
            raise

    def _initialise(self) -> None:
        with self._locked() as conn:
            # Must come before the first table is created: a new file reclaims freed pages
            # incrementally. On an older file it only takes effect at a full VACUUM.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise self._ERROR(
                    f"{self._WHAT} {self.path}: cannot enable WAL mode (got {mode!r})"
                )
            conn.execute("PRAGMA synchronous=NORMAL")
            with transaction(conn, "BEGIN IMMEDIATE"):
                self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Create or upgrade the tables, inside the caller's transaction."""
        # Check the version before touching any other table of a foreign schema.
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        rows = conn.execute("SELECT version FROM schema_version").fetchall()
        if not rows:  # a new file: version 1 tables, then every migration
            conn.execute("INSERT INTO schema_version (version) VALUES (1)")
            version = 1
        else:
            version = rows[0][0]
            if not (
                len(rows) == 1 and isinstance(version, int) and 1 <= version <= self._SCHEMA_VERSION
            ):
                found = ", ".join(str(r[0]) for r in rows)
                reads = (
                    "version 1"
                    if self._SCHEMA_VERSION == 1
                    else f"versions 1 to {self._SCHEMA_VERSION}"
                )
                raise self._ERROR(
                    f"{self._WHAT} {self.path} has schema version {found}; "
                    f"this Laterne reads {reads}"
                )
        execute_script(conn, self._SCHEMA)
        while version < self._SCHEMA_VERSION:
            execute_script(conn, self._MIGRATIONS[version])
            version += 1
            conn.execute("UPDATE schema_version SET version = ?", (version,))

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, with sqlite3 errors mapped to ``_ERROR``."""
        with self._lock:
            if self._closed:
                raise self._ERROR(f"{self._WHAT} {self.path} is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise self._ERROR(f"{self._WHAT} {self.path}: {exc}") from exc

    def _to_epoch_ms(self, ts: datetime) -> int:
        """Aware datetime → UTC epoch milliseconds (floor). Naive → :class:`ValueError`."""
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise ValueError(
                f"naive datetime {ts.isoformat()} refused: {self._WHAT} times must be aware"
            )
        return (ts - _EPOCH) // _ONE_MS

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file. Idempotent; any later call raises ``_ERROR``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.close()
            except sqlite3.Error as exc:
                raise self._ERROR(f"closing {self._WHAT} {self.path} failed: {exc}") from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
