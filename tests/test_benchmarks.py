"""The benchmarks run (in their quick form) and write the JSON they promise; no timings checked."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )


def check_replay_results(path: pathlib.Path) -> None:
    doc = json.loads(path.read_text())
    assert doc["benchmark"] == "replay"
    assert {"timestamp", "machine", "versions", "parameters", "results"} <= doc.keys()
    assert {"python", "cpu", "cpu_count", "platform"} <= doc["machine"].keys()
    assert {"temporalpp", "msgspec"} <= doc["versions"].keys()
    assert doc["parameters"]["quick"] is True
    assert doc["parameters"]["repeat"] >= 5
    names = [r["name"] for r in doc["results"]]
    for expected in (
        "replay from scratch (decoded events)",
        "decode JSON + replay",
        "decode msgpack + replay",
        "reference: bare generator resume, new command each",
        "reference: msgspec decode only, JSON",
    ):
        assert expected in names
    lengths = doc["parameters"]["incremental_lengths"]
    assert len([n for n in names if n.startswith("incremental")]) == len(lengths) >= 2
    for r in doc["results"]:
        assert {"name", "unit", "median", "min", "max", "repetitions", "samples"} <= r.keys()
        assert r["min"] <= r["median"] <= r["max"]
        assert r["repetitions"] == len(r["samples"]) >= 5
        assert r["unit"] in {"events/s", "us/event", "resumes/s"}


def test_replay_quick(tmp_path: pathlib.Path) -> None:
    out = run("benchmarks.replay", "--quick", "--results-dir", str(tmp_path))
    assert "replay from scratch" in out.stdout
    files = sorted(tmp_path.glob("replay-2*.json"))
    assert len(files) == 1
    check_replay_results(files[0])
    check_replay_results(tmp_path / "replay-latest.json")


def test_replay_against_a_revision(tmp_path: pathlib.Path) -> None:
    """--against REF replays with REF's interpreter, alternating with today's, and the ratio."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    out = run("benchmarks.replay", "--quick", "--against", "HEAD", "--results-dir", str(tmp_path))
    assert "interpreter of HEAD" in out.stdout
    doc = json.loads((tmp_path / "replay-latest.json").read_text())
    assert doc["parameters"]["against"] == "HEAD"
    rows = {r["name"]: r for r in doc["results"]}
    today = rows["replay from scratch, this checkout (alternating)"]
    before = rows["replay from scratch, interpreter of HEAD"]
    ratio = rows["this checkout / HEAD, per repetition"]
    assert today["unit"] == before["unit"] == "events/s" and ratio["unit"] == "ratio"
    assert today["repetitions"] == before["repetitions"] == ratio["repetitions"] >= 5
    pairs = zip(today["samples"], before["samples"], strict=True)
    assert ratio["samples"] == [a / b for a, b in pairs]


def test_runner_runs_selected_parts(tmp_path: pathlib.Path) -> None:
    # `python -m benchmarks --quick` runs every part; each part's own test runs it alone
    out = run("benchmarks", "--quick", "--results-dir", str(tmp_path), "replay")
    assert "== replay ==" in out.stdout
    check_replay_results(tmp_path / "replay-latest.json")


def test_runner_lists_available_parts() -> None:
    from benchmarks.__main__ import PARTS, available

    parts = available()
    assert "replay" in parts
    assert set(parts) <= set(PARTS)
    assert parts == [p for p in PARTS if p in parts]  # in registration order


def test_unknown_part_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "nonsense"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "nonsense" in proc.stderr
