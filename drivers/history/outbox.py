"""A durable, append-only queue of InfluxDB line-protocol lines, in one SQLite file.

Rules
-----
- **Nothing is lost by a restart.** Every :meth:`Outbox.append` is one committed transaction in a
  WAL-mode file with ``synchronous=NORMAL``: a committed batch survives a crash of the process
  (the last batches may be lost on power failure, as with the SQLite history).
- **Order is the sequence.** Each line gets a sequence number from ``INTEGER PRIMARY KEY
  AUTOINCREMENT``: strictly increasing, never reused, not even after the rows are acknowledged
  and deleted or the file is reopened. :meth:`peek` returns the oldest lines first.
- **Only a prefix ever leaves.** :meth:`ack` and :meth:`dead_letter` remove every line up to a
  sequence number; lines are appended at the end. So the pending lines are always one contiguous
  run of sequence numbers, and :meth:`pending` is ``max - min + 1`` (two index look-ups, however
  long an outage made the queue).
- **Dead letters are kept, not dropped.** A line the server refuses as malformed moves, with the
  server's message and the time, into the ``dead_letters`` table, where an operator can read it
  (:meth:`dead_letters`) and, once fixed, re-queue it.
- Every :class:`sqlite3.Error` leaves as :class:`OutboxError` ``from exc``; caller mistakes (a line
  holding a newline, a naive datetime) are :class:`ValueError`. One connection guarded by a
  :class:`threading.Lock`: the runtime appends from worker threads while the sender peeks.

Schema::

    outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, line)
    dead_letters(seq PRIMARY KEY, line, error, failed_at [UTC epoch ms])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from laterne.drivers.history._sqlite import SqliteFile, from_epoch_ms, reclaim_space, transaction

__all__ = ["DeadLetter", "Outbox", "OutboxError"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    line TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq       INTEGER PRIMARY KEY,
    line      TEXT    NOT NULL,
    error     TEXT    NOT NULL,
    failed_at INTEGER NOT NULL
);
"""


class OutboxError(Exception):
    """The outbox file failed (I/O, locking, corruption, wrong schema, or closed)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A line the server refused as malformed, with the server's reason."""

    seq: int
    line: str
    error: str
    failed_at: datetime


class Outbox(SqliteFile):
    """Durable FIFO of line-protocol lines.

    Opening, locking, the schema version, :meth:`close` and the context manager are
    :class:`~laterne.drivers.history._sqlite.SqliteFile`'s; a drained queue gives its pages back
    (``auto_vacuum = INCREMENTAL``, :meth:`reclaim`).

    Parameters
    ----------
    path : the SQLite file; missing parent directories are created.
    """

    _WHAT = "outbox"
    _ERROR = OutboxError
    _SCHEMA = _SCHEMA
    _SCHEMA_VERSION = SCHEMA_VERSION
    _MKDIR_FAILED = "cannot open"

    # -- queue ------------------------------------------------------------------------------

    def append(self, lines: Sequence[str]) -> int:
        """Queue ``lines`` in order, in one transaction; returns the last sequence number given
        (0 for an empty call). A line holding a newline refuses the whole call."""
        for line in lines:
            if "\n" in line or "\r" in line:
                raise ValueError(f"an outbox line must be one line, got {line[:80]!r}")
        if not lines:
            return 0
        with self._locked() as conn, transaction(conn):
            conn.executemany("INSERT INTO outbox (line) VALUES (?)", ((line,) for line in lines))
            last: int = conn.execute("SELECT max(seq) FROM outbox").fetchone()[0]
        return last

    def peek(self, n: int) -> list[tuple[int, str]]:
        """The ``n`` oldest pending lines as ``(seq, line)``, oldest first; they stay queued."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        with self._locked() as conn:
            rows = conn.execute(
                "SELECT seq, line FROM outbox ORDER BY seq LIMIT ?", (n,)
            ).fetchall()
        return [(int(seq), str(line)) for seq, line in rows]

    def ack(self, up_to_seq: int) -> int:
        """Remove every pending line with ``seq <= up_to_seq`` (delivered); returns how many."""
        with self._locked() as conn, transaction(conn):
            removed: int = conn.execute("DELETE FROM outbox WHERE seq <= ?", (up_to_seq,)).rowcount
        return removed

    def pending(self) -> int:
        """Lines queued and not yet acknowledged or dead-lettered."""
        with self._locked() as conn:
            lo, hi = conn.execute("SELECT min(seq), max(seq) FROM outbox").fetchone()
        return 0 if lo is None else int(hi) - int(lo) + 1

    def last_seq(self) -> int:
        """The highest sequence number ever given (0 for a new file), pending or not."""
        with self._locked() as conn:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return 0 if row is None else int(row[0])

    # -- dead letters -----------------------------------------------------------------------

    def dead_letter(self, up_to_seq: int, error: str, now: datetime) -> int:
        """Move every pending line with ``seq <= up_to_seq`` to ``dead_letters``, in one
        transaction, with the server's ``error``; returns how many moved."""
        failed_at = self._to_epoch_ms(now)
        with self._locked() as conn, transaction(conn):
            conn.execute(
                "INSERT OR REPLACE INTO dead_letters (seq, line, error, failed_at) "
                "SELECT seq, line, ?, ? FROM outbox WHERE seq <= ?",
                (error, failed_at, up_to_seq),
            )
            moved: int = conn.execute("DELETE FROM outbox WHERE seq <= ?", (up_to_seq,)).rowcount
        return moved

    def dead_letter_count(self) -> int:
        with self._locked() as conn:
            n: int = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        return n

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The ``limit`` oldest dead letters, oldest first."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        with self._locked() as conn:
            rows = conn.execute(
                "SELECT seq, line, error, failed_at FROM dead_letters ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            DeadLetter(int(seq), str(line), str(error), from_epoch_ms(ms))
            for seq, line, error, ms in rows
        ]

    def reclaim(self) -> None:
        """Give the pages of delivered lines back to the file system and truncate the WAL."""
        with self._locked() as conn:
            reclaim_space(conn)
