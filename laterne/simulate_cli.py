"""`laterne simulate`: the site's policy and four baselines over the same simulated plant.

Rule: part of the composition root, registered on the one ``laterne`` app by :func:`register`.
Argument handling and printing only: the runs are :func:`laterne.simulations.runner.run`, the
figures :mod:`laterne.simulations.kpis`, the five lighting scenarios
:mod:`laterne.simulations.scenarios`.
A bad site file is refused as ``laterne validate`` refuses it (exit 2); a bad argument is one
line on stderr and exit 2, never a traceback. Progress shows on a terminal only once the runs
have taken more than a second.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import numpy as np
import typer

from laterne.models.layout import SiteLayout
from laterne.models.site import SiteConfig
from laterne.simulations.kpis import Kpis, Savings, kpis, savings
from laterne.simulations.readout import ReadoutError
from laterne.simulations.runner import SimulationError, params_for_step
from laterne.simulations.scenarios import SCENARIOS, iter_scenarios

from .cli_exit import fail, load_site_or_exit

__all__ = ["register", "simulate"]

#: a site with more segments than this lists them only in --json
MAX_LISTED = 20
#: show progress once the runs have taken this long [s of real time]
PROGRESS_AFTER_S = 1.0


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to ``app``."""
    app.command("simulate")(simulate)


def _start(text: str | None, tz: ZoneInfo) -> datetime:
    """Local midnight today, or the ISO date/time given (naive: the site's local time)."""
    if text is None:
        return datetime.combine(datetime.now(tz).date(), datetime.min.time(), tzinfo=tz)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        try:
            t = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            fail(f"--start: not an ISO 8601 date or time: {text!r}")
    return t if t.tzinfo is not None else t.replace(tzinfo=tz)


