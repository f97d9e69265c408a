"""The CAS and codec-chain benchmark runs quick and writes the JSON it promises (no timings)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

CAS_BACKENDS = ("memory", "file fsync", "file none")
CHAINS = (
    "plain",
    "zstd",
    "aes-gcm",
    "zstd + aes-gcm",
    "zstd + aes + data keys",
    "offload memory",
    "offload file fsync",
    "zstd + aes + offload file",
)
BOUNDARIES = ("cas None", "cas MemoryCAS", "zstd (below compress_above)", "aes-gcm")


def test_cas_quick(tmp_path: pathlib.Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.cas", "--quick", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    for title in ("CAS throughput", "Codec chain", "Small payload"):
        assert title in out.stdout
    assert "goal <= 2 us" in out.stdout
    doc = json.loads((tmp_path / "cas-latest.json").read_text())
    assert len(list(tmp_path.glob("cas-2*.json"))) == 1
    assert doc["benchmark"] == "cas"
    assert {"timestamp", "machine", "versions", "parameters", "results"} <= doc.keys()
    assert {"python", "cpu", "cpu_count", "platform"} <= doc["machine"].keys()
    params = doc["parameters"]
    assert params["quick"] is True and params["repeat"] >= 5
    assert list(params["sizes"]) == ["1 KB", "64 KB"]
    rows = {r["name"]: r for r in doc["results"]}
    for r in doc["results"]:
        assert {"name", "unit", "median", "min", "max", "repetitions", "samples"} <= r.keys()
        assert r["repetitions"] == len(r["samples"]) >= 5
        assert r["min"] <= r["median"] <= r["max"]
        if not r["name"].startswith("small: added"):  # a difference: noise may make it < 0
            assert r["min"] > 0
    for size in params["sizes"]:
        for backend in CAS_BACKENDS:
            for what in ("put", "get", "dedup put"):
                assert rows[f"cas {backend}: {what} {size}"]["unit"] == "MB/s"
        for chain in CHAINS:
            for what in ("seal", "open", "seal+open"):
                row = rows[f"codec {chain}: {what} {size}"]
                assert row["unit"] == "MB/s"
                assert row["plain_bytes"] > 0 and row["stored_bytes"] > 0
                assert isinstance(row["offloaded"], bool)
    # what the chains do to a 64 KB payload: compressed, encrypted, offloaded
    assert rows["codec zstd: seal 64 KB"]["ratio"] < 0.5
    assert rows["codec aes-gcm: seal 64 KB"]["ratio"] > 1
    assert rows["codec offload memory: seal 64 KB"]["offloaded"] is True
    assert rows["codec offload memory: seal 1 KB"]["offloaded"] is False
    assert rows["codec plain: seal 64 KB"]["ratio"] == 1
    assert rows["small: JsonCodec encode + decode"]["unit"] == "us/payload"
    for label in BOUNDARIES:
        assert rows[f"small: + seal + open, {label}"]["unit"] == "us/payload"
        added = rows[f"small: added, {label}"]
        if "aes" in label:  # the goal is for payloads that nothing encrypts
            assert "goal_us" not in added
        else:
            assert added["goal_us"] == 2.0 and isinstance(added["met"], bool)
        assert rows[f"events: seal_events + open_events, {label}"]["unit"] == "us/event"
