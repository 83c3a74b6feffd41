"""Key figures of a simulated run: energy, cost, CO₂, service, and savings against a baseline.

Rule: pure numpy over a :class:`~laterne.simulations.runner.SimulationResult`'s arrays (sums
and counts along the step axis; no Python loop over steps, segments or zones). Energies come
from the plant (lighting at the level each controller held, heating from the zones' model);
cost and CO₂ are energy × the site's ``tariff`` (one price and one emission factor for
electricity and heat, as the tariff defines them). Every figure carries its unit in its name.

Service figures, so that a saving is not bought unseen:

* ``segment_lit_h`` — hours each segment was lit (commanded above 0 %);
* ``segment_dimmed_h`` — hours lit *below* its fail-safe level (what dimming by traffic buys);
* ``segment_failsafe_h`` — hours at the fail-safe level because data were missing;
* ``zone_underheated_h`` — occupied hours with the zone more than
  :data:`COMFORT_TOLERANCE_K` below its occupied setpoint;
* ``segment_lit_intervals`` and ``segment_violation_intervals`` — steps lit, and dark steps lit
  below the lighting class the step's counted traffic needed (``controller.compliance``).

:func:`savings` compares two runs of the same site and span: absolute figures are
``baseline − policy`` (positive: the policy uses less), percentages are of the baseline's and
NaN where the baseline used nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from laterne.controller.compliance import compliance
from laterne.models.site import Tariff
from laterne.models.values import FloatArray, IntArray, Reason

from .runner import SimulationResult

__all__ = ["COMFORT_TOLERANCE_K", "KpiMismatch", "Kpis", "Savings", "kpis", "savings"]

#: a zone is underheated when occupied and more than this below its occupied setpoint [K]
COMFORT_TOLERANCE_K: Final = 1.0
_S_PER_H: Final = 3600.0


class KpiMismatch(ValueError):
    """Two runs that cannot be compared: other segments, buildings or span."""


@dataclass(frozen=True, eq=False)
class Kpis:
    """The figures of one run; arrays indexed like the layout (segments ``S``, buildings
    ``N``, zones ``Z``)."""

    policy_name: str
    hours: float
    segment_ids: tuple[str, ...]
    building_ids: tuple[str, ...]
    zone_ids: tuple[str, ...]
    price_eur_per_kwh: float
    co2_kg_per_kwh: float
    segment_energy_kwh: FloatArray  # (S,)
    building_heating_kwh: FloatArray  # (N,)
    segment_lit_h: FloatArray  # (S,)
    segment_dimmed_h: FloatArray  # (S,)
    segment_failsafe_h: FloatArray  # (S,)
    segment_mean_lit_dim_pct: FloatArray  # (S,) NaN: never lit
    zone_underheated_h: FloatArray  # (Z,)
    segment_lit_intervals: IntArray  # (S,) steps with the lamps on
    segment_violation_intervals: IntArray  # (S,) dark steps lit below the class the traffic needed

    @property
    def lighting_kwh(self) -> float:
        return float(self.segment_energy_kwh.sum())

    @property
    def heating_kwh(self) -> float:
        return float(self.building_heating_kwh.sum())

    @property
    def energy_kwh(self) -> float:
        return self.lighting_kwh + self.heating_kwh

    @property
    def lighting_cost_eur(self) -> float:
        return self.lighting_kwh * self.price_eur_per_kwh

    @property
    def heating_cost_eur(self) -> float:
        return self.heating_kwh * self.price_eur_per_kwh

    @property
    def cost_eur(self) -> float:
        return self.energy_kwh * self.price_eur_per_kwh

    @property
    def co2_kg(self) -> float:
        return self.energy_kwh * self.co2_kg_per_kwh

    @property
    def segment_cost_eur(self) -> FloatArray:
        out: FloatArray = self.segment_energy_kwh * self.price_eur_per_kwh
        return out

    @property
    def building_cost_eur(self) -> FloatArray:
        out: FloatArray = self.building_heating_kwh * self.price_eur_per_kwh
        return out

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers and lists (for JSON), per segment and per building by id."""
        return {
            "policy": self.policy_name,
            "hours": self.hours,
            "lighting_kwh": self.lighting_kwh,
            "heating_kwh": self.heating_kwh,
            "energy_kwh": self.energy_kwh,
            "cost_eur": self.cost_eur,
            "co2_kg": self.co2_kg,
            "lit_intervals": int(self.segment_lit_intervals.sum()),
            "violation_intervals": int(self.segment_violation_intervals.sum()),
            "segments": {
                sid: {
                    "energy_kwh": float(self.segment_energy_kwh[i]),
                    "cost_eur": float(self.segment_cost_eur[i]),
                    "lit_h": float(self.segment_lit_h[i]),
                    "dimmed_h": float(self.segment_dimmed_h[i]),
                    "failsafe_h": float(self.segment_failsafe_h[i]),
                    "mean_lit_dim_pct": _num(self.segment_mean_lit_dim_pct[i]),
                    "lit_intervals": int(self.segment_lit_intervals[i]),
                    "violation_intervals": int(self.segment_violation_intervals[i]),
                }
                for i, sid in enumerate(self.segment_ids)
            },
            "buildings": {
                bid: {
                    "heating_kwh": float(self.building_heating_kwh[i]),
                    "cost_eur": float(self.building_cost_eur[i]),
                }
                for i, bid in enumerate(self.building_ids)
            },
            "zones": {
                zid: {"underheated_h": float(self.zone_underheated_h[i])}
                for i, zid in enumerate(self.zone_ids)
            },
        }


