"""controller/observe.py: what the policy may act on. usable() at and past the staleness limit,
NaN and infinities, every quality; the observation's values and flags per channel, zone and
segment, per-device limits, and the sun's elevation filled in."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from laterne.controller.observe import ReadingKey, build_observation, usable
from laterne.controller.sun import sun_elevation_deg
from laterne.models.layout import SiteLayout
from laterne.models.site import PointRef
from laterne.models.values import PointReading, Quality

NOW = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)
LIMIT_S = 30.0


def reading(
    value: float = 1.0, quality: Quality = Quality.GOOD, age_s: float = 0.0, ts: datetime = NOW
) -> PointReading:
    return PointReading("dev", "p", value, quality, ts - timedelta(seconds=age_s))


# ------------------------------------------------------------------------------ usable()


@pytest.mark.parametrize(
    ("r", "ok"),
    [
        (None, False),  # never read
        (reading(), True),
        (reading(age_s=LIMIT_S), True),  # at the limit: still fresh
        (reading(age_s=LIMIT_S + 1e-6), False),  # a microsecond past it: stale
        (reading(age_s=-5.0), True),  # stamped a little ahead of ``now`` (clock skew)
        (reading(value=math.nan), False),
        (reading(value=math.inf), False),
        (reading(value=-math.inf), False),
        (reading(value=0.0), True),  # zero is a value, not a missing one
        (reading(quality=Quality.STALE), False),
        (reading(quality=Quality.FAULTY), False),
        (reading(quality=Quality.OFFLINE), False),
    ],
    ids=[
        "none", "good", "at-limit", "past-limit", "ahead", "nan", "inf", "-inf", "zero",
        "stale", "faulty", "offline",
    ],
)  # fmt: skip
def test_usable(r: PointReading | None, ok: bool) -> None:
    assert usable(r, NOW, LIMIT_S) == ok


def test_usable_answers_a_python_bool() -> None:
    for r in (None, reading(), reading(value=math.nan), reading(quality=Quality.STALE)):
        assert type(usable(r, NOW, LIMIT_S)) is bool


# ------------------------------------------------------------------------ the observation


def good(refs: Iterable[PointRef | None], value: float = 1.0) -> dict[ReadingKey, PointReading]:
    return {
        (r.device, r.point): PointReading(r.device, r.point, value, Quality.GOOD, NOW)
        for r in refs
        if r is not None
    }


def everything_good(layout: SiteLayout) -> dict[ReadingKey, PointReading]:
    latest: dict[ReadingKey, PointReading] = {}
    for k, ref in enumerate(layout.channels.refs):
        latest[(ref.device, ref.point)] = PointReading(
            ref.device, ref.point, 1000.0 + k, Quality.GOOD, NOW
        )
    for k, ref in enumerate(layout.zones.temperature):
        latest[(ref.device, ref.point)] = PointReading(
            ref.device, ref.point, 20.0 + k, Quality.GOOD, NOW
        )
    latest |= good(layout.segments.controller, 50.0)
    latest |= good(layout.buildings.outdoor, 3.5)
    return latest


def test_every_good_fresh_value_enters_with_its_flag(demo_layout: SiteLayout) -> None:
    obs = build_observation(demo_layout, everything_good(demo_layout), NOW, LIMIT_S)
    assert obs.ts == NOW
    assert obs.counter_veh.tolist() == [1000.0 + k for k in range(demo_layout.n_channels)]
    assert obs.counter_ok.all() and obs.counter_ok.shape == (demo_layout.n_channels,)
    assert obs.zone_temp_c.tolist() == [20.0 + k for k in range(demo_layout.n_zones)]
    assert obs.zone_ok.all()
    assert obs.segment_ok.all() and obs.segment_ok.shape == (demo_layout.n_segments,)
    assert obs.outdoor_temp_c.tolist() == [3.5]


def test_nothing_read_is_nan_with_every_flag_false(demo_layout: SiteLayout) -> None:
    obs = build_observation(demo_layout, {}, NOW, LIMIT_S)
    assert np.isnan(obs.counter_veh).all() and not obs.counter_ok.any()
    assert np.isnan(obs.zone_temp_c).all() and not obs.zone_ok.any()
    assert not obs.segment_ok.any()
    assert np.isnan(obs.outdoor_temp_c).all()


@pytest.mark.parametrize(
    ("quality", "value", "age_s"),
    [
        (Quality.GOOD, 5.0, LIMIT_S + 1e-6),
        (Quality.GOOD, math.nan, 0.0),
        (Quality.GOOD, math.inf, 0.0),
        (Quality.STALE, 5.0, 0.0),
        (Quality.FAULTY, math.nan, 0.0),
        (Quality.OFFLINE, math.nan, 0.0),
    ],
)
def test_one_unusable_reading_is_nan_and_not_ok_and_touches_nothing_else(
    demo_layout: SiteLayout, quality: Quality, value: float, age_s: float
) -> None:
    latest = everything_good(demo_layout)
    ch = demo_layout.channels.refs[1]
    zone = demo_layout.zones.temperature[0]
    ctl = demo_layout.segments.controller[2]
    for ref in (ch, zone, ctl):
        latest[(ref.device, ref.point)] = PointReading(
            ref.device, ref.point, value, quality, NOW - timedelta(seconds=age_s)
        )
    obs = build_observation(demo_layout, latest, NOW, LIMIT_S)
    assert math.isnan(obs.counter_veh[1]) and not obs.counter_ok[1]
    assert obs.counter_ok.sum() == demo_layout.n_channels - 1
    assert np.isfinite(np.delete(obs.counter_veh, 1)).all()
    assert math.isnan(obs.zone_temp_c[0]) and obs.zone_ok.tolist() == [False, True]
    assert obs.segment_ok.tolist() == [True, True, False]


def test_the_limit_is_per_device(demo_layout: SiteLayout) -> None:
    """Readings 45 s old: usable for a device allowed 60 s, not for one allowed 30 s."""
    latest = {
        k: PointReading(r.device_id, r.point, r.value, r.quality, NOW - timedelta(seconds=45))
        for k, r in everything_good(demo_layout).items()
    }
    devices = {ref.device for ref in demo_layout.channels.refs}
    devices |= {ref.device for ref in demo_layout.segments.controller}
    devices |= {ref.device for ref in demo_layout.zones.temperature}
    slow = demo_layout.channels.refs[0].device
    limits = {d: (60.0 if d == slow else 30.0) for d in devices}
    obs = build_observation(demo_layout, latest, NOW, limits)
    from_slow = [ref.device == slow for ref in demo_layout.channels.refs]
    assert obs.counter_ok.tolist() == from_slow
    assert not obs.zone_ok.any() and not obs.segment_ok.any()


def test_a_single_limit_applies_to_every_device_at_the_limit(demo_layout: SiteLayout) -> None:
    latest = {
        k: PointReading(r.device_id, r.point, r.value, r.quality, NOW - timedelta(seconds=LIMIT_S))
        for k, r in everything_good(demo_layout).items()
    }
    assert build_observation(demo_layout, latest, NOW, LIMIT_S).counter_ok.all()
    later = NOW + timedelta(microseconds=1)
    assert not build_observation(demo_layout, latest, later, LIMIT_S).counter_ok.any()


# --------------------------------------------------------------------------------- the sun


def test_the_sun_is_filled_in_for_the_site_and_the_instant(demo_layout: SiteLayout) -> None:
    noon = datetime(2026, 6, 21, 11, 30, tzinfo=UTC)  # about solar noon at Hagen (7.5° E)
    night = datetime(2026, 12, 21, 23, 30, tzinfo=UTC)
    at_noon = build_observation(demo_layout, {}, noon, LIMIT_S).sun_elevation_deg
    at_night = build_observation(demo_layout, {}, night, LIMIT_S).sun_elevation_deg
    assert at_noon == sun_elevation_deg(demo_layout, noon)
    assert at_night == sun_elevation_deg(demo_layout, night)
    # 90° − 51.36° + 23.44° ≈ 62.1° at the summer solstice; far below the horizon at midnight
    assert at_noon == pytest.approx(62.1, abs=0.5)
    assert at_night < -50
