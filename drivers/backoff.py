"""Reconnect backoff: exponential, jittered, capped, on a monotonic clock.

Rule: after a connection failure a driver does not touch the network again until
:meth:`Backoff.ready` says so; in between it fails at once with ``DeviceOffline``. Delays grow
``initial_s * factor**(n-1)`` up to ``cap_s`` and are jittered downwards by up to ``jitter`` (a
fraction), so that many devices lost at the same moment (a gateway reboot, a switch) do not all
come back on the same tick (Home Assistant #82231). Time comes from an injected ``monotonic``
callable, never from the wall clock, so tests drive it without sleeping.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Exponential backoff state for one connection.

    Parameters
    ----------
    initial_s : delay after the first failure [s]
    cap_s : largest delay [s]
    factor : growth per consecutive failure [unitless]
    jitter : each delay is drawn uniformly from ``[d * (1 - jitter), d]`` [fraction, 0..1]
    monotonic : clock [s]; defaults to :func:`time.monotonic` (the event loop's clock)
    rng : random source for the jitter (seed it in tests)
    """

    def __init__(
        self,
        *,
        initial_s: float = 0.5,
        cap_s: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if initial_s < 0 or cap_s < initial_s:
            raise ValueError(f"need 0 <= initial_s <= cap_s, got {initial_s}, {cap_s}")
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must lie in [0, 1], got {jitter}")
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.factor = factor
        self.jitter = jitter
        self._monotonic = monotonic
        self._rng = rng if rng is not None else random.Random()
        self._failures = 0
        self._retry_at_s = float("-inf")

    @property
    def monotonic(self) -> Callable[[], float]:
        """The clock this backoff runs on [s]."""
        return self._monotonic

    @property
    def failures(self) -> int:
        """Consecutive failures since the last success."""
        return self._failures

    def remaining_s(self) -> float:
        """Seconds until the next attempt is allowed; 0 when it is allowed now."""
        return max(0.0, self._retry_at_s - self._monotonic())

    def ready(self) -> bool:
        """True when the next attempt may touch the network."""
        return self._monotonic() >= self._retry_at_s

    def failure(self) -> float:
        """Record a failed attempt; returns the chosen delay before the next one [s]."""
        self._failures += 1
        exponent = min(self._failures - 1, 64)  # 2**64 * anything is past any cap
        nominal_s = min(self.cap_s, self.initial_s * self.factor**exponent)
        delay_s = nominal_s * (1.0 - self.jitter * self._rng.random())
        self._retry_at_s = self._monotonic() + delay_s
        return delay_s

    def success(self) -> None:
        """Record a successful exchange: the next failure starts from ``initial_s`` again."""
        self._failures = 0
        self._retry_at_s = float("-inf")
