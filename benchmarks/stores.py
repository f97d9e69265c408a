"""Event stores: append latency and throughput, group commit, read and replay.

``python -m benchmarks.stores [--quick] [--repeat N] [--results-dir DIR]``

Per backend and durability level (``MemoryStore``; ``SQLiteStore`` and, when
``stores.file`` imports, ``FileStore`` at ``fsync``, ``flush`` and ``none``),
each in a fresh store in a temporary directory:

* single-event appends (one ~200-byte signal per ``append`` call, to one run):
  latency median and p95 in microseconds, and appends/s;
* group commit: ``append`` calls of 100 runs' batches (one event each): events/s;
* a 10,000-event history (a sequential workflow of 3,333 activities): ``read``
  of the whole run, and ``read`` + ``Interpreter`` feed + the next decision
  (a worker's cache miss), in events/s.

Every figure is the median over ``--repeat`` repetitions (min and max in the
JSON); latency percentiles are taken within each repetition first.
"""

from __future__ import annotations

import importlib
import pathlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import stores
from engine import Interpreter
from engine.events import Event, Json, SignalReceived, WorkflowStarted

from . import _common as c
from . import _plots
from .replay import build_history, sequential

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PAYLOAD = Json(text='"' + "x" * 150 + '"')  # a signal of about 200 bytes encoded
GROUP = 100  # runs' batches per group-commit call
LEVELS = ("fsync", "flush", "none")

Opener = Callable[[pathlib.Path], stores.Store]


def backends() -> list[tuple[str, Opener]]:
    """(label, open(directory)) for every backend and level this checkout has."""
    from stores.sqlite import SQLiteStore

    found: list[tuple[str, Opener]] = [("memory", lambda _d: stores.MemoryStore())]
    for level in LEVELS:
        found.append((f"sqlite {level}", _opener(SQLiteStore, "tpp.db", level)))
    try:
        file_store = importlib.import_module("stores.file").FileStore
    except ImportError:  # another backend's author may not have landed it yet
        return found
    for level in LEVELS:
        found.append((f"file {level}", _opener(file_store, "store", level)))
    return found


def _opener(cls: Any, name: str, level: str) -> Opener:
    return lambda directory: cls(directory / name, durability=level)


@contextmanager
def fresh(open_store: Opener) -> Iterator[stores.Store]:
    with tempfile.TemporaryDirectory(prefix="tpp-bench-stores-") as tmp:
        store = open_store(pathlib.Path(tmp))
        try:
            yield store
        finally:
            store.close()


def started(workflow_id: str) -> WorkflowStarted:
    return WorkflowStarted(
        time=T0,
        workflow_type="bench",
        workflow_id=workflow_id,
        run_id=f"{workflow_id}-run",
        input=Json(text="null"),
    )


def batch(s: WorkflowStarted, *events: Event) -> stores.AppendBatch:
    return stores.AppendBatch(workflow_id=s.workflow_id, run_id=s.run_id, events=list(events))


def signal(i: int) -> SignalReceived:
    return SignalReceived(time=T0, name="tick", payload=PAYLOAD, request_id=str(i))


def single_appends(
    open_store: Opener, n: int, repeat: int, sink: list[float] | None = None
) -> list[tuple[float, float, float]]:
    """Per repetition: (median latency s, p95 latency s, appends/s) of ``n`` appends.

    ``sink`` collects every timed latency (for the distribution plot).
    """
    out = []
    for rep in range(repeat + 1):  # the first is a warm-up
        latencies, total = _single_appends(open_store, n)
        if rep:
            if sink is not None:
                sink.extend(latencies)
            p95 = statistics.quantiles(latencies, n=20, method="inclusive")[-1]
            out.append((statistics.median(latencies), p95, n / total))
    return out


def _single_appends(open_store: Opener, n: int) -> tuple[list[float], float]:
    """The latency of each of ``n`` appends to a fresh store, and the seconds of all."""
    with fresh(open_store) as store:
        s = started("single")
        store.create(s)
        latencies = []
        t_start = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            [result] = store.append([batch(s, signal(i))])
            latencies.append(time.perf_counter() - t0)
            assert result.ok, result.error
        return latencies, time.perf_counter() - t_start


def single_append_rate(open_store: Opener, n: int) -> float:
    """Appends/s of ``n`` single appends to a fresh store: one repetition."""
    return n / _single_appends(open_store, n)[1]


