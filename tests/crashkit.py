"""Crash-kill kit: worker processes that are ``kill -9``ed at random moments, for any store.

Backend-agnostic: a store is named by a ``stores.open`` URL that a *subprocess*
can open again, ``sqlite:PATH`` or ``file:PATH``, optionally ending in
``?durability=LEVEL`` (``none`` when not given: ``open_store``).  ``run``
starts ``workflows`` runs of ``crash_chain`` (each ``steps`` sequential
``crash_step`` activities), spawns ``workers`` processes
that each run ``engine.Worker(...).run()`` on the store, SIGKILLs a random one
at seeded random moments and respawns it, until at least ``kills`` kills have
happened and every workflow is closed; then it stops the rest with SIGTERM and
``check`` proves the outcome:

* every workflow completed exactly once (one run, one ``WorkflowCompleted``)
  with the result a crash-free run computes (``expected``);
* every activity has exactly one ``ActivityScheduled`` and one
  ``ActivityCompleted`` (and no ``ActivityFailed``) in its history;
* every activity ran at least once: each attempt appends one line to a log
  file before it returns (a killed attempt's line stays, so reruns show too).

Optional, for R1 (``tests/reliability/test_r1_azure.py``): ``ledger=True`` runs
``ledger_chain`` instead, whose ``ledger_step`` appends ``index step attempt``
and ``fsync``s it; the driver then reads the open workflows' histories every
``watch_every`` seconds and notes, per activity, how long the ledger was when
its completion was first seen durable, and ``check`` proves that no attempt was
logged after that; ``replay=True`` also replays every history
(``assert_deterministic``).  ``azure://`` URLs are taken as they are (no
durability option); ``worker_poll`` is each worker's ``poll_interval``.

Used by ``tests/test_store_sqlite.py`` (and the FileStore tests)::

    report = crashkit.run("sqlite:" + str(tmp_path / "tpp.db"), tmp_path, seed=7)
    assert report.kills >= 50, report

The report carries the seed: pass it back as ``seed=`` to replay the same kill
schedule (the OS still decides what each kill interrupts).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, Final

import stores
from engine import (
    Client,
    ScheduleActivity,
    Status,
    Worker,
    activity,
    activity_context,
    workflow,
)
from engine.events import ActivityCompleted, ActivityFailed, ActivityScheduled, WorkflowCompleted
from stores import MemoryStore, Store

__all__ = [
    "ACTIVITIES",
    "WORKFLOWS",
    "Report",
    "check",
    "crash_chain",
    "crash_step",
    "expected",
    "ledger_chain",
    "ledger_step",
    "open_store",
    "run",
]

ROOT: Final = pathlib.Path(__file__).resolve().parent.parent


def open_store(url: str) -> Store:
    """``stores.open(url)``, at durability ``none`` unless the URL names one."""
    if url.startswith("memory:"):
        raise ValueError("crash-kill needs a store that worker processes share, not memory:")
    if url.startswith("azure:"):  # NB: no durability levels: every write is the service's
        return stores.open(url)
    return stores.open(url if "durability=" in url else f"{url}?durability=none")


# --------------------------------------------------------------------------- the workload


@activity
def crash_step(index: int, step: int, log: str, pause: float) -> int:
    """Note the attempt in ``log`` (one ``O_APPEND`` write), pause, return a step value."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{index} {step}\n".encode())
    finally:
        os.close(fd)
    time.sleep(pause)
    return index * 1000 + step


@workflow
def crash_chain(
    index: int, steps: int, log: str, pause: float
) -> Generator[Any, Any, dict[str, int]]:
    """``steps`` activities one after the other; the result folds every step's value."""
    total = index
    for step in range(steps):
        value = yield ScheduleActivity(crash_step, index, step, log, pause)
        total = (total * 31 + value) % 1_000_000_007
    return {"index": index, "total": total}


@activity
def ledger_step(index: int, step: int, log: str, pause: float) -> int:
    """``crash_step`` with an ``fsync``'d ledger line ``index step attempt``."""
    line = f"{index} {step} {activity_context().attempt}\n".encode()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    time.sleep(pause)
    return index * 1000 + step


@workflow
def ledger_chain(
    index: int, steps: int, log: str, pause: float
) -> Generator[Any, Any, dict[str, int]]:
    """``crash_chain`` on ``ledger_step``: the same result."""
    total = index
    for step in range(steps):
        value = yield ScheduleActivity(ledger_step, index, step, log, pause)
        total = (total * 31 + value) % 1_000_000_007
    return {"index": index, "total": total}


WORKFLOWS: Final = [crash_chain, ledger_chain]
ACTIVITIES: Final = [crash_step, ledger_step]

#: What each worker process runs: ``python -c WORKER URL CONCURRENCY``.
WORKER: Final = """
import sys
from engine import Worker
from tests import crashkit
store = crashkit.open_store(sys.argv[1])
try:
    Worker(store, workflows=crashkit.WORKFLOWS, activities=crashkit.ACTIVITIES,
           poll_interval=float(sys.argv[3]) if len(sys.argv) > 3 else 0.01,
           max_concurrent_activities=int(sys.argv[2])).run()
finally:
    store.close()
"""


