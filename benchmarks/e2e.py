"""End-to-end throughput: Client + Worker on a store, trivial activities.

``python -m benchmarks.e2e [--store memory] [--quick] [--repeat N] [--results-dir DIR]``

Measured, each as the median of ``--repeat`` runs:

* N workflows x K sequential trivial activities run to completion by one
  worker with ``run_until_idle`` (one thread, activities inline): activities/s
  and decisions/s;
* one workflow of 1,000 activities with the live-generator cache, and with
  ``cache_size=0`` (every decision replays the history from scratch): the ratio
  of the two decision costs;
* resident memory per idle open workflow (waiting on a signal), with the live
  generators cached and with the cache off, by ``tracemalloc``.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable, Generator, Sequence
from typing import Any

import stores
from engine import Client, ScheduleActivity, WaitSignal, Worker, activity, workflow
from engine.events import WorkflowTaskCompleted

from . import _common as c


@activity
def noop(i: int) -> int:
    return i


@workflow
def chain(count: int) -> Generator[Any, Any, int]:
    total = 0
    for i in range(count):
        total += yield ScheduleActivity(noop, i)
    return total


@workflow
def idle(n: int) -> Generator[Any, Any, int]:
    yield WaitSignal("go")
    return n


State = tuple[Worker, Client, list[str]]


def prepare(open_store: Callable[[], stores.Store], n: int, k: int, cache_size: int) -> State:
    """A fresh store with ``n`` started ``chain(k)`` runs and a worker for them."""
    store = open_store()
    client = Client(store)
    ids = [client.start(chain, k) for _ in range(n)]
    worker = Worker(store, workflows=[chain], activities=[noop], cache_size=cache_size)
    return worker, client, ids


def _run(state: State) -> None:
    state[0].run_until_idle()


def throughput(
    open_store: Callable[[], stores.Store], n: int, k: int, repeat: int, cache_size: int = 1000
) -> tuple[list[float], int]:
    """Seconds per repetition, and the decisions one run makes."""
    samples = c.measure_with_setup(lambda: prepare(open_store, n, k, cache_size), _run, repeat)
    worker, client, ids = prepare(open_store, n, k, cache_size)
    worker.run_until_idle()
    assert all(client.result(wid) == k * (k - 1) // 2 for wid in ids)
    decisions = sum(
        isinstance(e, WorkflowTaskCompleted) for wid in ids for e in client.history(wid)
    )
    return samples, decisions


def idle_memory(open_store: Callable[[], stores.Store], n: int, cache_size: int) -> float:
    """Bytes of Python heap per open workflow waiting on a signal."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = open_store()
        client = Client(store)
        worker = Worker(store, workflows=[idle], cache_size=cache_size)
        for i in range(n):
            client.start(idle, i)
        worker.run_until_idle()
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del worker, client, store
    return used / n


def main(argv: Sequence[str] | None = None) -> int:
    p = c.parser("End-to-end throughput: Client + Worker on a store.")
    p.add_argument("--store", default="memory", help="store URL (default memory:)")
    args = p.parse_args(argv)
    url = args.store if ":" in args.store else f"{args.store}:"
    repeat = max(5, args.repeat) if not args.quick else 5

    def open_store() -> stores.Store:
        return stores.open(url)

    workloads = [(20, 5), (5, 20)] if args.quick else [(500, 10), (100, 100), (10, 1000)]
    long_k = 50 if args.quick else 1000
    idle_n = 200 if args.quick else 10_000
    results: list[dict[str, Any]] = []
    rows: list[list[str]] = []
    for n, k in workloads:
        samples, decisions = throughput(open_store, n, k, repeat)
        acts = [n * k / s for s in samples]
        decs = [decisions / s for s in samples]
        results.append(c.summary(f"{n}x{k} activities", "activities/s", acts, n=n, k=k))
        results.append(c.summary(f"{n}x{k} decisions", "decisions/s", decs, n=n, k=k))
        rows.append(
            [
                f"{n} workflows x {k} activities",
                c.fmt(sorted(acts)[len(acts) // 2]),
                c.fmt(sorted(decs)[len(decs) // 2]),
            ]
        )
    print(
        c.table(
            f"end to end on {url} (one worker, run_until_idle)",
            ["workload", "activities/s", "decisions/s"],
            rows,
        )
    )

    cached, _ = throughput(open_store, 1, long_k, repeat)
    uncached, _ = throughput(open_store, 1, long_k, repeat, cache_size=0)
    per_cached = [s / long_k * 1e6 for s in cached]
    per_uncached = [s / long_k * 1e6 for s in uncached]
    ratio = [u / w for u, w in zip(sorted(per_uncached), sorted(per_cached), strict=True)]
    results.append(c.summary(f"1x{long_k} live cache", "us/decision", per_cached))
    results.append(c.summary(f"1x{long_k} replay every decision", "us/decision", per_uncached))
    results.append(c.summary(f"1x{long_k} replay/live ratio", "ratio", ratio))
    med = c.summary("", "", per_cached)["median"], c.summary("", "", per_uncached)["median"]
    print()
    print(
        c.table(
            f"one workflow of {long_k} activities: cost per decision",
            ["path", "us/decision"],
            [
                ["live generator (cache)", c.fmt(med[0])],
                ["replay from scratch (cache_size=0)", c.fmt(med[1])],
                ["ratio replay / live", c.fmt(med[1] / med[0])],
            ],
        )
    )

    mem_cached = idle_memory(open_store, idle_n, cache_size=idle_n)
    mem_store = idle_memory(open_store, idle_n, cache_size=0)
    results.append(c.summary(f"{idle_n} idle workflows, cached", "bytes/workflow", [mem_cached]))
    results.append(c.summary(f"{idle_n} idle workflows, no cache", "bytes/workflow", [mem_store]))
    print()
    print(
        c.table(
            f"memory per idle open workflow ({idle_n} waiting on a signal)",
            ["", "bytes/workflow"],
            [
                ["live generator cached", c.fmt(mem_cached)],
                ["store only (cache_size=0)", c.fmt(mem_store)],
            ],
        )
    )
    params = {
        "store": url,
        "repeat": repeat,
        "workloads": workloads,
        "long": long_k,
        "idle": idle_n,
        "quick": args.quick,
    }
    path = c.write_results("e2e", params, results, args.results_dir)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
