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
    # an empty results directory: every Temporal++ figure was measured here
    assert all(r["source"].startswith("measured here") for r in figures)
    figure_names = {r["name"].removeprefix("figure: ") for r in figures}
    ceiling_names = {r["name"] for r in ceilings} | {f"ceiling: {n}" for n in figure_names}
    assert len(fractions) >= 10
    for f in fractions:
        assert f["unit"] == "fraction" and 0 < f["min"] <= f["median"] <= f["max"]
        assert f["figure"] in figure_names and f["ceiling"] in ceiling_names
        assert f["note"]
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "limits-fractions.png").stat().st_size > 0


def test_limits_reads_figures_from_this_run(tmp_path: pathlib.Path) -> None:
    """After the replay part ran into the same directory, its figures are used, not re-measured."""
    from benchmarks import _common as c
    from benchmarks import limits

    replay_rows = [
        c.summary(name, "events/s", [1e6, 2e6, 3e6, 4e6, 5e6])
        for name in (
            "replay from scratch (decoded events)",
            "decode JSON + replay",
            "decode msgpack + replay",
        )
    ]
    c.write_results("replay", {"quick": True}, replay_rows, tmp_path)
    figures = limits.Figures(tmp_path, limits.QUICK_SIZES, 5, quick=True, fresh=False)
    got = figures.replay()
    assert [f.median for f in got] == [3e6] * 3
    assert all(f.source.startswith("replay results of") for f in got)
    # a full run's results do not stand in for a quick run's, nor with --fresh
    c.write_results("replay", {"quick": False}, replay_rows, tmp_path)
    assert figures._doc("replay") is None  # not this run's setting
    c.write_results("replay", {"quick": True}, replay_rows, tmp_path)
    fresh = limits.Figures(tmp_path, limits.QUICK_SIZES, 5, quick=True, fresh=True)
    assert fresh._doc("replay") is None


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