def group_commits(open_store: Opener, calls: int, repeat: int) -> list[float]:
    """Per repetition: events/s of ``calls`` appends of ``GROUP`` runs' batches each."""
    out = []
    for rep in range(repeat + 1):
        with fresh(open_store) as store:
            runs = [started(f"group-{i}") for i in range(GROUP)]
            for s in runs:
                store.create(s)
            t0 = time.perf_counter()
            for call in range(calls):
                results = store.append([batch(s, signal(call)) for s in runs])
                assert all(r.ok for r in results)
            elapsed = time.perf_counter() - t0
        if rep:
            out.append(GROUP * calls / elapsed)
    return out


def read_and_replay(
    open_store: Opener, history: list[Event], repeat: int
) -> tuple[list[float], list[float]]:
    """Events/s of reading the whole history, and of reading + replaying it."""
    first = history[0]
    assert isinstance(first, WorkflowStarted)
    with fresh(open_store) as store:
        store.create(first)
        for i in range(1, len(history), 1000):  # loaded as external batches of 1,000
            [result] = store.append([batch(first, *history[i : i + 1000])])
            assert result.ok, result.error
        assert store.read(first.workflow_id) == history
        n = len(history)

        def read() -> list[Event]:
            return store.read(first.workflow_id)

        def replay() -> None:
            it = Interpreter(sequential)
            it.feed(read())
            assert it.decide(T0, "next") is not None
            it.close()

        reads = [n / t for t in c.measure(read, repeat)]
        replays = [n / t for t in c.measure(replay, repeat)]
    return reads, replays


def main(argv: Sequence[str] | None = None) -> int:
    p = c.parser("Event stores: append latency and throughput, group commit, read and replay.")
    args = p.parse_args(argv)
    repeat = max(5, args.repeat)
    appends = 30 if args.quick else 2000
    calls = 2 if args.quick else 50
    activities = 333 if args.quick else 3333
    history = build_history(activities)
    found = backends()
    params = {
        "quick": args.quick,
        "repeat": repeat,
        "single_appends": appends,
        "group_calls": calls,
        "group_size": GROUP,
        "history_events": len(history),
        "backends": [label for label, _ in found],
    }
    results: list[dict[str, Any]] = []
    rows: dict[str, list[list[str]]] = {"append": [], "group": [], "read": []}
    latencies: dict[str, list[float]] = {}
    with c.progress("stores", len(found)) as advance:
        for label, open_store in found:
            single = single_appends(open_store, appends, repeat, latencies.setdefault(label, []))
            median_us = [1e6 * s[0] for s in single]
            p95_us = [1e6 * s[1] for s in single]
            rate = [s[2] for s in single]
            results.append(c.summary(f"{label}: append latency median", "us", median_us))
            results.append(c.summary(f"{label}: append latency p95", "us", p95_us))
            results.append(c.summary(f"{label}: single appends", "appends/s", rate))
            rows["append"].append(
                [
                    label,
                    c.fmt(statistics.median(median_us)),
                    c.fmt(statistics.median(p95_us)),
                    c.fmt(statistics.median(rate)),
                ]
            )
            group = group_commits(open_store, calls, repeat)
            results.append(c.summary(f"{label}: group commit", "events/s", group, group=GROUP))
            rows["group"].append([label, c.fmt(statistics.median(group))])
            reads, replays = read_and_replay(open_store, history, repeat)
            results.append(c.summary(f"{label}: read", "events/s", reads, events=len(history)))
            results.append(
                c.summary(f"{label}: read + replay", "events/s", replays, events=len(history))
            )
            rows["read"].append(
                [label, c.fmt(statistics.median(reads)), c.fmt(statistics.median(replays))]
            )
            print(f"  {label} done", flush=True)
            advance()
    print(
        c.table(
            f"Single-event appends ({appends} per repetition)",
            ["store", "median us", "p95 us", "appends/s"],
            rows["append"],
        )
    )
    print()
    print(
        c.table(
            f"Group commit ({GROUP} runs' batches per call)", ["store", "events/s"], rows["group"]
        )
    )
    print()
    print(
        c.table(
            f"A {len(history):,}-event history",
            ["store", "read events/s", "read + replay events/s"],
            rows["read"],
        )
    )
    path = c.write_results("stores", params, results, args.results_dir)
    _plots.append_latency(args.results_dir, latencies)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
