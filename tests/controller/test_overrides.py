"""resolve_override on the demo site: targets, bounds, class -> level, window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from laterne.controller.overrides import (
    OverrideClassRefused,
    OverrideOutOfBounds,
    OverrideRefused,
    OverrideWindowRefused,
    UnknownOverrideTarget,
    resolve_override,
)
from laterne.controller.safety import UnknownOverrideTarget as SafetyUnknown
from laterne.models.layout import SiteLayout
from laterne.models.site import SiteConfig
from laterne.models.values import OverrideRequest

T0 = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)


def req(
    target_id: str = "bahnhofstr", value: float | None = None, cls: str | None = None,
    target: str = "segment", hours: float = 2,
) -> OverrideRequest:  # fmt: skip
    return OverrideRequest(target, target_id, T0, T0 + timedelta(hours=hours), value, cls)


@pytest.mark.parametrize(
    ("request_", "level"),
    [
        (req(value=80.0), 80.0),
        (req(value=0.0), 0.0),  # the controller takes 0 %: off is allowed
        (req(value=20.0), 20.0),  # min_dim_pct, inclusive
        (req(cls="M3"), 100 * 1.0 / 2.0),  # M3 of design M1
        (req(cls="M1"), 100.0),
        (req(cls="M6"), 20.0),  # 15 % needed, raised to min_dim_pct 20
        (req("lindenweg", cls="P6"), 13.4),  # 2 / 15 lx, rounded up to 0.1 %
        (req("school.gym", 20.5, target="zone"), 20.5),
    ],
)
def test_accepted_with_the_level_it_commands(
    demo_site: SiteConfig, demo_layout: SiteLayout, request_: OverrideRequest, level: float
) -> None:
    o = resolve_override(demo_site, demo_layout, request_)
    assert o.value == pytest.approx(level)
    assert (o.target, o.id, o.start, o.end) == (
        request_.target, request_.target_id, request_.start, request_.end,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("request_", "error", "match"),
    [
        (req("nowhere", 50.0), UnknownOverrideTarget, "unknown segment 'nowhere'"),
        (req("school.attic", 20.0, target="zone"), UnknownOverrideTarget, "unknown zone"),
        (req(value=50.0, target="fountain"), UnknownOverrideTarget, "unknown override target"),
        (
            req(value=150.0),
            OverrideOutOfBounds,
            r"150 % is outside the bounds \[20, 100\] % or 0 \(off\) of segment 'bahnhofstr'",
        ),
        (req(value=10.0), OverrideOutOfBounds, "outside"),
        (req("school.gym", 28.0, target="zone"), OverrideOutOfBounds, r"\[12, 22\] °C"),
        (req(cls="P3"), OverrideClassRefused, "not of the family of segment 'bahnhofstr'"),
        (req(cls="M9"), OverrideClassRefused, "unknown lighting class"),
        (req("school.gym", cls="M3", target="zone"), OverrideClassRefused, "not a zone"),
        (req(), OverrideRefused, "exactly one"),
        (req(value=50.0, hours=0), OverrideWindowRefused, "not after"),
        (req(value=50.0, hours=-1), OverrideWindowRefused, "not after"),
    ],
)
def test_refused_with_a_clear_message(
    demo_site: SiteConfig,
    demo_layout: SiteLayout,
    request_: OverrideRequest,
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        resolve_override(demo_site, demo_layout, request_)


def test_one_error_type_for_unknown_targets() -> None:
    assert SafetyUnknown is UnknownOverrideTarget
    assert issubclass(UnknownOverrideTarget, ValueError)


def test_without_design_class_a_class_is_its_band_level(demo_site: SiteConfig) -> None:
    segs = [
        s.model_copy(update={"design_class": None}) if s.id == "bahnhofstr" else s
        for s in demo_site.segments
    ]
    site = demo_site.model_copy(update={"segments": segs})
    layout = SiteLayout.from_config(site)
    assert resolve_override(site, layout, req(cls="M3")).value == 75.0  # the plan's M3 band
    with pytest.raises(OverrideClassRefused, match="no design_class and no band of class M1"):
        resolve_override(site, layout, req(cls="M1"))
