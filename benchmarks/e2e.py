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

import atexit
import gc
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Generator, Sequence
from typing import Any

import stores
from engine import Client, ScheduleActivity, Status, WaitSignal, Worker, activity, workflow
from engine.events import WorkflowTaskCompleted

from . import _common as c
from . import _plots


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


def run_once(
    open_store: Callable[[], stores.Store], n: int, k: int, cache_size: int = 1000
) -> float:
    """Seconds for one worker to run ``n`` x ``k`` activities on a fresh store: one repetition."""
    opened: list[stores.Store] = []

    def opener() -> stores.Store:
        opened.append(open_store())
        return opened[-1]

    worker, client, ids = prepare(opener, n, k, cache_size)
    try:
        seconds = c.timed(worker.run_until_idle)
        assert client.result(ids[-1]) == k * (k - 1) // 2
        return seconds
    finally:
        opened[0].close()


def against(
    ref: str, open_store: Callable[[], stores.Store], n: int, k: int, repeat: int
) -> tuple[list[float], list[float]]:
    """Activities/s of ``n`` x ``k`` with this checkout's worker, alternating with the same
    worker running the interpreter of git revision ``ref``."""
    import engine._worker as worker_module
    from engine import Interpreter as today

    from .replay import interpreter_at

    old = interpreter_at(ref)
    names = vars(worker_module)  # the worker builds its interpreters from its module's name

    def side(interpreter: Any) -> Callable[[], float]:
        def sample() -> float:
            names["Interpreter"] = interpreter
            try:
                return n * k / run_once(open_store, n, k)
            finally:
                names["Interpreter"] = today

        return sample

    mine, theirs = c.alternate([side(today), side(old)], repeat)
    return mine, theirs


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


