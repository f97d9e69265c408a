"""R2 power loss: every fsync-acknowledged event survives, at ``durability="fsync"``.

Each case forks a child that installs ``tests/reliability/faultfs.FaultOS`` as
the ``os`` of ``stores.file``, runs a scenario on a ``FileStore`` and records
every event an ``append``/``create`` acknowledged; the ``crash_at``-th
mutating file call (seeded) is the power loss.  The child writes what the disk
would hold afterwards (``FaultOS.survivors``, seeded) and exits without any
cleanup (its locks die with it).  The parent writes those contents back,
reopens the store as after a reboot (a new boot id) and checks that every
acknowledged event is there, at its index, and every run reads without error;
in the worker scenario a fresh worker then completes every workflow with the
crash-free result.

Scenarios: ``appends`` (one run, sequential appends of 1-4 signals),
``group`` (creates and group-committed appends across 6 runs), ``worker``
(``engine.Worker`` running 4 chains of 5 activities).  Default: 100 seeds per
scenario; ``soak``: ``TPP_SEEDS`` seeds (``pytest -m soak``).
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import traceback
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

import stores.file
from engine import Client, Worker
from engine.events import Event, WorkflowStarted, with_index
from stores import AppendResult, Store
from stores.file import FileStore
from tests import crashkit
from tests.reliability import faultfs
from tests.reliability._seeds import count, replaying, seeds
from tests.store_conformance import batch, signal, started

Acked = list[tuple[str, str, int, bytes]]  # workflow id, run id, index, event JSON


def _recording(store: Store, acked: Acked) -> None:
    """Make ``store`` note every event that its ``create``/``append`` acknowledge."""
    create, append = store.create, store.append

    def create_(started: WorkflowStarted, *a: Any, **kw: Any) -> Any:
        out = create(started, *a, **kw)
        ev = with_index(started, 0)
        acked.append((started.workflow_id, started.run_id, 0, msgspec.json.encode(ev)))
        return out

    def append_(batches: Any) -> list[AppendResult]:
        results = append(batches)
        for b, r in zip(batches, results, strict=True):
            if r.ok:
                for i, ev in enumerate(b.events):
                    enc = msgspec.json.encode(with_index(ev, r.index + i))
                    acked.append((b.workflow_id, b.run_id, r.index + i, enc))
        return results

    store.create = create_  # type: ignore[method-assign]
    store.append = append_  # type: ignore[method-assign]


def _appends(root: pathlib.Path, rng: random.Random, acked: Acked) -> None:
    with FileStore(root, durability="fsync") as store:
        _recording(store, acked)
        s = started("solo")
        store.create(s)
        for b in range(40):
            store.append([batch(s, *[signal(f"{b}.{i}") for i in range(rng.randint(1, 4))])])


def _group(root: pathlib.Path, rng: random.Random, acked: Acked) -> None:
    with FileStore(root, durability="fsync") as store:
        _recording(store, acked)
        runs: list[WorkflowStarted] = []
        for step in range(30):
            if len(runs) < 6 and rng.random() < 0.3:
                s = started(f"g{len(runs)}")
                store.create(s)
                runs.append(s)
            if runs:
                some = rng.sample(runs, rng.randint(1, len(runs)))
                store.append(
                    [batch(s, *[signal(f"{step}") for _ in range(rng.randint(1, 3))]) for s in some]
                )


def _worker(root: pathlib.Path, rng: random.Random, acked: Acked) -> None:
    with FileStore(root, durability="fsync") as store:
        _recording(store, acked)
        client = Client(store)
        for i in range(4):
            client.start(crashkit.crash_chain, i, 5, os.devnull, 0.0, id=f"crash-{i}")
        Worker(store, workflows=crashkit.WORKFLOWS, activities=crashkit.ACTIVITIES).run_until_idle()


SCENARIOS: dict[str, tuple[Callable[[pathlib.Path, random.Random, Acked], None], int]] = {
    # name: (scenario, a bound above its count of mutating calls)
    "appends": (_appends, 130),
    "group": (_group, 270),
    "worker": (_worker, 95),
}


def _child(root: pathlib.Path, scenario: str, seed: int, out: pathlib.Path) -> None:
    """In the forked child: run until the power loss, write the outcome, ``_exit``."""
    code = 1
    try:
        fn, bound = SCENARIOS[scenario]
        rng = random.Random(seed)
        fault = faultfs.FaultOS(root, rng, crash_at=rng.randint(1, bound))
        stores.file.os = fault  # type: ignore[attr-defined]
        acked: Acked = []
        try:
            fn(root, rng, acked)
            fault.calls = -fault.calls  # finished first: the power goes now (noted < 0)
        except faultfs.PowerLoss:
            pass
        report = {
            "acked": [[w, r, i, e.decode()] for w, r, i, e in acked],
            "survivors": {p: None if d is None else d.hex() for p, d in fault.survivors().items()},
            "calls": fault.calls,
        }
        out.write_text(json.dumps(report))
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def power_loss(tmp_path: pathlib.Path, scenario: str, seed: int, monkeypatch: Any) -> int:
    root = tmp_path / f"{scenario}-{seed}"
    FileStore(root, durability="fsync").close()  # the layout, durable before the faults
    out = tmp_path / f"{scenario}-{seed}.json"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        _child(root, scenario, seed, out)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child failed (see its stderr)"
    report = json.loads(out.read_text())
    faultfs.apply(
        {p: None if d is None else bytes.fromhex(d) for p, d in report["survivors"].items()}
    )
    monkeypatch.setattr(stores.file, "_boot_id", lambda: f"after-power-loss-{seed}")
    decoder = msgspec.json.Decoder(Event)
    with FileStore(root, durability="fsync") as store:
        histories: dict[tuple[str, str], list[Event]] = {}
        for info in store.runs():
            histories[(info.id, info.run_id)] = store.read(info.id, info.run_id)
        for wid, rid, index, enc in report["acked"]:
            history = histories.get((wid, rid))
            assert history is not None, f"acknowledged run {wid}/{rid} lost"
            assert len(history) > index, f"{wid}: acknowledged event {index} lost"
            assert history[index] == decoder.decode(enc), f"{wid}: event {index} differs"
        if scenario == "worker":
            Worker(
                store, workflows=crashkit.WORKFLOWS, activities=crashkit.ACTIVITIES
            ).run_until_idle()
            client = Client(store)
            want = crashkit.expected(4, 5)
            started_ids = {wid for wid, _, i, _ in report["acked"] if i == 0}
            for wid in started_ids:
                assert client.result(wid) == want[wid], wid
    return int(report["calls"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_power_loss_keeps_every_acknowledged_event(
    tmp_path: pathlib.Path, scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for seed in seeds(2000, 100):
        with replaying(seed, scenario):
            power_loss(tmp_path, scenario, seed, monkeypatch)


@pytest.mark.soak
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_power_loss_soak(
    tmp_path: pathlib.Path, scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for seed in seeds(100_000, count(10_000) // 3):
        with replaying(seed, scenario):
            power_loss(tmp_path, scenario, seed, monkeypatch)
