"""The stores benchmark runs quick and writes the JSON it promises (no timings checked)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_stores_quick(tmp_path: pathlib.Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.stores", "--quick", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert "Group commit" in out.stdout and "read + replay" in out.stdout
    doc = json.loads((tmp_path / "stores-latest.json").read_text())
    assert doc["benchmark"] == "stores" and doc["parameters"]["quick"] is True
    labels = doc["parameters"]["backends"]
    assert {"memory", "sqlite fsync", "sqlite flush", "sqlite none"} <= set(labels)
    names = {r["name"] for r in doc["results"]}
    for label in labels:
        for what in ("append latency median", "append latency p95", "single appends"):
            assert f"{label}: {what}" in names
        for what in ("group commit", "read", "read + replay"):
            assert f"{label}: {what}" in names
    for r in doc["results"]:
        assert r["repetitions"] == len(r["samples"]) >= 5
        assert 0 < r["min"] <= r["median"] <= r["max"]
