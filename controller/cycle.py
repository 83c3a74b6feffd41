"""One control decision, pure: the code both shells — the live runtime and the simulator — run.

Rule: :func:`decide` is observation → policy → safety → post-condition, and nothing else. It
takes everything as arguments (the policy and its state, the observation, the overrides, what was
last *written* to the devices, ``now``) and returns the new state with the safe commands and
their reasons. It never does I/O, never reads a clock, never mutates its inputs; when it raises
(a policy bug, a safety violation) the caller's state is unchanged, because nothing was assigned.

A policy is anything that implements :class:`ControlPolicy`: the traffic-adaptive
:class:`~laterne.controller.policy.Policy`, or a baseline (full power, a fixed schedule) that
the simulator compares it with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from laterne.models.layout import SiteLayout
from laterne.models.site import PolicyParams
from laterne.models.values import Commands, Observation, Override

from .safety import SafetyViolation, apply_safety, within_bounds

__all__ = ["ControlPolicy", "Decision", "decide"]

S = TypeVar("S")


class ControlPolicy(Protocol[S]):
    """What a policy must offer: a starting state and a pure step."""

    def initial_state(self) -> S:
        """The state before the first observation."""
        ...

    def step(self, state: S, obs: Observation, now: datetime) -> tuple[S, Commands]:
        """The new state and the *wish* (unsafe: NaN where it cannot decide)."""
        ...


@dataclass(frozen=True)
class Decision(Generic[S]):
    """The outcome of one cycle: the policy's next state, the safe commands, and the wish the
    policy had before safety (for the history and for tests)."""

    state: S
    commands: Commands
    wish: Commands


def decide(
    policy: ControlPolicy[S],
    layout: SiteLayout,
    params: PolicyParams,
    state: S,
    obs: Observation,
    now: datetime,
    *,
    overrides: Sequence[Override] = (),
    last_written: Commands | None = None,
) -> Decision[S]:
    """One decision at ``now``. ``last_written`` is what the devices were last sent (NaN where
    nothing was), the base of the ramp limit.

    Raises
    ------
    SafetyViolation
        the safety filter's post-condition failed (a bug; nothing may be sent).
    UnknownOverrideTarget
        an override names a segment or zone the site does not have.
    """
    new_state, wish = policy.step(state, obs, now)
    safe = apply_safety(layout, params, wish, obs, last_written, now=now, overrides=overrides)
    if not within_bounds(layout, safe):  # the filter's post-condition, checked again
        raise SafetyViolation(f"commands outside bounds: {safe}")
    return Decision(new_state, safe, wish)