def expected(workflows: int, steps: int) -> dict[str, Any]:
    """The results of a crash-free run (on a ``MemoryStore``, in this process), by id."""
    with MemoryStore() as store:
        client = Client(store)
        log = os.devnull
        ids = [
            client.start(crash_chain, i, steps, log, 0.0, id=f"crash-{i}") for i in range(workflows)
        ]
        Worker(store, workflows=WORKFLOWS, activities=ACTIVITIES).run_until_idle()
        return {wid: client.result(wid) for wid in ids}


# --------------------------------------------------------------------------- the driver


@dataclasses.dataclass
class Report:
    """What a crash-kill run did (``seed`` replays its kill schedule)."""

    seed: int
    kills: int = 0
    kills_while_busy: int = 0  # kills before every workflow had closed
    seconds: float = 0.0
    attempts: int = 0  # activity attempts logged (reruns included)
    activities: int = 0
    durable_seen: int = 0  # completions the driver saw durable (``ledger=True``)


class _Durable:
    """When each activity's completion was first seen durable, as a ledger length.

    ``observe`` reads the open workflows' histories, *then* counts the ledger's
    lines: an attempt logged past that count began after its completion was
    durable (the completion landed before the read that saw it).
    """

    def __init__(self, ids: Sequence[str], log: pathlib.Path) -> None:
        self.open = {wid: index for index, wid in enumerate(ids)}
        self.log = log
        self.at: dict[tuple[int, int], int] = {}  # (index, step) -> ledger lines then

    def observe(self, store: Store) -> None:
        seen: list[tuple[int, int]] = []
        for wid, index in list(self.open.items()):
            history = store.read(wid)
            steps = _steps(history)
            for ev in history:
                if isinstance(ev, ActivityCompleted) and (index, steps[ev.seq]) not in self.at:
                    seen.append((index, steps[ev.seq]))
            if any(isinstance(ev, WorkflowCompleted) for ev in history):
                del self.open[wid]
        if seen:
            lines = len(_lines(self.log))
            for key in seen:
                self.at[key] = lines


def _steps(history: Sequence[Any]) -> dict[int, int]:
    """Activity seq -> step (the chains schedule their steps in order)."""
    seqs = sorted(ev.seq for ev in history if isinstance(ev, ActivityScheduled))
    return {seq: step for step, seq in enumerate(seqs)}


class _Slot:
    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.kill_at = 0.0


