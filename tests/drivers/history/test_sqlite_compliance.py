"""The compliance record in the SQLite history: stored per segment and interval, read newest
first, filtered, counted, and kept across a reopen (a restart of the controller)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from laterne.drivers.history.sqlite_store import SqliteHistory
from laterne.models.snapshot import ComplianceIntervalView

T0 = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
Q = timedelta(minutes=15)


def interval(
    segment: str, k: int, violation: bool = False, lit: bool = True
) -> ComplianceIntervalView:
    return ComplianceIntervalView(
        segment_id=segment,
        start=T0 + k * Q,
        end=T0 + (k + 1) * Q,
        flow_veh_h=500.0 if lit else None,
        lit=lit,
        required_class="M3" if lit else "",
        delivered_class="M4" if violation else "M3",
        min_dim_pct=40.0 if violation else 75.0,
        violation=violation,
    )


def test_intervals_are_stored_read_newest_first_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with SqliteHistory(path) as store:
        store.record_compliance([interval("a", 0), interval("b", 0, lit=False)])
        store.record_compliance([interval("a", 1, violation=True), interval("b", 1)])
        assert store.compliance_counts() == {"a": (2, 1), "b": (1, 0)}
    with SqliteHistory(path) as store:  # reopened: nothing lost
        got = store.compliance_intervals()
        assert [(r.segment_id, r.start) for r in got] == [
            ("a", T0 + Q), ("b", T0 + Q), ("a", T0), ("b", T0)
        ]
        assert got[0] == interval("a", 1, violation=True)
        assert got[-1].flow_veh_h is None and not got[-1].lit
        assert [r.start for r in store.compliance_intervals(segment="b")] == [T0 + Q, T0]
        assert len(store.compliance_intervals(since=T0 + Q)) == 2  # ending after 23:15
        assert len(store.compliance_intervals(limit=1)) == 1


def test_an_interval_stored_again_replaces_the_first(tmp_path: Path) -> None:
    with SqliteHistory(tmp_path / "h.sqlite") as store:
        store.record_compliance([interval("a", 0)])
        store.record_compliance([interval("a", 0, violation=True)])
        (only,) = store.compliance_intervals()
        assert only.violation and store.compliance_counts() == {"a": (1, 1)}


def test_a_bad_limit_is_refused(tmp_path: Path) -> None:
    with SqliteHistory(tmp_path / "h.sqlite") as store, pytest.raises(ValueError):
        store.compliance_intervals(limit=0)
