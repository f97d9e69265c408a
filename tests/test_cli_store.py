"""``tpp store copy|verify|rebuild-index`` and ``tpp stats`` through the CLI runner."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from engine import Client, VirtualClock, Worker
from engine.cli._stats import compute, percentile
from stores import MemoryStore, Store
from stores.file import FileStore
from stores.sqlite import SQLiteStore

from .clikit import APP, as_json, fill, ok, tpp
from .test_store_copy import ACTIVITIES, WORKFLOWS, populate, retrying, snapshot


@pytest.fixture
def files(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "files"
    with FileStore(path, durability="none") as store:
        populate(store)
    return path


def _snapshot(store: Store) -> dict[tuple[str, str], list[bytes]]:
    return snapshot(store)


# ---------------------------------------------------------------------- copy


def test_copy_file_to_sqlite_from_the_command_line(
    files: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    db = tmp_path / "copy.db"
    src, dst = f"file:{files}?durability=none", f"sqlite:{db}"
    result = ok(tpp("store", "copy", src, dst))
    assert "verified" in result.stdout and "0 already there" in result.stdout
    with FileStore(files, durability="none") as a, SQLiteStore(db) as b:
        want = _snapshot(a)
        assert _snapshot(b) == want
        for info in a.runs():
            assert b.describe(info.id).run_id == a.describe(info.id).run_id
    again = as_json(tpp("store", "copy", src, dst, "-o", "json"))
    assert again["skipped"] == again["runs"] == len(want) and again["copied"] == 0


def test_copy_refusals(files: pathlib.Path, tmp_path: pathlib.Path) -> None:
    src = f"file:{files}"
    same = tpp("store", "copy", src, src)
    assert same.exit_code == 2 and "the same store" in same.stderr
    missing = tpp("store", "copy", f"file:{tmp_path / 'nothing'}", f"sqlite:{tmp_path / 'x.db'}")
    assert missing.exit_code == 1 and "no store at file:" in missing.stderr
    assert not (tmp_path / "x.db").exists()
    other = tmp_path / "other.db"
    with SQLiteStore(other) as store:
        Client(store).start("waiting", "x", id="still-waiting")
    conflict = tpp("store", "copy", src, f"sqlite:{other}")
    assert conflict.exit_code == 1
    assert "refusing to mix two histories" in conflict.stderr
    assert len(conflict.stderr.strip().splitlines()) == 1
    with SQLiteStore(other) as store:
        assert len(list(store.runs())) == 1


# ---------------------------------------------------------------------- verify


def test_store_verify_clean_and_with_replay(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "files"
    with FileStore(path, durability="none") as store:
        fill(store)
    url = f"file:{path}"
    out = ok(tpp("--store", url, "store", "verify")).stdout.split()
    assert out[out.index("problems") + 1] == "0" and out[out.index("runs") + 1] == "6"
    data = as_json(tpp("--store", url, "store", "verify", "--app", APP, "-o", "json"))
    assert data["runs"] == 6 and data["problems"] == []
    assert data["replayed"] == 5 and data["not_in_app"] == 0  # every closed run replays
    changed = tmp_path / "changed.py"
    changed.write_text(
        "from engine import WaitSignal, workflow\n"
        "@workflow\n"
        "def greeter(name: str):\n"
        "    return (yield WaitSignal('hello'))\n"
        "workflows, activities = [greeter], []\n"
    )
    bad = tpp("--store", url, "store", "verify", "--app", str(changed))
    assert bad.exit_code == 1 and "DIVERGED" in bad.stdout
    assert "not deterministic" in bad.stdout


@pytest.mark.parametrize("line", ["first", "middle", "last"])
def test_store_verify_finds_a_flipped_byte(tmp_path: pathlib.Path, line: str) -> None:
    path = tmp_path / "files"
    with FileStore(path, durability="none") as store:
        fill(store)
    (log,) = [p for p in (path / "runs").rglob("*.log") if "greet-ann" in str(p)]
    data = bytearray(log.read_bytes())
    lines = data.split(b"\n")[:-1]
    k = {"first": 0, "middle": len(lines) // 2, "last": len(lines) - 1}[line]
    data[sum(len(x) + 1 for x in lines[:k]) + 40] ^= 0x01
    log.write_bytes(bytes(data))
    result = tpp("--store", f"file:{path}", "store", "verify")
    assert result.exit_code == 1, result.stdout
    assert "DAMAGED" in result.stdout and "greet-ann" in result.stdout
    assert "checksum" in result.stdout


def test_store_verify_sqlite_and_memory(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "db.sqlite"
    with SQLiteStore(db) as store:
        fill(store)
    data = as_json(tpp("store", "verify", f"sqlite:{db}", "-o", "json"))
    assert data["runs"] == 6 and data["events"] > 30 and data["problems"] == []
    assert as_json(tpp("store", "verify", "memory:", "-o", "json"))["runs"] == 0


# ---------------------------------------------------------------------- rebuild-index


def test_rebuild_index(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "files"
    with FileStore(path, durability="none") as store:
        fill(store)
    shutil.rmtree(path / "index")
    out = ok(tpp("--store", f"file:{path}", "store", "rebuild-index")).stdout
    assert out.startswith(f"rebuilt the index of file:{path}: 6 run(s)")
    assert (path / "index").is_dir()
    db = tmp_path / "db.sqlite"
    with SQLiteStore(db) as store:
        fill(store)
    nothing = as_json(tpp("--store", f"sqlite:{db}", "store", "rebuild-index", "-o", "json"))
    assert nothing["rebuilt"] is False
    assert "SQLiteStore keeps no separate index" in nothing["message"]


# ---------------------------------------------------------------------- stats


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 95) == 95.0


def test_stats_counts_and_latencies() -> None:
    store = MemoryStore()
    clock = VirtualClock()
    client = Client(store, clock=clock)
    worker = Worker(store, WORKFLOWS, ACTIVITIES, clock=clock)
    for n in range(4):
        client.start(retrying, f"r{n}", id=f"r{n}")  # fails twice (1 s, 2 s), then succeeds
    worker.run_until_idle(skip_time=True)
    client.start(retrying, "open", id="open")  # scheduled, not run yet
    stats = compute(store, now=clock.now())
    w = stats.workflows["retrying"]
    assert (w.completed, w.running, w.due, w.total) == (4, 1, 1, 5)
    a = stats.activities["twice_flaky"]
    assert (a.scheduled, a.completed, a.retried, a.failed) == (4, 4, 8, 0)
    assert a.p50 == a.p95 == 3.0  # scheduled -> completed: retries at +1 s and +2 s more
    worker.run_until_idle()
    assert compute(store).activities["twice_flaky"].in_flight == 1  # failed once, retry waits


def test_stats_command(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "db.sqlite"
    with SQLiteStore(db) as store:
        populate(store)
        clock = VirtualClock()
        Client(store, clock=clock).start(retrying, "late", id="late")
    url = f"sqlite:{db}"
    table = ok(tpp("--store", url, "stats")).stdout
    assert "Workflows" in table and "Activities" in table
    assert "twice_flaky" in table and "always_fails" in table
    data = as_json(tpp("--store", url, "stats", "-o", "json"))
    flaky = data["activities"]["twice_flaky"]
    assert flaky["completed"] == 1 and flaky["retried"] == 2 and flaky["in_flight"] == 0
    assert data["workflows"]["retrying"]["running"] == 1  # "late": no decision yet
    fails = data["activities"]["always_fails"]
    assert fails["failed"] == 1 and fails["retried"] == 2
    assert fails["p50"] == 7200.0  # the populating clock moved an hour at a time
    assert data["workflows"]["waiting"]["terminated"] == 1
    assert data["workflows"]["counter"]["continued_as_new"] == 2
    only = as_json(tpp("--store", url, "stats", "--type", "parent", "-o", "json"))
    assert list(only["workflows"]) == ["parent"] and only["activities"] == {}
    none = as_json(tpp("--store", url, "stats", "--since", "1h", "-o", "json"))
    assert none["runs"] == 0
