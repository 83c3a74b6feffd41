"""controller/health.py: the device quality state machine as a transition table, ageing to stale,
and the rule that a quality change is reported once, not on every failed poll."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from laterne.controller.health import (
    age_device_state,
    age_reading,
    changed,
    initial_device_state,
    next_device_state,
)
from laterne.models.values import DeviceState, PointReading, Quality

G, S, F, OFF = Quality.GOOD, Quality.STALE, Quality.FAULTY, Quality.OFFLINE
T_SINCE = datetime(2026, 1, 5, 21, 0, tzinfo=UTC)  # when the device entered its quality
T_GOOD = datetime(2026, 1, 5, 21, 30, tzinfo=UTC)  # its last good poll
NOW = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)  # this poll
OLD_ERROR = "connection refused"
NEW_ERROR = "timeout after 2 s"


def prev_state(quality: Quality) -> DeviceState:
    return DeviceState("dev", quality, T_GOOD, OLD_ERROR, T_SINCE)


# Every (previous quality, poll outcome): the new quality, since, last_good_at, last_error, and
# whether it is a change (logged once). "kept" means the previous value, "now" this poll's time.
# The poll outcome is GOOD, FAULTY or OFFLINE; STALE comes only from ageing.
TABLE = [
    # prev, outcome, error given, -> quality, since, last_good_at, last_error, changed
    (G, G, "", G, "kept", "now", OLD_ERROR, False),
    (G, F, NEW_ERROR, F, "now", "kept", NEW_ERROR, True),
    (G, OFF, NEW_ERROR, OFF, "now", "kept", NEW_ERROR, True),
    (S, G, "", G, "now", "now", OLD_ERROR, True),
    (S, F, NEW_ERROR, F, "now", "kept", NEW_ERROR, True),
    (S, OFF, NEW_ERROR, OFF, "now", "kept", NEW_ERROR, True),
    (F, G, "", G, "now", "now", OLD_ERROR, True),
    (F, F, NEW_ERROR, F, "kept", "kept", NEW_ERROR, False),
    (F, OFF, NEW_ERROR, OFF, "now", "kept", NEW_ERROR, True),
    (OFF, G, "", G, "now", "now", OLD_ERROR, True),
    (OFF, F, NEW_ERROR, F, "now", "kept", NEW_ERROR, True),
    (OFF, OFF, NEW_ERROR, OFF, "kept", "kept", NEW_ERROR, False),
    # a failure without a message keeps the last one
    (G, F, "", F, "now", "kept", OLD_ERROR, True),
    (OFF, OFF, "", OFF, "kept", "kept", OLD_ERROR, False),
]


@pytest.mark.parametrize(
    ("prev", "outcome", "error", "quality", "since", "last_good", "last_error", "is_change"),
    TABLE,
    ids=[
        f"{r[0].value}-{r[1].value}{'-no-msg' if not r[2] and r[1] is not G else ''}" for r in TABLE
    ],
)
def test_transition_table(
    prev: Quality,
    outcome: Quality,
    error: str,
    quality: Quality,
    since: str,
    last_good: str,
    last_error: str,
    is_change: bool,
) -> None:
    before = prev_state(prev)
    after = next_device_state(before, outcome, error, NOW)
    assert after.device_id == "dev"
    assert after.quality is quality
    assert after.since == {"kept": T_SINCE, "now": NOW}[since]
    assert after.last_good_at == {"kept": T_GOOD, "now": NOW}[last_good]
    assert after.last_error == last_error
    assert changed(before, after) is is_change


def test_the_table_covers_every_previous_quality_and_poll_outcome() -> None:
    pairs = {(r[0], r[1]) for r in TABLE}
    assert pairs == {(p, o) for p in Quality for o in (G, F, OFF)}


def test_a_device_starts_offline_never_good_and_without_an_error() -> None:
    st = initial_device_state("dev", NOW)
    assert st == DeviceState("dev", OFF, None, "", NOW)


def test_the_first_good_poll_is_a_change_with_its_time() -> None:
    start = initial_device_state("dev", NOW)
    later = NOW + timedelta(seconds=10)
    st = next_device_state(start, G, "", later)
    assert (st.quality, st.since, st.last_good_at, st.last_error) == (G, later, later, "")
    assert changed(start, st)


def test_a_device_that_never_answers_has_no_last_good_poll() -> None:
    st = initial_device_state("dev", NOW)
    for k in range(1, 4):
        st = next_device_state(st, OFF, NEW_ERROR, NOW + timedelta(seconds=10 * k))
    assert st.last_good_at is None
    assert st.since == NOW  # offline since the start, not since the last failed poll


def test_an_outage_and_its_recovery_are_two_changes_however_many_polls_fail() -> None:
    outcomes = [G, G, OFF, OFF, OFF, OFF, OFF, G, G, F, F, G]
    st = initial_device_state("dev", NOW)
    changes = []
    for k, q in enumerate(outcomes):
        new = next_device_state(st, q, "" if q is G else f"failure {k}", NOW + timedelta(seconds=k))
        if changed(st, new):
            changes.append((k, new.quality))
        st = new
    assert changes == [(0, G), (2, OFF), (7, G), (9, F), (11, G)]
    assert st.last_error == "failure 10"  # kept after recovery, for the crew
    assert st.last_good_at == NOW + timedelta(seconds=11)
    assert st.since == NOW + timedelta(seconds=11)


# ------------------------------------------------------------------------------- ageing

LIMIT_S = 30.0


def good_state(last_good_age_s: float) -> DeviceState:
    return DeviceState("dev", G, NOW - timedelta(seconds=last_good_age_s), OLD_ERROR, T_SINCE)


def test_a_good_device_at_its_limit_is_still_good() -> None:
    st = good_state(LIMIT_S)
    assert age_device_state(st, NOW, LIMIT_S) == st


def test_a_good_device_past_its_limit_is_stale_since_now() -> None:
    st = good_state(LIMIT_S + 1e-6)
    aged = age_device_state(st, NOW, LIMIT_S)
    assert aged.quality is S
    assert aged.since == NOW
    assert aged.last_good_at == st.last_good_at  # the last good poll is still what it was
    assert aged.last_error == OLD_ERROR
    assert changed(st, aged)
    assert age_device_state(aged, NOW + timedelta(seconds=5), LIMIT_S) == aged  # once


@pytest.mark.parametrize("quality", [S, F, OFF])
def test_ageing_leaves_a_device_that_is_not_good_alone(quality: Quality) -> None:
    st = DeviceState("dev", quality, NOW - timedelta(hours=1), OLD_ERROR, T_SINCE)
    assert age_device_state(st, NOW, LIMIT_S) == st


def test_a_good_device_without_a_good_poll_is_not_aged() -> None:
    st = DeviceState("dev", G, None, "", T_SINCE)
    assert age_device_state(st, NOW, LIMIT_S) == st


def test_a_stale_device_that_answers_is_good_again() -> None:
    aged = age_device_state(good_state(LIMIT_S * 2), NOW, LIMIT_S)
    later = NOW + timedelta(seconds=1)
    back = next_device_state(aged, G, "", later)
    assert (back.quality, back.since, back.last_good_at) == (G, later, later)
    assert changed(aged, back)


def reading(age_s: float, quality: Quality = G, value: float = 21.5) -> PointReading:
    return PointReading("dev", "temp", value, quality, NOW - timedelta(seconds=age_s))


def test_a_reading_at_its_limit_stays_good() -> None:
    r = reading(LIMIT_S)
    assert age_reading(r, NOW, LIMIT_S) == r


def test_a_reading_past_its_limit_is_stale_and_keeps_its_value_and_time() -> None:
    r = reading(LIMIT_S + 1e-6)
    aged = age_reading(r, NOW, LIMIT_S)
    assert aged.quality is S
    assert aged.value == 21.5 and aged.ts == r.ts
    assert aged.error == "no update for 30 s"


@pytest.mark.parametrize("quality", [S, F, OFF])
def test_ageing_leaves_a_reading_that_is_not_good_alone(quality: Quality) -> None:
    r = PointReading("dev", "temp", float("nan"), quality, NOW - timedelta(hours=1), "why")
    assert age_reading(r, NOW, LIMIT_S) is r