class _Progress:
    """A progress bar on stderr, shown only on a terminal and only after a second."""

    def __init__(self, total_steps: int) -> None:
        self._total = total_steps
        self._done_before = 0
        self._t0 = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None
        self._enabled = sys.stderr.isatty()

    def next_run(self, steps: int) -> None:
        self._done_before += steps

    def __call__(self, done: int, _total: int) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            if time.perf_counter() - self._t0 < PROGRESS_AFTER_S:
                return
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(transient=True, console=Console(stderr=True))
            self._bar.start()
            self._task = self._bar.add_task("simulating", total=self._total)
        self._bar.update(self._task, completed=self._done_before + done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _table(rows: list[tuple[str, list[str]]], header: list[str]) -> list[str]:
    width = max(len(label) for label, _ in [("", header), *rows])
    cols = [max(len(h), *(len(r[i]) for _, r in rows if r)) for i, h in enumerate(header)]
    out = ["  ".join([" " * width, *(h.rjust(c) for h, c in zip(header, cols, strict=True))])]
    for label, values in rows:
        cells = [v.rjust(c) for v, c in zip(values, cols, strict=True)] if values else []
        out.append("  ".join([label.ljust(width), *cells]).rstrip())
    return out


def _report(
    site: SiteConfig,
    start: datetime,
    end: datetime,
    step_s: float,
    seed: int,
    notes: list[str],
    figures: list[Kpis],
    saved: list[Savings],
) -> str:
    tz = ZoneInfo(site.site.timezone)
    first = figures[0]
    head = (
        f"{site.site.name}: {first.hours / 24:g} days from "
        f"{start.astimezone(tz):%Y-%m-%d %H:%M %Z} to {end.astimezone(tz):%Y-%m-%d %H:%M %Z}, "
        f"{step_s:g}-s steps, seed {seed}"
    )
    price, co2 = site.tariff.energy_price_eur_per_kwh, site.tariff.co2_kg_per_kwh
    rows: list[tuple[str, list[str]]] = []

    def num(values: list[float], fmt: str = ",.1f") -> list[str]:
        return [format(v, fmt) for v in values]

    listed = len(first.segment_ids) <= MAX_LISTED
    rows.append(("lighting [kWh]", num([k.lighting_kwh for k in figures])))
    if listed:
        for i, sid in enumerate(first.segment_ids):
            rows.append((f"  {sid}", num([float(k.segment_energy_kwh[i]) for k in figures])))
    else:
        rows.append((f"  ({len(first.segment_ids)} segments: see --json)", []))
    rows.append(("heating [kWh]", num([k.heating_kwh for k in figures])))
    if len(first.building_ids) <= MAX_LISTED:
        for i, bid in enumerate(first.building_ids):
            rows.append((f"  {bid}", num([float(k.building_heating_kwh[i]) for k in figures])))
    rows.append(("energy [kWh]", num([k.energy_kwh for k in figures])))
    rows.append((f"cost [EUR] at {price:g} EUR/kWh", num([k.cost_eur for k in figures], ",.2f")))
    rows.append((f"CO2 [kg] at {co2:g} kg/kWh", num([k.co2_kg for k in figures])))
    rows.append(("lit [segment-h]", num([k.segment_lit_h.sum() for k in figures], ",.0f")))
    rows.append(
        ("  below fail-safe (dimmed)", num([k.segment_dimmed_h.sum() for k in figures], ",.0f"))
    )
    rows.append(
        ("  at fail-safe (no data)", num([k.segment_failsafe_h.sum() for k in figures], ",.1f"))
    )
    rows.append(
        (
            "  below the class the traffic needed [steps]",
            num([k.segment_violation_intervals.sum() for k in figures], ",.0f"),
        )
    )
    rows.append(
        ("occupied and >1 K too cold [zone-h]", num([k.zone_underheated_h.sum() for k in figures]))
    )
    lines = [head, *notes, "", *_table(rows, [k.policy_name for k in figures]), ""]
    for s in saved:
        lines.append(
            f"{s.policy_name} saves against {s.baseline_name}: "
            f"lighting {s.lighting_kwh:,.1f} kWh ({_pct(s.lighting_pct)}), "
            f"heating {s.heating_kwh:,.1f} kWh ({_pct(s.heating_pct)}), "
            f"energy {s.energy_kwh:,.1f} kWh ({_pct(s.energy_pct)}), "
            f"{s.cost_eur:,.2f} EUR, {s.co2_kg:,.1f} kg CO2"
        )
    return "\n".join(lines)


def _whole(x: float) -> float | int:
    """``x``, as an int where it is whole (365, not 365.0)."""
    return int(x) if float(x).is_integer() else x


def _figures(k: Kpis, i: int | None = None) -> dict[str, Any]:
    """One scenario's lighting figures, of the whole site or of segment ``i``."""
    kwh = k.lighting_kwh if i is None else float(k.segment_energy_kwh[i])
    lit = k.segment_lit_intervals if i is None else k.segment_lit_intervals[i]
    bad = k.segment_violation_intervals if i is None else k.segment_violation_intervals[i]
    return {
        "energy_kwh": kwh,
        "cost_eur": kwh * k.price_eur_per_kwh,
        "co2_kg": kwh * k.co2_kg_per_kwh,
        "violation_intervals": int(np.sum(bad)),
        "lit_intervals": int(np.sum(lit)),
    }


def _lighting(figures: list[Kpis]) -> dict[str, Any]:
    """The ``lighting`` section of --json: per scenario, and per segment and scenario."""
    named = list(zip(SCENARIOS, figures, strict=True))
    return {
        "scenarios": {name: _figures(k) for name, k in named},
        "segments": {
            sid: {name: _figures(k, i) for name, k in named}
            for i, sid in enumerate(figures[0].segment_ids)
        },
    }


def _scenario_table(figures: list[Kpis]) -> None:
    """The lighting scenarios as a rich table on stdout."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    full = figures[SCENARIOS.index("full_power")].lighting_kwh
    table = Table(title="Lighting scenarios")
    table.add_column("scenario")
    for head in (
        "energy [kWh]",
        "vs full_power",
        "cost [EUR]",
        "CO2 [kg]",
        "violation intervals",
        "lit intervals",
    ):
        table.add_column(escape(head), justify="right")
    for name, k in zip(SCENARIOS, figures, strict=True):
        f = _figures(k)
        table.add_row(
            name,
            f"{f['energy_kwh']:,.1f}",
            _pct(100.0 * (f["energy_kwh"] - full) / full if full else float("nan")),
            f"{f['cost_eur']:,.2f}",
            f"{f['co2_kg']:,.1f}",
            f"{f['violation_intervals']:,}",
            f"{f['lit_intervals']:,}",
        )
    Console(width=100).print(table)


def _pct(p: float) -> str:
    return "n/a" if p != p else f"{p:.1f} %"  # NaN: the baseline used nothing


def simulate(
    file: Annotated[Path, typer.Argument(help="site configuration (YAML)")],
    days: Annotated[float, typer.Option(min=0.0, help="simulated days")] = 7.0,
    start: Annotated[
        str | None,
        typer.Option(help="first day, ISO 8601 date or time (default: today 00:00 local)"),
    ] = None,
    step_min: Annotated[
        float | None, typer.Option(help="minutes per decision step (default 15)")
    ] = None,
    step_s: Annotated[
        float | None, typer.Option(help="seconds per decision step (instead of --step-min)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the simulated traffic")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Simulate the site's policy against four baselines; print the lighting scenarios.

    Scenarios: adaptive (the site's policy), full_power, half_night (50 % 22:00-06:00),
    best_static (the lowest 15-min nightly timetable that never under-lights this traffic),
    oracle (perfect foresight).

    The runs share the plant, its weather and its traffic (the same seed).
    Energies are the plant's; cost and CO2 the site's tariff.
    """
    site = load_site_or_exit(file)
    tz = ZoneInfo(site.site.timezone)
    begin = _start(start, tz).astimezone(UTC)
    if not days > 0:
        fail("--days must be more than 0")
    end = begin + timedelta(days=days)
    if step_s is not None and step_min is not None:
        fail("give --step-min or --step-s, not both")
    if step_s is not None:
        if not step_s > 0:
            fail("--step-s must be more than 0")
    elif step_min is not None:
        if not step_min > 0:
            fail("--step-min must be more than 0")
        step_s = step_min * 60.0
    else:
        step_s = 900.0

    layout = SiteLayout.from_config(site)
    params = params_for_step(site.policy, step_s)
    notes = [
        f"policy.{name} {before:g} -> {after:g} for {step_s:g}-s steps"
        for name, before, after in [
            ("stale_after_s", site.policy.stale_after_s, params.stale_after_s),
            ("max_dim_step_pct", site.policy.max_dim_step_pct, params.max_dim_step_pct),
        ]
        if before != after
    ]
    n_steps = int((end - begin).total_seconds() // step_s)
    progress = _Progress(n_steps * len(SCENARIOS))
    results = []
    try:
        for _name, result in iter_scenarios(
            site, layout, params, start=begin, end=end, step_s=step_s, seed=seed, progress=progress
        ):
            results.append(result)
            progress.next_run(result.n_steps)
    except (SimulationError, ReadoutError) as exc:
        fail(f"cannot simulate {file}: {exc}")
    finally:
        progress.close()
    figures = [kpis(r) for r in results]
    saved = [savings(figures[0], base) for base in figures[1:]]
    actual_end = results[0].end
    actual_end_days = (actual_end - begin).total_seconds() / 86400.0
    if as_json:
        doc = {
            "site": site.site.name,
            "start": begin.isoformat(),
            "end": actual_end.isoformat(),
            "step_s": step_s,
            "seed": seed,
            "tariff": site.tariff.model_dump(),
            "params": params.model_dump(),
            "runs": {k.policy_name: k.as_dict() for k in figures},
            "savings": {s.baseline_name: s.as_dict() for s in saved},
            "days": _whole(actual_end_days),
            "step_min": _whole(step_s / 60.0),
            "lighting": _lighting(figures),
        }
        typer.echo(json.dumps(doc, indent=2, allow_nan=False))
    else:
        typer.echo(_report(site, begin, actual_end, step_s, seed, notes, figures, saved))
        _scenario_table(figures)