@dataclass(frozen=True, eq=False)
class Savings:
    """What ``policy_name`` saves against ``baseline_name`` over the same run."""

    policy_name: str
    baseline_name: str
    segment_ids: tuple[str, ...]
    building_ids: tuple[str, ...]
    segment_kwh: FloatArray  # (S,) baseline − policy
    building_kwh: FloatArray  # (N,)
    lighting_kwh: float
    heating_kwh: float
    energy_kwh: float
    lighting_pct: float  # of the baseline's; NaN where the baseline used nothing
    heating_pct: float
    energy_pct: float
    segment_pct: FloatArray  # (S,)
    cost_eur: float
    co2_kg: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy_name,
            "baseline": self.baseline_name,
            "lighting_kwh": self.lighting_kwh,
            "lighting_pct": _num(self.lighting_pct),
            "heating_kwh": self.heating_kwh,
            "heating_pct": _num(self.heating_pct),
            "energy_kwh": self.energy_kwh,
            "energy_pct": _num(self.energy_pct),
            "cost_eur": self.cost_eur,
            "co2_kg": self.co2_kg,
            "segments": {
                sid: {"kwh": float(self.segment_kwh[i]), "pct": _num(self.segment_pct[i])}
                for i, sid in enumerate(self.segment_ids)
            },
            "buildings": {
                bid: float(self.building_kwh[i]) for i, bid in enumerate(self.building_ids)
            },
        }


def _num(x: float | np.floating[Any]) -> float | None:
    """A float for JSON; None for NaN (JSON has no NaN)."""
    v = float(x)
    return None if np.isnan(v) else v


def _pct(saved: Any, base: Any) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(base != 0, 100.0 * saved / np.where(base != 0, base, 1.0), np.nan)


def kpis(result: SimulationResult[Any], tariff: Tariff | None = None) -> Kpis:
    """The figures of ``result``, priced with ``tariff`` (default the run's own)."""
    t = tariff if tariff is not None else result.tariff
    lay = result.layout
    step_h = result.step_s / _S_PER_H
    dim = result.dim_pct
    lit = dim > 0
    lit_steps = np.count_nonzero(lit, axis=0)
    dimmed = lit & (dim < lay.segments.failsafe_dim_pct)
    failsafe = result.dim_reason == Reason.FAILSAFE
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_lit = np.where(lit_steps > 0, np.where(lit, dim, 0.0).sum(axis=0) / lit_steps, np.nan)
    cold = result.zone_occupied & (result.zone_temp_c < lay.zones.occupied_c - COMFORT_TOLERANCE_K)
    dark = (result.sun_elevation_deg <= result.params.daylight_elevation_deg)[:, None]
    judged = compliance(lay, result.segment_flow_veh_h, dim, dark)
    return Kpis(
        policy_name=result.policy_name,
        hours=result.hours,
        segment_ids=lay.segments.ids,
        building_ids=lay.buildings.ids,
        zone_ids=lay.zones.ids,
        price_eur_per_kwh=t.energy_price_eur_per_kwh,
        co2_kg_per_kwh=t.co2_kg_per_kwh,
        segment_energy_kwh=result.segment_power_w.sum(axis=0) * step_h / 1e3,
        building_heating_kwh=result.building_heating_kwh.sum(axis=0),
        segment_lit_h=lit_steps * step_h,
        segment_dimmed_h=np.count_nonzero(dimmed, axis=0) * step_h,
        segment_failsafe_h=np.count_nonzero(failsafe, axis=0) * step_h,
        segment_mean_lit_dim_pct=mean_lit,
        zone_underheated_h=np.count_nonzero(cold, axis=0) * step_h,
        segment_lit_intervals=lit_steps.astype(np.int64),
        segment_violation_intervals=np.count_nonzero(judged.violation, axis=0).astype(np.int64),
    )


def savings(policy: Kpis, baseline: Kpis) -> Savings:
    """``baseline − policy``, absolute and in % of the baseline.

    Raises
    ------
    KpiMismatch
        the two runs are of other segments, buildings or lengths.
    """
    if policy.segment_ids != baseline.segment_ids or policy.building_ids != baseline.building_ids:
        raise KpiMismatch("the runs are of different sites")
    if policy.hours != baseline.hours:
        raise KpiMismatch(f"the runs last {policy.hours:g} h and {baseline.hours:g} h")
    seg = baseline.segment_energy_kwh - policy.segment_energy_kwh
    bld = baseline.building_heating_kwh - policy.building_heating_kwh
    lighting = baseline.lighting_kwh - policy.lighting_kwh
    heating = baseline.heating_kwh - policy.heating_kwh
    energy = baseline.energy_kwh - policy.energy_kwh
    return Savings(
        policy_name=policy.policy_name,
        baseline_name=baseline.policy_name,
        segment_ids=policy.segment_ids,
        building_ids=policy.building_ids,
        segment_kwh=seg,
        building_kwh=bld,
        lighting_kwh=lighting,
        heating_kwh=heating,
        energy_kwh=energy,
        lighting_pct=float(_pct(lighting, baseline.lighting_kwh)),
        heating_pct=float(_pct(heating, baseline.heating_kwh)),
        energy_pct=float(_pct(energy, baseline.energy_kwh)),
        segment_pct=np.asarray(_pct(seg, baseline.segment_energy_kwh), dtype=float),
        cost_eur=baseline.cost_eur - policy.cost_eur,
        co2_kg=baseline.co2_kg - policy.co2_kg,
    )
