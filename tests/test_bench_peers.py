"""The peers benchmark runs quick, with or without the peers installed (no timings checked)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
SIDES = (
    "Temporal++ SQLiteStore (fsync)",
    "Temporal++ FileStore (fsync)",
    "DBOS (SQLite defaults)",
    "DBOS (WAL)",
)
WORKLOADS = ("3x2 sequential", "3x2 concurrent", "1x10 long")


def run(
    results: pathlib.Path, env: dict[str, str] | None = None, expect: str = ""
) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.peers", "--quick", "--results-dir", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        env=env,
    )
    assert "Durable end to end" in out.stdout and "Temporal++ / peer" in out.stdout
    assert expect in out.stdout
    doc: dict[str, Any] = json.loads((results / "peers-latest.json").read_text())
    assert doc["benchmark"] == "peers" and doc["parameters"]["quick"] is True
    assert {"timestamp", "machine", "versions", "parameters", "results"} <= doc.keys()
    assert set(doc["parameters"]["durability"]) == {"tpp-sqlite", "tpp-file", "dbos", "dbos-wal"}
    rows = {r["name"]: r for r in doc["results"]}
    for side in SIDES:
        for workload in WORKLOADS:
            check(rows[f"{side}: {workload}"], "steps/s")
    for length in ("50", "200"):
        check(rows[f"replay {length} activities: Temporal++"], "events/s")
        check(rows[f"replay {length} activities: durabletask"], "events/s")
    ratios = [r for r in doc["results"] if r["name"].startswith("ratio")]
    assert len(ratios) == 4 * len(WORKLOADS) + 2 or all(
        r.get("status") == "unavailable" for r in ratios
    )
    for r in ratios:
        check(r, "ratio")
        assert "met" not in r  # no goal is judged on a smoke run's sizes
    return doc


def check(row: dict[str, Any], unit: str) -> None:
    assert row["unit"] == unit
    if row.get("status") == "unavailable":
        assert row["reason"]
        return
    assert row["repetitions"] == len(row["samples"]) >= 5
    assert 0 < row["min"] <= row["median"] <= row["max"]


def test_peers_quick(tmp_path: pathlib.Path) -> None:
    """Whatever is installed here: each peer's rows are figures, or unavailable with a reason."""
    doc = run(tmp_path)
    rows = {r["name"]: r for r in doc["results"]}
    for workload in WORKLOADS:  # Temporal++ itself is always measured
        assert "median" in rows[f"Temporal++ SQLiteStore (fsync): {workload}"]
        assert "median" in rows[f"Temporal++ FileStore (fsync): {workload}"]


def test_peers_unavailable(tmp_path: pathlib.Path) -> None:
    """Without the bench extra, peers are reported unavailable and plots skipped, and it runs."""
    shadow = tmp_path / "shadow"
    for package in ("dbos", "durabletask", "matplotlib"):  # the whole bench extra
        (shadow / package).mkdir(parents=True)
        (shadow / package / "__init__.py").write_text(f"raise ImportError('no {package} here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), str(ROOT)])}
    doc = run(tmp_path / "results", env, expect="plots skipped: matplotlib is not installed")
    assert not list((tmp_path / "results").glob("*.png"))
    rows = {r["name"]: r for r in doc["results"]}
    for side in ("DBOS (SQLite defaults)", "DBOS (WAL)"):
        for workload in WORKLOADS:
            row = rows[f"{side}: {workload}"]
            assert row["status"] == "unavailable" and "no dbos here" in row["reason"]
    assert rows["replay 50 activities: durabletask"]["status"] == "unavailable"
    assert "median" in rows["replay 50 activities: Temporal++"]
    assert all(
        r.get("status") == "unavailable" for r in doc["results"] if r["name"].startswith("ratio")
    )
