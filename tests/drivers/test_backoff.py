"""Reconnect backoff on a clock the test drives."""

from __future__ import annotations

import random

import pytest

from laterne.drivers.backoff import Backoff

from .conftest import FakeClock


def test_ready_until_the_first_failure(clock: FakeClock) -> None:
    b = Backoff(monotonic=clock)
    assert b.ready()
    assert b.remaining_s() == 0.0
    assert b.failures == 0


def test_delays_grow_exponentially_up_to_the_cap(clock: FakeClock) -> None:
    b = Backoff(initial_s=0.5, cap_s=30.0, factor=2.0, jitter=0.0, monotonic=clock)
    delays = [b.failure() for _ in range(10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert b.failures == 10


def test_not_ready_during_the_delay_and_ready_after(clock: FakeClock) -> None:
    b = Backoff(initial_s=2.0, jitter=0.0, monotonic=clock)
    b.failure()
    assert not b.ready()
    assert b.remaining_s() == pytest.approx(2.0)
    clock.advance(1.999)
    assert not b.ready()
    clock.advance(0.001)
    assert b.ready()


def test_jitter_only_shortens_and_stays_within_its_fraction(clock: FakeClock) -> None:
    delays = []
    for seed in range(200):
        rng = random.Random(seed)
        b = Backoff(initial_s=10.0, cap_s=10.0, jitter=0.3, monotonic=clock, rng=rng)
        delays.append(b.failure())
    assert all(7.0 <= d <= 10.0 for d in delays)
    assert max(delays) - min(delays) > 2.0  # spread out, not one tick


def test_success_resets(clock: FakeClock) -> None:
    b = Backoff(initial_s=1.0, jitter=0.0, monotonic=clock)
    b.failure()
    b.failure()
    b.success()
    assert b.ready()
    assert b.failures == 0
    assert b.failure() == 1.0


def test_many_failures_do_not_overflow(clock: FakeClock) -> None:
    b = Backoff(initial_s=1.0, cap_s=5.0, jitter=0.0, monotonic=clock)
    for _ in range(5000):
        b.failure()
    assert b.failure() == 5.0


@pytest.mark.parametrize(
    "kw",
    [{"initial_s": -1}, {"initial_s": 5, "cap_s": 1}, {"factor": 0.5}, {"jitter": 1.5}],
)
def test_invalid_parameters(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kw)  # type: ignore[arg-type]