def fresh_urls(scheme: str, durability: str) -> Callable[[], str]:
    """Each call names a new, empty store (durable ones in a new temporary directory)."""
    if scheme == "memory":
        return lambda: "memory:"
    root = pathlib.Path(tempfile.mkdtemp(prefix=f"tpp-bench-{scheme}-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    counter = iter(range(1_000_000))

    def new_url() -> str:
        path = root / f"{next(counter)}" / ("store.db" if scheme == "sqlite" else "store")
        path.parent.mkdir(parents=True)
        return f"{scheme}:{path}?durability={durability}"

    return new_url


WORKER = """
import sys
import stores
from engine import Worker
from benchmarks.e2e import chain, noop
store = stores.open(sys.argv[1])
print("ready", flush=True)
Worker(store, workflows=[chain], activities=[noop], poll_interval=0.002).run()
store.close()
"""


def multiprocess(url: str, n: int, k: int, processes: int) -> float:
    """Seconds for ``processes`` worker processes to finish ``n`` x ``k`` activities."""
    store = stores.open(url)
    client = Client(store)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url], stdout=subprocess.PIPE, text=True, cwd=c.ROOT
        )
        for _ in range(processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        t0 = time.perf_counter()
        ids = [client.start(chain, k) for _ in range(n)]
        while store.list(status=Status.COMPLETED, page_size=1).counts.get(
            Status.COMPLETED, 0
        ) < len(ids):
            time.sleep(0.005)
        elapsed = time.perf_counter() - t0
        assert all(client.result(wid) == k * (k - 1) // 2 for wid in ids[:20])
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        store.close()
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    p = c.parser("End-to-end throughput: Client + Worker on a store.")
    p.add_argument("--store", default="memory", choices=["memory", "file", "sqlite", "azure"])
    p.add_argument("--durability", default="fsync", choices=["fsync", "flush", "none"])
    p.add_argument(
        "--processes", default=None, help="worker process counts, e.g. 1,2 (durable stores)"
    )
    p.add_argument(
        "--against",
        metavar="REF",
        help="also run the first workload with the interpreter of git revision REF, alternating",
    )
    args = p.parse_args(argv)
    if args.store == "azure":
        return azure_requests(args.quick, args.results_dir)
    repeat = max(5, args.repeat) if not args.quick else 5
    new_url = fresh_urls(args.store, args.durability)

    def open_store() -> stores.Store:
        return stores.open(new_url())

    label = "memory:" if args.store == "memory" else f"{args.store} ({args.durability})"

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
        rows.append([f"{n} workflows x {k} activities", c.fmt(_median(acts)), c.fmt(_median(decs))])
    if args.against:
        n, k = workloads[0]
        today, before = against(args.against, open_store, n, k, repeat)
        results.append(
            c.summary(f"{n}x{k} activities, this checkout (alternating)", "activities/s", today)
        )
        results.append(
            c.summary(f"{n}x{k} activities, interpreter of {args.against}", "activities/s", before)
        )
        ratios = [a / b for a, b in zip(today, before, strict=True)]
        results.append(
            c.summary(f"this checkout / {args.against}, per repetition", "ratio", ratios)
        )
        rows.append([f"{n} x {k}, this checkout (alternating)", c.fmt(_median(today)), ""])
        rows.append([f"{n} x {k}, interpreter of {args.against}", c.fmt(_median(before)), ""])
        rows.append([f"this checkout / {args.against}", c.fmt(_median(ratios)), ""])
    print(
        c.table(
            f"end to end on {label} (one worker, run_until_idle)",
            ["workload", "activities/s", "decisions/s"],
            rows,
        )
    )

    if args.store != "memory":
        counts = [int(x) for x in (args.processes or "1,2").split(",")]
        n, k = (40, 5) if args.quick else (500, 10)
        rows = []
        for procs in counts:
            samples = []
            for _ in range(repeat):
                samples.append(multiprocess(new_url(), n, k, procs))
            acts = [n * k / s for s in samples]
            results.append(
                c.summary(
                    f"{n}x{k} with {procs} worker processes",
                    "activities/s",
                    acts,
                    n=n,
                    k=k,
                    processes=procs,
                )
            )
            rows.append([f"{procs} worker process(es)", c.fmt(_median(acts))])
        print()
        print(
            c.table(
                f"{n} workflows x {k} activities on {label}, worker processes (run())",
                ["workers", "activities/s"],
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
    med = _median(per_cached), _median(per_uncached)
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
        "store": args.store,
        "durability": args.durability if args.store != "memory" else None,
        "repeat": repeat,
        "workloads": workloads,
        "long": long_k,
        "idle": idle_n,
        "quick": args.quick,
    }
    path = c.write_results(f"e2e-{args.store}", params, results, args.results_dir)
    _plots.e2e_throughput(args.results_dir, args.quick)  # every store run
    print(f"\nresults: {path}")
    return 0


def azure_requests(quick: bool, results_dir: Any) -> int:
    """AzureBlobStore: requests per activity by REST operation (AZURE.md's M1), on
    $AZURE_STORAGE_CONNECTION_STRING, else on an Azurite started here (``npm ci``)."""
    import contextlib
    import os

    from stores._azure_metrics import request_report

    with contextlib.ExitStack() as stack:
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "")
        if not conn:
            from tests.azurite import running_azurite

            where = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory()))
            conn = stack.enter_context(running_azurite(where)).connection_string
        rows = request_report(conn, activities=20 if quick else 100, woken=5 if quick else 20)
    table = [
        [r["name"], str(r["activities"]), f"{r['per_activity']:.2f}",
         "—" if r["goal"] is None else f"<= {r['goal']:g}",
         ", ".join(f"{k} {v}" for k, v in r["operations"].items())]
        for r in rows
    ]  # fmt: skip
    headers = ["workload", "activities", "requests/activity", "goal", "by operation"]
    print(c.table("AzureBlobStore: requests per activity (AZURE.md M1)", headers, table))
    results = [
        c.summary(r.pop("name"), "requests/activity", [r["per_activity"]], **r) for r in rows
    ]
    path = c.write_results("e2e-azure", {"store": "azure", "quick": quick}, results, results_dir)
    print(f"\nresults: {path}")
    return 0


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


if __name__ == "__main__":
    sys.exit(main())