def run(
    url: str,
    directory: pathlib.Path,
    *,
    seed: int,
    workflows: int = 20,
    steps: int = 10,
    workers: int = 3,
    concurrency: int = 1,
    kills: int = 50,
    life: tuple[float, float] = (0.3, 0.9),
    pause: float = 0.15,
    timeout: float = 120.0,
    ledger: bool = False,
    replay: bool = False,
    worker_poll: float = 0.01,
    watch_every: float = 0.5,
) -> Report:
    """Run the workload under ``kill -9``s and ``check`` it; see the module docstring.

    ``life`` bounds each worker process's random lifetime (seconds from spawn,
    imports included), ``pause`` is each activity's duration, ``concurrency``
    each worker's ``max_concurrent_activities``.  Raises ``AssertionError``
    (with the seed and the workers' output) when the outcome is wrong or the
    run takes longer than ``timeout``.  ``ledger``, ``replay``, ``worker_poll``
    and ``watch_every``: see the module docstring.
    """
    rng = random.Random(seed)
    report = Report(seed=seed)
    log = directory / "attempts.log"
    output_path = directory / "workers.out"
    t0 = time.monotonic()
    chain = ledger_chain if ledger else crash_chain
    store = open_store(url)
    try:
        client = Client(store)
        ids = [
            client.start(chain, i, steps, str(log), pause, id=f"crash-{i}")
            for i in range(workflows)
        ]
    finally:
        store.close()
    durable = _Durable(ids, log) if ledger else None
    slots = [_Slot() for _ in range(workers)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with open(output_path, "ab") as output:

        def spawn(slot: _Slot) -> None:
            slot.proc = subprocess.Popen(
                [sys.executable, "-c", WORKER, url, str(concurrency), str(worker_poll)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
            slot.kill_at = time.monotonic() + rng.uniform(*life)

        try:
            for slot in slots:
                spawn(slot)
            _drive(
                url, ids, slots, spawn, report, kills, t0 + timeout, output_path,
                durable=durable, watch_every=watch_every,
            )  # fmt: skip
        finally:
            _stop(slots)
    report.seconds = time.monotonic() - t0
    store = open_store(url)
    try:
        if durable is not None:
            report.durable_seen = len(durable.at)
        report.attempts, report.activities = check(
            store, ids, log, steps, expected(workflows, steps),
            durable_at=None if durable is None else durable.at,
            replay=chain if replay else None,
        )  # fmt: skip
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{report}\n{_tail(output_path)}") from None
    finally:
        store.close()
    return report


def _drive(
    url: str,
    ids: Sequence[str],
    slots: list[_Slot],
    spawn: Callable[[_Slot], None],
    report: Report,
    kills: int,
    deadline: float,
    output_path: pathlib.Path,
    *,
    durable: _Durable | None = None,
    watch_every: float = 0.5,
) -> None:
    """Kill and respawn workers until ``kills`` kills are done and every workflow closed."""
    store = open_store(url)
    try:
        busy = True
        last_check = last_watch = 0.0
        while busy or report.kills < kills or (durable is not None and durable.open):
            now = time.monotonic()
            if now > deadline:
                raise AssertionError(
                    f"crash-kill run did not finish in time: {report}\n{_tail(output_path)}"
                )
            for slot in slots:
                assert slot.proc is not None
                if slot.proc.poll() is not None:  # a worker that exits by itself is a bug
                    raise AssertionError(
                        f"a worker exited with {slot.proc.returncode}: {report}\n"
                        f"{_tail(output_path)}"
                    )
                if now >= slot.kill_at and report.kills < kills:
                    slot.proc.send_signal(signal.SIGKILL)
                    slot.proc.wait()
                    report.kills += 1
                    report.kills_while_busy += busy
                    spawn(slot)
            if busy and now - last_check > 0.05:
                last_check = now
                counts = store.list(page_size=1).counts
                busy = counts.get(Status.RUNNING, 0) > 0 or sum(counts.values()) < len(ids)
            if durable is not None and (now - last_watch > watch_every or not busy):
                last_watch = now
                durable.observe(store)
            time.sleep(0.005)
    finally:
        store.close()


def _stop(slots: list[_Slot]) -> None:
    """SIGTERM (a graceful stop) every live worker; SIGKILL what does not stop in time."""
    live = [s.proc for s in slots if s.proc is not None and s.proc.poll() is None]
    for proc in live:
        proc.send_signal(signal.SIGTERM)
    for proc in live:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: pathlib.Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no worker output)"
    return "worker output (last lines):\n" + "\n".join(text[-lines:])


def check(
    store: Store,
    ids: Sequence[str],
    log: pathlib.Path,
    steps: int,
    results: dict[str, Any],
    *,
    durable_at: dict[tuple[int, int], int] | None = None,
    replay: Callable[..., Any] | None = None,
) -> tuple[int, int]:
    """Assert the outcome (see the module docstring); returns (attempts logged, activities).

    ``durable_at``: (index, step) -> the ledger's length when that completion was
    seen durable; no attempt may be logged after it.  ``replay``: the workflow
    whose every history must replay (``engine.testing.assert_deterministic``).
    """
    lines = _lines(log)
    attempts = collections.Counter(tuple(map(int, line.split()[:2])) for line in lines)
    if durable_at is not None:
        late = [
            f"{line!r} (ledger line {n}, completion durable at line {durable_at[key]})"
            for n, line in enumerate(lines)
            if (key := tuple(map(int, line.split()[:2]))) in durable_at and n >= durable_at[key]
        ]
        assert not late, f"attempts after their completion was durable: {late[:10]}"
    if replay is not None:
        from engine.testing import assert_deterministic  # NB: needs hypothesis (testing extra)

        for wid in ids:
            assert_deterministic(replay, store.read(wid))
    client = Client(store)
    runs = collections.Counter(i.id for i in store.runs())  # NB: once: a listing per id is slow
    for index, wid in enumerate(ids):
        assert runs[wid] == 1, f"{wid}: {runs[wid]} runs"
        info = store.describe(wid)
        assert info.status is Status.COMPLETED, f"{wid}: {info.status} ({info.blocked})"
        assert client.result(wid) == results[wid], f"{wid}: {client.result(wid)} != {results[wid]}"
        history = store.read(wid)
        completed = sum(isinstance(ev, WorkflowCompleted) for ev in history)
        assert completed == 1, f"{wid}: {completed} WorkflowCompleted"
        for kind in (ActivityScheduled, ActivityCompleted):
            per_seq = collections.Counter(ev.seq for ev in history if isinstance(ev, kind))  # type: ignore[attr-defined]
            assert len(per_seq) == steps and set(per_seq.values()) == {1}, (
                f"{wid}: {kind.__name__} per activity: {dict(per_seq)}"
            )
        assert not any(isinstance(ev, ActivityFailed) for ev in history), f"{wid}: failed"
        for step in range(steps):
            assert attempts[(index, step)] >= 1, f"{wid}: step {step} never ran"
    return sum(attempts.values()), len(ids) * steps


def _lines(path: pathlib.Path) -> list[str]:
    try:
        with open(path) as f:
            return [line for line in f.read().splitlines() if line]
    except FileNotFoundError:
        return []
