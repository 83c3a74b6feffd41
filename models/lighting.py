"""EN 13201-2 lighting classes and the luminaire model, as data and pure functions.

Rule: pure (no I/O, no clock); every figure is the standard's maintained value or a stated
model. A class is a family letter (``M`` road luminance in cd/m², ``C`` conflict-area and ``P``
pedestrian-area illuminance in lx) and a number; a lower number asks for more light. ``unlit`` is
not an EN 13201 class: it is a band of a city's lighting plan that requires no light at all.

A segment's luminaires deliver their ``design_class`` at 100 % (the maintained value, the
maintenance factor included). Light output is taken as proportional to the dim level (LED
drivers dim linearly in light; a DALI gateway's logarithmic arc-power curve is
:func:`dali_level_to_light_pct`), so a class needs the light fraction ``required ÷ design`` and
the dim level of :func:`dim_pct_for_class` (rounded up to the controllers' 0.1 % grid: never
less light than the class). Power follows :func:`luminaire_power_w` (with
:func:`clo_power_share` for constant-light-output drivers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .values import FloatArray

__all__ = [
    "CLASSES",
    "DIM_GRID_PCT",
    "OFF",
    "LightingClass",
    "UnknownLightingClass",
    "clo_power_share",
    "dali_level_to_light_pct",
    "delivered_class",
    "dim_pct_for_class",
    "light_pct_to_dali_level",
    "lighting_class",
    "luminaire_power_w",
]

#: the band value of a lighting plan that requires no light (not an EN 13201 class)
OFF = "unlit"

#: the finest dim step segment controllers take [%]; a derived level is rounded up to it
DIM_GRID_PCT = 0.1


@dataclass(frozen=True, slots=True)
class LightingClass:
    """One EN 13201-2 class: its name, family, and required maintained value."""

    name: str
    family: str  # "M", "C", "P", or "" for unlit
    required: float  # cd/m² (M) or lx (C, P); 0 for unlit
    unit: str


def _table() -> dict[str, LightingClass]:
    values = {
        ("M", "cd/m²"): (2.0, 1.5, 1.0, 0.75, 0.5, 0.3),  # M1..M6, average luminance
        ("C", "lx"): (50.0, 30.0, 20.0, 15.0, 10.0, 7.5),  # C0..C5, average illuminance
        ("P", "lx"): (15.0, 10.0, 7.5, 5.0, 3.0, 2.0),  # P1..P6, average illuminance
    }
    out = {OFF: LightingClass(OFF, "", 0.0, "")}
    for (family, unit), required in values.items():
        first = 0 if family == "C" else 1
        for k, value in enumerate(required):
            name = f"{family}{first + k}"
            out[name] = LightingClass(name, family, value, unit)
    return out


#: every class by name, EN 13201-2:2015 tables 1 (M), 2 (C) and 3 (P)
CLASSES: dict[str, LightingClass] = _table()


class UnknownLightingClass(ValueError):
    """A name that is not an EN 13201-2 class (nor ``unlit``)."""


def lighting_class(name: str) -> LightingClass:
    """The class called ``name`` (``M1`` … ``M6``, ``C0`` … ``C5``, ``P1`` … ``P6``, ``unlit``)."""
    try:
        return CLASSES[name]
    except KeyError:
        known = ", ".join(n for n in CLASSES if n != OFF)
        raise UnknownLightingClass(
            f"unknown lighting class {name!r}: EN 13201-2 has {known} "
            "(or `unlit` where no light is needed)"
        ) from None


def dim_pct_for_class(required: LightingClass, design: LightingClass) -> float:
    """The lowest dim level on the 0.1 % grid whose light meets ``required``, for luminaires
    delivering ``design`` at 100 %; above 100 when the design cannot deliver it."""
    if required.required == 0:
        return 0.0
    if required.family != design.family:
        raise ValueError(f"{required.name} and {design.name} are of different families")
    pct = 100.0 * required.required / design.required
    steps = math.ceil(round(pct / DIM_GRID_PCT, 6))  # round first: 50.0000001 is 50.0
    return steps * DIM_GRID_PCT


def delivered_class(light_pct: float, design: LightingClass) -> LightingClass:
    """The best class of the design's family that ``light_pct`` of the design still meets;
    ``unlit`` below the family's lowest class."""
    value = design.required * light_pct / 100.0 * (1 + 1e-9)
    best = CLASSES[OFF]
    for c in CLASSES.values():
        if c.family == design.family and c.required <= value and c.required > best.required:
            best = c
    return best


def luminaire_power_w(
    light_fraction: ArrayLike,
    rated_w: ArrayLike,
    standby_w: ArrayLike,
    clo_power_share: ArrayLike = 1.0,
) -> FloatArray:
    """Electrical power of one LED luminaire (vectorised: any argument may be an array) [W].

    ``P = P_standby + (P_rated − P_standby) × light fraction × CLO share`` while lit, 0 when the
    fraction is 0 (the segment controller switches the mains off). ``light_fraction`` is the
    dim level over 100, clipped to [0, 1]; ``standby_w`` is the driver's own draw, also at the
    lowest dim level; ``clo_power_share`` is 1 without constant light output, else
    :func:`clo_power_share` (a new CLO luminaire reaches the maintained light on less power).
    The one model of luminaire power: the plant, the fault detection and the reports use it.
    """
    f = np.clip(np.asarray(light_fraction, dtype=float), 0.0, 1.0)
    rated = np.asarray(rated_w, dtype=float)
    standby = np.asarray(standby_w, dtype=float)
    lit = standby + (rated - standby) * f * np.asarray(clo_power_share, dtype=float)
    out: FloatArray = np.where(f > 0.0, lit, 0.0)
    return out


def clo_power_share(burning_h: ArrayLike, start_share: ArrayLike, life_h: ArrayLike) -> FloatArray:
    """Constant light output: the share of rated (non-standby) power a CLO driver draws for the
    maintained light after ``burning_h`` hours [unitless].

    A stated linear model: ``start_share`` when new (the lumen maintenance factor the design
    assumed), rising linearly to 1 at ``life_h`` and held there.
    """
    h = np.maximum(np.asarray(burning_h, dtype=float), 0.0)
    start = np.asarray(start_share, dtype=float)
    out: FloatArray = start + (1.0 - start) * np.minimum(h / np.asarray(life_h, dtype=float), 1.0)
    return out


def dali_level_to_light_pct(level: int) -> float:
    """IEC 62386-102 logarithmic dimming curve: arc-power level 1…254 → 0.1…100 % light; 0 off."""
    if not 0 <= level <= 254:
        raise ValueError(f"DALI arc-power level {level} is outside 0..254")
    if level == 0:
        return 0.0
    return float(10 ** ((level - 1) / (253 / 3) - 1))


def light_pct_to_dali_level(light_pct: float) -> int:
    """The lowest DALI arc-power level that gives at least ``light_pct`` (0 → off)."""
    if not 0 <= light_pct <= 100:
        raise ValueError(f"light {light_pct} % is outside 0..100")
    if light_pct == 0:
        return 0
    if light_pct <= 0.1:
        return 1
    level = math.ceil(round(1 + (253 / 3) * (math.log10(light_pct) + 1), 9))
    return min(level, 254)
