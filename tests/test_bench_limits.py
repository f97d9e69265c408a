"""The limits benchmark runs quick and writes the JSON it promises (no timings checked)."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent

CEILINGS = (
    "appends/s",
    "records/s",
    "commits/s",
    "rows/s",
    "events/s",
    "resumes/s",
)


def test_limits_quick(tmp_path: pathlib.Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.limits", "--quick", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert "The machine's ceilings" in out.stdout and "fractions of the ceiling" in out.stdout
    doc = json.loads((tmp_path / "limits-latest.json").read_text())
    assert doc["benchmark"] == "limits" and doc["parameters"]["quick"] is True
    assert {"timestamp", "machine", "versions", "parameters", "results"} <= doc.keys()
    rows = doc["results"]
    ceilings = [r for r in rows if r["name"].startswith("ceiling: ")]
    figures = [r for r in rows if r["name"].startswith("figure: ")]
    fractions = [r for r in rows if r["name"].startswith("fraction: ")]
    assert len(ceilings) + len(figures) + len(fractions) == len(rows)
    names = {r["name"] for r in ceilings}
    for level in ("FULL", "NORMAL", "OFF"):
        assert f"ceiling: SQLite WAL commits, {level}" in names
    assert "ceiling: bare generator resumes" in names
    assert {r["unit"] for r in ceilings} == set(CEILINGS)
    for r in [*ceilings, *figures]:
        assert r["repetitions"] == len(r["samples"]) >= 5
        assert 0 < r["min"] <= r["median"] <= r["max"]
    # every Temporal++ figure is measured here, in turn with its ceiling
    assert doc["parameters"]["interleaved"] is True
    assert all(r["source"].startswith("measured here") for r in figures)
    figure_names = {r["name"].removeprefix("figure: ") for r in figures}
    ceiling_names = {r["name"] for r in ceilings} | {f"ceiling: {n}" for n in figure_names}
    assert len(fractions) >= 10
    for f in fractions:
        assert f["unit"] == "fraction" and 0 < f["min"] <= f["median"] <= f["max"]
        assert f["figure"] in figure_names and f["ceiling"] in ceiling_names
        assert f["note"] and f["window"].endswith("UTC")
        assert f["repetitions"] == len(f["samples"]) >= 5
        assert f["figure_median"] > 0 and f["ceiling_median"] > 0
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "limits-fractions.png").stat().st_size > 0


def test_alternate_takes_turns() -> None:
    """Measures taken together alternate, repetition by repetition, after a warm-up each."""
    from benchmarks import _common as c

    order: list[str] = []

    def side(name: str, value: float) -> Any:
        return lambda: order.append(name) or value

    got = c.alternate([side("ceiling", 2.0), side("figure", 1.0)], 3)
    assert order == ["ceiling", "figure"] * 4  # the first round is the warm-up
    assert got == [[2.0] * 3, [1.0] * 3]


def test_a_fraction_is_of_samples_taken_in_turn() -> None:
    from benchmarks import limits

    figure = limits.Measure("figure: f", "events/s", lambda: 0.0, ceiling=False)
    ceiling = limits.Measure("ceiling: c", "resumes/s", lambda: 0.0, ceiling=True)
    spec = limits.Fraction("f", "c", 0.5, "a note")
    row = limits.fraction(figure, ceiling, [4.0, 8.0, 6.0], [2.0, 2.0, 4.0], spec, "then")
    assert row["median"] == 6.0 * 0.5 / 2.0  # the medians of each, from the same minutes
    assert row["samples"] == [1.0, 2.0, 0.75]  # per repetition
    assert (row["min"], row["max"], row["paired_median"]) == (0.75, 2.0, 1.0)
    assert row["figure_median"] == 6.0 and row["ceiling_median"] == 2.0
    assert row["ceiling"] == "ceiling: c" and row["window"] == "then"


def test_every_fraction_is_measured_in_turn_with_its_ceiling() -> None:
    from benchmarks import limits

    for series in limits.SERIES:
        assert len(series.keys) >= 2 and series.fractions
        for spec in series.fractions:
            assert spec.figure in series.keys and spec.over in series.keys
    measures = limits.measures(limits.QUICK_SIZES)
    keys = {k for s in limits.SERIES for k in s.keys}
    assert keys <= measures.keys() | {"file appends", "file long", "file wide"}
    assert all(measures[s.keys[0]].ceiling for s in limits.SERIES if s.keys[0] in measures)


def test_summary_reads_back_this_run(tmp_path: pathlib.Path, monkeypatch: Any) -> None:
    """`python -m benchmarks` ends with a summary of the results its own run wrote."""
    from benchmarks import _common as c
    from benchmarks.__main__ import summary

    rows = [c.summary("replay from scratch (decoded events)", "events/s", [2e6] * 5)]
    monkeypatch.setenv(c.RUN_ENV, "run-1")
    c.write_results("replay", {"quick": False, "incremental_lengths": []}, rows, tmp_path)
    text = summary(tmp_path, quick=False)
    assert "2,000,000 events/s" in text and ">= 1,000,000 events/s" in text and "met" in text
    assert "not run" in text  # the parts this run did not run
    monkeypatch.setenv(c.RUN_ENV, "run-2")  # another run's results are not this run's
    assert "2,000,000" not in summary(tmp_path, quick=False)
