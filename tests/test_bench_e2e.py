"""The end-to-end benchmark keeps working (a --quick smoke run; no timing assertions)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys


def test_e2e_quick_writes_results(tmp_path: pathlib.Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.e2e", "--quick", "--results-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert "activities/s" in out.stdout and "ratio replay / live" in out.stdout
    doc = json.loads((tmp_path / "e2e-memory-latest.json").read_text())
    assert doc["benchmark"] == "e2e-memory" and doc["parameters"]["quick"] is True
    names = [r["name"] for r in doc["results"]]
    assert any("replay/live ratio" in n for n in names)
    assert all(
        r["repetitions"] >= 1 and r["min"] <= r["median"] <= r["max"] for r in doc["results"]
    )
