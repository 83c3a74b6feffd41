"""The runtime's overrides on a real history file: persisted, refused, replaced, unreadable."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from laterne.controller.clock import ManualClock
from laterne.controller.overrides import OverrideOutOfBounds, UnknownOverrideTarget
from laterne.controller.runtime import Runtime
from laterne.drivers.history.sqlite_store import HistoryError, SqliteHistory
from laterne.models.site import SiteConfig
from laterne.models.values import Override, OverrideRequest, Reason

from .test_runtime import NIGHT, cycles, fakes

H = timedelta(hours=1)


def _override(segment: str, value: float, start_h: float = 0, end_h: float = 2) -> Override:
    return Override("segment", segment, value, NIGHT + start_h * H, NIGHT + end_h * H, "x", "ops")


async def test_set_overrides_persists_and_replaces(demo_site: SiteConfig, tmp_path: Path) -> None:
    clock = ManualClock(NIGHT)
    with SqliteHistory(tmp_path / "h.sqlite") as history:
        runtime = Runtime(demo_site, fakes(demo_site), history, clock)
        runtime.set_overrides([_override("bahnhofstr", 90.0), _override("lindenweg", 50.0, 1)])
        assert [o.id for o in runtime.overrides] == ["bahnhofstr", "lindenweg"]
        runtime.set_overrides([_override("elberfelder", 70.0)])
        assert [o.id for o in runtime.overrides] == ["elberfelder"]
        stored = history.overrides()
        assert [(r.target_id, r.cancelled_at is not None) for r in stored] == [
            ("bahnhofstr", True),
            ("elberfelder", False),
            ("lindenweg", True),
        ]
        with pytest.raises(UnknownOverrideTarget):
            runtime.set_overrides([_override("nowhere", 50.0)])
        with pytest.raises(OverrideOutOfBounds):
            runtime.set_overrides([_override("bahnhofstr", 5.0)])
        assert [o.id for o in runtime.overrides] == ["elberfelder"]  # nothing changed
        assert len(history.overrides()) == 3
        await cycles(runtime, clock, 1)
        cmds = runtime.commands
        assert cmds is not None
        assert list(cmds.dim_reason == Reason.OVERRIDE) == [False, True, False]
        await runtime.close()


async def test_a_stored_override_the_site_no_longer_accepts_is_skipped(
    demo_site: SiteConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(NIGHT)
    with SqliteHistory(tmp_path / "h.sqlite") as history:
        history.add_override(  # e.g. the segment was renamed in the site file since
            OverrideRequest("segment", "old-street", NIGHT, NIGHT + H, 80.0), NIGHT
        )
        kept = history.add_override(
            OverrideRequest("segment", "lindenweg", NIGHT, NIGHT + H, None, "P1"), NIGHT
        )
        caplog.set_level(logging.WARNING, logger="laterne.runtime")
        runtime = Runtime(demo_site, fakes(demo_site), history, clock)
        assert "stored override 1 not applied: unknown segment 'old-street'" in caplog.text
        assert [(o.id, o.value) for o in runtime.overrides] == [("lindenweg", 100.0)]
        await cycles(runtime, clock, 8)  # 80 s: reloaded twice
        assert caplog.text.count("stored override 1 not applied") == 1  # logged once
        runtime.cancel_override(kept.id)
        assert runtime.overrides == ()
        await runtime.close()


async def test_an_unreadable_history_keeps_the_last_set(
    demo_site: SiteConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    clock = ManualClock(NIGHT)
    with SqliteHistory(tmp_path / "h.sqlite") as history:
        runtime = Runtime(demo_site, fakes(demo_site), history, clock)
        runtime.set_overrides([_override("bahnhofstr", 90.0)])

        def locked(*_args: object, **_kwargs: object) -> list[object]:
            raise HistoryError("history h.sqlite: database is locked")

        monkeypatch.setattr(history, "overrides", locked)
        caplog.set_level(logging.INFO, logger="laterne.runtime")
        await cycles(runtime, clock, 8)
        assert [o.id for o in runtime.overrides] == ["bahnhofstr"]
        assert caplog.text.count("cannot read the overrides") == 1
        cmds = runtime.commands
        assert cmds is not None and cmds.dim_reason[0] == Reason.OVERRIDE
        monkeypatch.undo()
        await cycles(runtime, clock, 4)
        assert "overrides readable again" in caplog.text
        await runtime.close()
