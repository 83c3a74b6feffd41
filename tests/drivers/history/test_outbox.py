"""Outbox on a real SQLite file: order, sequence numbers, acks, dead letters, restarts, threads."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from laterne.drivers.history.outbox import DeadLetter, Outbox, OutboxError

NOW = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "outbox.sqlite"


@pytest.fixture
def box(path: Path) -> Iterator[Outbox]:
    b = Outbox(path)
    yield b
    b.close()


def test_append_peek_ack_in_order(box: Outbox) -> None:
    assert box.append(["a 1", "b 2"]) == 2
    assert box.append(["c 3"]) == 3
    assert box.pending() == 3
    assert box.peek(2) == [(1, "a 1"), (2, "b 2")]
    assert box.peek(10) == [(1, "a 1"), (2, "b 2"), (3, "c 3")]
    assert box.pending() == 3  # peek removes nothing
    assert box.ack(2) == 2
    assert box.peek(10) == [(3, "c 3")]
    assert box.pending() == 1
    assert box.ack(2) == 0  # acking again is harmless
    assert box.ack(3) == 1
    assert box.pending() == 0
    assert box.peek(5) == []


def test_empty_append_and_bad_arguments(box: Outbox) -> None:
    assert box.append([]) == 0
    with pytest.raises(ValueError, match="one line"):
        box.append(["ok", "two\nlines"])
    assert box.pending() == 0  # nothing of the refused call was queued
    with pytest.raises(ValueError):
        box.peek(0)


def test_sequence_numbers_are_never_reused(path: Path) -> None:
    with Outbox(path) as box:
        box.append(["x"] * 5)
        box.ack(5)
        assert box.pending() == 0
        assert box.last_seq() == 5
    with Outbox(path) as again:
        assert again.append(["y"]) == 6
        assert again.peek(1) == [(6, "y")]


def test_pending_lines_survive_close_and_reopen(path: Path) -> None:
    with Outbox(path) as box:
        box.append([f"m v={i} {i}" for i in range(100)])
        box.ack(40)
    with Outbox(path) as again:
        assert again.pending() == 60
        assert again.peek(1) == [(41, "m v=40 40")]


def test_lines_survive_a_process_that_dies_without_closing(path: Path) -> None:
    """Another process appends and exits abruptly (os._exit: no close, no cleanup)."""
    code = (
        "import os, sys\n"
        "from laterne.drivers.history.outbox import Outbox\n"
        "box = Outbox(sys.argv[1])\n"
        "box.append([f'm v={i} {i}' for i in range(1000)])\n"
        "box.ack(10)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    with Outbox(path) as box:
        assert box.pending() == 990
        assert box.peek(2) == [(11, "m v=10 10"), (12, "m v=11 11")]


def test_dead_letters_keep_the_line_and_the_reason(box: Outbox) -> None:
    box.append(["good 1", "bad 2", "good 3"])
    box.ack(1)
    assert box.dead_letter(2, "HTTP 400: unable to parse", NOW) == 1
    assert box.peek(10) == [(3, "good 3")]
    assert box.pending() == 1
    assert box.dead_letter_count() == 1
    assert box.dead_letters() == [DeadLetter(2, "bad 2", "HTTP 400: unable to parse", NOW)]
    with pytest.raises(ValueError, match="naive"):
        box.dead_letter(3, "x", datetime(2026, 1, 1))
    assert box.pending() == 1


def test_wal_mode_and_incremental_vacuum(path: Path, box: Outbox) -> None:
    box.append(["m v=1 1" + " " * 1000] * 2000)
    box.ack(2000)
    box.reclaim()
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        assert other.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert path.stat().st_size < 100_000


def test_closed_and_foreign_files(path: Path, tmp_path: Path) -> None:
    box = Outbox(path)
    box.close()
    box.close()
    with pytest.raises(OutboxError, match="closed"):
        box.append(["x"])
    with sqlite3.connect(path) as other:
        other.execute("UPDATE schema_version SET version = 7")
    with pytest.raises(OutboxError, match="schema version 7"):
        Outbox(path)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(OutboxError):
        Outbox(junk)


def test_appends_from_many_threads_get_unique_ordered_sequences(box: Outbox) -> None:
    def writer(k: int) -> None:
        for i in range(50):
            box.append([f"t{k} v={i}i {i}", f"t{k} v={i}i {i}"])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = box.peek(10_000)
    assert [seq for seq, _ in rows] == list(range(1, 801))
    for k in range(8):  # each writer's lines are in its own order, in pairs (one call each)
        mine = [line for _, line in rows if line.startswith(f"t{k} ")]
        assert mine == [f"t{k} v={i}i {i}" for i in range(50) for _ in range(2)]
