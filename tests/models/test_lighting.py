"""EN 13201-2 classes and the luminaire model: the standard's values, levels that deliver a
class on the 0.1 % grid, the class a level delivers, LED power, the DALI curve."""

from __future__ import annotations

import numpy as np
import pytest

from laterne.models.lighting import (
    CLASSES,
    OFF,
    UnknownLightingClass,
    clo_power_share,
    dali_level_to_light_pct,
    delivered_class,
    dim_pct_for_class,
    light_pct_to_dali_level,
    lighting_class,
    luminaire_power_w,
)


@pytest.mark.parametrize(
    ("family", "names", "values"),
    [
        ("M", ["M1", "M2", "M3", "M4", "M5", "M6"], [2.0, 1.5, 1.0, 0.75, 0.5, 0.3]),
        ("C", ["C0", "C1", "C2", "C3", "C4", "C5"], [50, 30, 20, 15, 10, 7.5]),
        ("P", ["P1", "P2", "P3", "P4", "P5", "P6"], [15, 10, 7.5, 5, 3, 2]),
    ],
)
def test_required_values_are_the_standards(
    family: str, names: list[str], values: list[float]
) -> None:
    assert [CLASSES[n].required for n in names] == values
    assert {CLASSES[n].family for n in names} == {family}
    assert len([c for c in CLASSES.values() if c.family == family]) == 6


def test_unknown_class_names_what_exists() -> None:
    with pytest.raises(UnknownLightingClass, match=r"unknown lighting class 'M7'.*P6"):
        lighting_class("M7")
    assert lighting_class(OFF).required == 0


@pytest.mark.parametrize(
    ("required", "design", "dim_pct"),
    [
        ("M5", "M1", 25.0),  # 0.5 / 2.0
        ("M4", "M1", 37.5),
        ("M5", "M2", 33.4),  # 33.33… rounded up: never less light than the class
        ("M3", "M2", 66.7),
        ("M2", "M2", 100.0),
        ("P4", "P2", 50.0),
        ("C3", "C1", 50.0),
        ("M1", "M3", 200.0),  # the design cannot deliver it
        (OFF, "M3", 0.0),
    ],
)
def test_dim_for_class_rounds_up_to_the_grid(required: str, design: str, dim_pct: float) -> None:
    got = dim_pct_for_class(lighting_class(required), lighting_class(design))
    assert got == pytest.approx(dim_pct, abs=1e-9)
    # the level delivers the class, and one grid step less would not (except exact levels)
    assert (
        delivered_class(got, lighting_class(design)).required >= lighting_class(required).required
    )


def test_families_do_not_mix() -> None:
    with pytest.raises(ValueError, match="different families"):
        dim_pct_for_class(lighting_class("P3"), lighting_class("M2"))


@pytest.mark.parametrize(
    ("light_pct", "design", "delivered"),
    [
        (100, "M2", "M2"),
        (99.9, "M2", "M3"),
        (50, "M1", "M3"),
        (25, "M1", "M5"),
        (14, "M1", OFF),
        (33.4, "M2", "M5"),
        (33.3, "M2", "M6"),
        (0, "P1", OFF),
    ],
)
def test_delivered_class(light_pct: float, design: str, delivered: str) -> None:
    assert delivered_class(light_pct, lighting_class(design)).name == delivered


@pytest.mark.parametrize(
    ("fraction", "rated_w", "standby_w", "clo", "expected_w"),
    [
        (1.0, 60, 3, 1.0, 60),
        (0.5, 60, 3, 1.0, 3 + 57 * 0.5),
        (1e-6, 60, 3, 1.0, 3 + 57e-6),  # the lowest lit level still draws the standby
        (0.0, 60, 3, 1.0, 0),  # switched off at the mains
        (1.5, 60, 0, 1.0, 60),  # clipped to the rating
        (-0.2, 60, 3, 1.0, 0),
        (1.0, 60, 3, 0.85, 3 + 57 * 0.85),  # a new CLO driver
    ],
)
def test_led_power_has_a_standby_draw(
    fraction: float, rated_w: float, standby_w: float, clo: float, expected_w: float
) -> None:
    assert float(luminaire_power_w(fraction, rated_w, standby_w, clo)) == pytest.approx(expected_w)


def test_led_power_is_vectorised() -> None:
    p = luminaire_power_w(np.array([0.0, 0.5, 1.0]), np.array([60, 90, 35]), np.array([3, 0, 1]))
    np.testing.assert_allclose(p, [0, 45, 35])


def test_clo_share_rises_from_the_start_share_to_one_over_the_life() -> None:
    share = clo_power_share(np.array([-5.0, 0.0, 50_000, 100_000, 300_000]), 0.8, 100_000)
    np.testing.assert_allclose(share, [0.8, 0.8, 0.9, 1.0, 1.0])


def test_dali_curve_endpoints_and_inverse() -> None:
    assert dali_level_to_light_pct(0) == 0
    assert dali_level_to_light_pct(1) == pytest.approx(0.1)
    assert dali_level_to_light_pct(254) == pytest.approx(100)
    assert dali_level_to_light_pct(170) == pytest.approx(10 ** (169 * 3 / 253 - 1))  # ~10 %
    for level in range(1, 255):
        assert light_pct_to_dali_level(dali_level_to_light_pct(level)) == level
    # the level found gives at least the light asked for, and the one below gives less
    for pct in (0.5, 3.0, 25.0, 33.4, 50.0, 99.0):
        level = light_pct_to_dali_level(pct)
        assert dali_level_to_light_pct(level) >= pct - 1e-9 > dali_level_to_light_pct(level - 1)
    with pytest.raises(ValueError):
        dali_level_to_light_pct(255)
