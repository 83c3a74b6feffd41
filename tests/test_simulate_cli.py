"""`laterne simulate`: the table, the JSON, and one-line refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from laterne.cli import app

from .conftest import DEMO

runner = CliRunner()
TWO_DAYS = ["--days", "2", "--start", "2026-01-12"]


def test_the_table_names_every_segment_and_the_savings() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "laterne", "simulate", str(DEMO), *TWO_DAYS],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith(
        "Demo district (Hagen-Mitte, simulated): 2 days from 2026-01-12 00:00 CET"
    )
    header = next(line for line in text.splitlines() if "Laterne" in line and "FullPower" in line)
    assert header.split() == ["Laterne", "FullPower", "FixedSchedule", "BestStatic", "Oracle"]
    for name in ("bahnhofstr", "elberfelder", "lindenweg", "school", "cost [EUR] at 0.32"):
        assert name in text
    assert "policy.stale_after_s 60 -> 1800 for 900-s steps" in text
    saving = next(
        line for line in text.splitlines() if line.startswith("Laterne saves against FullPower")
    )
    pct = float(saving.split("lighting ")[1].split("(")[1].split(" %")[0])
    assert 10 < pct < 80
    scenario_rows = [line.split("│")[1].strip() for line in text.splitlines() if "│" in line]
    assert scenario_rows == ["adaptive", "full_power", "half_night", "best_static", "oracle"]
    assert out.stderr == ""  # no progress bar off a terminal


def test_json_is_consistent() -> None:
    result = runner.invoke(app, ["simulate", str(DEMO), *TWO_DAYS, "--step-s", "600", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["start"] == "2026-01-11T23:00:00+00:00" and doc["end"] == "2026-01-13T23:00:00+00:00"
    assert doc["step_s"] == 600 and doc["params"]["stale_after_s"] == 1200
    runs = doc["runs"]
    assert list(runs) == ["Laterne", "FullPower", "FixedSchedule", "BestStatic", "Oracle"]
    assert all(r["hours"] == 48 for r in runs.values())
    for base in ("FullPower", "FixedSchedule", "BestStatic", "Oracle"):
        s = doc["savings"][base]
        assert s["energy_kwh"] == pytest.approx(
            runs[base]["energy_kwh"] - runs["Laterne"]["energy_kwh"]
        )
        assert s["cost_eur"] == pytest.approx(s["energy_kwh"] * 0.32)
    lindenweg = runs["FullPower"]["segments"]["lindenweg"]
    # full power by night: 24 luminaires × 35 W, every lit hour
    assert lindenweg["energy_kwh"] == pytest.approx(24 * 35 * lindenweg["lit_h"] / 1000)
    # the same seed, the same result
    again = runner.invoke(app, ["simulate", str(DEMO), *TWO_DAYS, "--step-s", "600", "--json"])
    assert again.stdout == result.stdout


SCENARIO_KEYS = ["energy_kwh", "cost_eur", "co2_kg", "violation_intervals", "lit_intervals"]


def test_json_lighting_scenarios_as_the_issue_names_them() -> None:
    result = runner.invoke(app, ["simulate", str(DEMO), *TWO_DAYS, "--step-min", "10", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["site"] == "Demo district (Hagen-Mitte, simulated)"
    assert doc["start"] == "2026-01-11T23:00:00+00:00"
    assert doc["days"] == 2 and doc["step_min"] == 10 and doc["step_s"] == 600
    assert list(doc["lighting"]) == ["scenarios", "segments"]
    scenarios = doc["lighting"]["scenarios"]
    names = ["adaptive", "full_power", "half_night", "best_static", "oracle"]
    assert list(scenarios) == names
    for name, run_name in zip(names, doc["runs"], strict=True):
        s = scenarios[name]
        assert list(s) == SCENARIO_KEYS
        assert s["energy_kwh"] == pytest.approx(doc["runs"][run_name]["lighting_kwh"])
        assert s["cost_eur"] == pytest.approx(s["energy_kwh"] * 0.32)
        assert s["co2_kg"] == pytest.approx(s["energy_kwh"] * doc["tariff"]["co2_kg_per_kwh"])
        assert s["lit_intervals"] == scenarios["full_power"]["lit_intervals"] > 0
    assert scenarios["oracle"]["violation_intervals"] == 0
    assert scenarios["best_static"]["violation_intervals"] == 0
    assert scenarios["best_static"]["energy_kwh"] >= scenarios["oracle"]["energy_kwh"]
    segments = doc["lighting"]["segments"]
    assert list(segments) == ["bahnhofstr", "elberfelder", "lindenweg"]
    for name in names:
        per = [segments[sid][name] for sid in segments]
        assert all(list(p) == SCENARIO_KEYS for p in per)
        assert sum(p["energy_kwh"] for p in per) == pytest.approx(scenarios[name]["energy_kwh"])
        assert sum(p["violation_intervals"] for p in per) == scenarios[name]["violation_intervals"]
    # --step-min 10 is --step-s 600
    again = runner.invoke(app, ["simulate", str(DEMO), *TWO_DAYS, "--step-s", "600", "--json"])
    assert json.loads(again.stdout) == doc


def test_a_broken_site_file_is_refused_like_validate_does(tmp_path: Path) -> None:
    text = DEMO.read_text(encoding="utf-8").replace("luminaires: 30", "luminaires: -30")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text, encoding="utf-8")
    line = text[: text.index("luminaires: -30")].count("\n") + 1
    result = runner.invoke(app, ["simulate", str(bad), *TWO_DAYS])
    assert result.exit_code == 2
    assert f"{bad}:{line}: segments.1.luminaires: Input should be greater than 0" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "next monday"], "--start: not an ISO 8601 date or time: 'next monday'"),
        (["--days", "0"], "--days must be more than 0"),
        (["--step-s", "0"], "--step-s must be more than 0"),
        (["--step-min", "-1"], "--step-min must be more than 0"),
        (["--step-min", "15", "--step-s", "900"], "give --step-min or --step-s, not both"),
        (["--step-s", "1e-7"], "cannot simulate"),
        (["--days", "0.001"], "no whole step of 900 s"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["simulate", str(DEMO), "--start", "2026-01-12", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
