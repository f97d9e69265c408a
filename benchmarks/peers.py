"""Temporal++ beside its peers: the same workloads, side by side, in one process tree.

``python -m benchmarks.peers [--quick] [--repeat N] [--results-dir DIR]``

The peers come from the optional extra ``bench`` (``pip install -e ".[bench]"``).
A peer that is not installed, or fails here, is reported ``unavailable`` with
the reason, and everything else still runs.

1. **Durable end to end** (trivial steps that return their argument), DBOS
   Transact on SQLite against Temporal++ on ``SQLiteStore`` and ``FileStore``
   at ``durability="fsync"``: 500 workflows x 10 steps run one after the other
   (``sequential``), the same all started at once (``concurrent``: DBOS's
   ``start_workflow`` on its thread pool; one Temporal++ ``Worker``'s
   ``run_until_idle``), and one workflow of 1,000 steps (``long``).  Timed from
   the first start to the last result read back, on a fresh database.  Every
   (side, repetition) runs in a child process of its own, and the sides take
   turns repetition by repetition, so the drift of a shared machine hits them
   alike; a ratio is the median of the per-repetition ratios.

   Durability.  DBOS on SQLite sets only ``busy_timeout`` and ``foreign_keys``,
   so it runs with SQLite's defaults: the rollback journal
   (``journal_mode=DELETE``) at ``synchronous=FULL``, every commit fsync'd.
   ``DBOS (WAL)`` is the same with the database put in WAL mode before launch
   (the mode persists in the file), still at FULL: exactly ``SQLiteStore``'s
   settings at ``durability="fsync"``.  Both survive a power loss with every
   returned call, like Temporal++ at ``fsync``.  The headline ratio is
   Temporal++ ``SQLiteStore`` over ``DBOS (WAL)``: the same durability and the
   same SQLite settings.  The pragmas in force are read back and recorded.

2. **Replay**: Microsoft durabletask's in-process orchestration executor
   (``durabletask.worker._OrchestrationExecutor``: no sidecar, no gRPC)
   replaying histories of 1,000 and 10,000 completed activities of the same
   sequential workflow, built in its protobuf form the way its backends record
   them (per activity: ``orchestratorStarted``, ``taskCompleted``,
   ``taskScheduled``, ``orchestratorCompleted``; checked against the executor
   itself on a short history), against Temporal++'s ``Interpreter`` replaying
   its own history of that workflow from decoded events (3 events per
   activity).  Events/s for each; the ratio is of the time to replay the same
   activities, measured in alternation.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import logging
import os
import pathlib
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from datetime import UTC, datetime
from typing import Any

from . import _common as c
from . import _plots, replay

# (name, workflows, steps) in full and quick form
WORKLOADS = (("sequential", 500, 10), ("concurrent", 500, 10), ("long", 1, 1000))
QUICK_WORKLOADS = (("sequential", 3, 2), ("concurrent", 3, 2), ("long", 1, 10))
REPLAY_LENGTHS = (1_000, 10_000)
QUICK_REPLAY_LENGTHS = (50, 200)

SIDES = {
    "tpp-sqlite": "Temporal++ SQLiteStore (fsync)",
    "tpp-file": "Temporal++ FileStore (fsync)",
    "dbos": "DBOS (SQLite defaults)",
    "dbos-wal": "DBOS (WAL)",
}
PEER_OF = {"dbos": "dbos", "dbos-wal": "dbos"}  # side -> the package it needs
DURABILITY = {
    "tpp-sqlite": "SQLite journal_mode=WAL, synchronous=FULL (durability='fsync')",
    "tpp-file": "fdatasync of each run's log per append call (durability='fsync')",
    "dbos": "SQLite journal_mode=DELETE, synchronous=FULL (DBOS's defaults)",
    "dbos-wal": "SQLite journal_mode=WAL, synchronous=FULL (set before launch)",
}
# (Temporal++ side, peer side, goal) for the ratios; None: no goal stated
RATIOS = (
    ("tpp-sqlite", "dbos-wal", 10.0),
    ("tpp-sqlite", "dbos", None),
    ("tpp-file", "dbos-wal", 5.0),
    ("tpp-file", "dbos", None),
)
HEADLINE = "concurrent"  # the goals are for 500 x 10 on both sides' best path
REPLAY_GOAL = 1_000_000  # events/s from decoded events

# -- the children: one side, a few workloads, fresh databases -------------------------------


def _tpp_run(side: str, root: pathlib.Path, kind: str, n: int, k: int) -> float:
    import stores
    from engine import Client, Worker

    from .e2e import chain, noop

    url = f"sqlite:{root / 'tpp.db'}" if side == "tpp-sqlite" else f"file:{root / 'files'}"
    store = stores.open(f"{url}?durability=fsync")
    try:
        client = Client(store)
        worker = Worker(store, workflows=[chain], activities=[noop])
        expected = k * (k - 1) // 2
        t0 = time.perf_counter()
        if kind == "sequential":
            for _ in range(n):
                wid = client.start(chain, k)
                worker.run_until_idle()
                assert client.result(wid) == expected
        else:
            ids = [client.start(chain, k) for _ in range(n)]
            worker.run_until_idle()
            assert all(client.result(wid) == expected for wid in ids)
        return time.perf_counter() - t0
    finally:
        store.close()


_DBOS_CHAIN: Any = None


def _dbos_register() -> Any:
    global _DBOS_CHAIN
    if _DBOS_CHAIN is None:
        from dbos import DBOS

        @DBOS.step()
        def dbos_noop(i: int) -> int:
            return i

        @DBOS.workflow()
        def dbos_chain(count: int) -> int:
            total = 0
            for i in range(count):
                total += dbos_noop(i)
            return total

        _DBOS_CHAIN = dbos_chain
    return _DBOS_CHAIN


_DBOS_TEMPLATE: list[pathlib.Path] = []  # a migrated, empty database, copied for each run


_DBOS_QUICK: list[bool] = []  # a smoke run: DBOS polls every 10 ms, so destroy() is quick


def _dbos_launch(path: pathlib.Path) -> None:
    from dbos import DBOS

    config: Any = {
        "name": "tpp-bench",
        "system_database_url": f"sqlite:///{path}",
        "log_level": "WARNING",
    }
    if _DBOS_QUICK:  # else DBOS.destroy() waits out its 1 s notification poll
        config["notification_listener_polling_interval_sec"] = 0.01
    DBOS(config=config)
    DBOS.launch()


def _dbos_run(side: str, root: pathlib.Path, kind: str, n: int, k: int) -> float:
    """One timed run on a fresh copy of a migrated empty database (migrating takes ~1 s)."""
    from dbos import DBOS

    workflow = _dbos_register()
    if not _DBOS_TEMPLATE:
        template = root.parent / "template.sqlite"
        _dbos_launch(template)
        DBOS.destroy()
        _DBOS_TEMPLATE.append(template)
    path = root / "dbos.sqlite"
    shutil.copyfile(_DBOS_TEMPLATE[0], path)
    if side == "dbos-wal":
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        finally:
            conn.close()
    _dbos_launch(path)
    try:
        expected = k * (k - 1) // 2
        t0 = time.perf_counter()
        if kind == "sequential":
            for _ in range(n):
                assert workflow(k) == expected
        else:
            handles = [DBOS.start_workflow(workflow, k) for _ in range(n)]
            assert all(h.get_result() == expected for h in handles)
        elapsed = time.perf_counter() - t0
        _DBOS_PRAGMAS.update(_dbos_pragmas())
        return elapsed
    finally:
        DBOS.destroy()


_DBOS_PRAGMAS: dict[str, str] = {}


def _dbos_pragmas() -> dict[str, str]:
    """The journal mode and synchronous level of DBOS's own connections, read back."""
    try:
        from dbos._dbos import _get_dbos_instance

        engine = _get_dbos_instance()._sys_db.engine
        with engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
        levels = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        level = levels.get(sync, str(sync)) if isinstance(sync, int) else str(sync)
        return {"journal_mode": str(mode), "synchronous": level}
    except Exception as exc:  # a private API: its absence only loses the record
        return {"pragmas": f"not read back: {type(exc).__name__}: {exc}"}


def child(
    side: str, workloads: list[tuple[str, int, int]], repetitions: int, quick: bool
) -> dict[str, Any]:
    """Run ``workloads`` ``repetitions`` times each on ``side`` (after a small warm-up)."""
    if quick:
        _DBOS_QUICK.append(True)
    run = _dbos_run if side.startswith("dbos") else _tpp_run
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix=f"tpp-bench-peers-{side}-") as tmp:
        fresh = iter(range(1_000_000))

        def new_root() -> pathlib.Path:
            root = pathlib.Path(tmp) / str(next(fresh))
            root.mkdir()
            return root

        run(side, new_root(), "concurrent", 2, 2)  # imports, schema, caches: untimed
        for _ in range(repetitions):
            for kind, n, k in workloads:
                samples.setdefault(kind, []).append(run(side, new_root(), kind, n, k))
    out: dict[str, Any] = {"samples": samples}
    if side.startswith("dbos"):
        out["pragmas"] = dict(_DBOS_PRAGMAS)
        out["version"] = importlib.metadata.version("dbos")
    return out


def _spawn(
    side: str, workloads: Sequence[tuple[str, int, int]], repetitions: int, quick: bool
) -> dict[str, Any]:
    """Run ``child`` in a new process; ``{"error": ...}`` if it fails."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.peers",
            "--child",
            side,
            "--child-workloads",
            json.dumps(list(workloads)),
            "--child-repetitions",
            str(repetitions),
            *(["--quick"] if quick else []),
        ],
        cwd=c.ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    doc: dict[str, Any] = json.loads(lines[-1])
    return doc


def _unavailable_reason(side: str) -> str | None:
    package = PEER_OF.get(side)
    if package is not None and importlib.util.find_spec(package) is None:
        return f"{package} is not installed (pip install -e '.[bench]')"
    return None


# -- replay: durabletask's executor against the interpreter ---------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FOREVER = 10**9


class DurableTaskReplay:
    """durabletask's orchestration executor replaying a sequential workflow's history."""

    def __init__(self) -> None:
        import durabletask.internal.helpers as helpers
        from durabletask import task, worker
        from durabletask.serialization import JsonDataConverter

        def step(ctx: Any, i: int) -> int:
            return i

        def sequential(ctx: Any, count: int) -> Generator[Any, Any, int]:
            total = 0
            for i in range(count):
                total += yield ctx.call_activity(step, input=i)
            return total

        self.helpers, self.worker, self.converter = helpers, worker, JsonDataConverter
        registry: Any = worker._Registry  # private and partly typed: used as Any
        self.registry = registry()
        self.name = self.registry.add_orchestrator(sequential)
        self.registry.add_activity(step)
        self.step = task.get_name(step)
        self.logger = logging.getLogger("tpp-bench-durabletask")
        self.logger.setLevel(logging.WARNING)
        self.logger.propagate = False
        self.version = importlib.metadata.version("durabletask")
        self._check_shape()

    def history(self, activities: int) -> tuple[list[Any], list[Any]]:
        """(past events, new events) with ``activities`` completed, the last not decided on."""
        h = self.helpers
        past = [
            h.new_orchestrator_started_event(T0),
            h.new_execution_started_event(self.name, "bench", encoded_input=json.dumps(FOREVER)),
        ]
        for seq in range(1, activities + 1):
            if seq > 1:
                past.append(h.new_orchestrator_started_event(T0))
                past.append(h.new_task_completed_event(seq - 1, json.dumps(seq - 2)))
            past.append(h.new_task_scheduled_event(seq, self.step, json.dumps(seq - 1)))
            past.append(h.new_orchestrator_completed_event())
        new = [
            h.new_orchestrator_started_event(T0),
            h.new_task_completed_event(activities, json.dumps(activities - 1)),
        ]
        return past, new

    def replay(self, past: list[Any], new: list[Any]) -> None:
        executor = self.worker._OrchestrationExecutor(self.registry, self.logger, self.converter())
        [action] = executor.execute("bench", past, new).actions
        assert action.HasField("scheduleTask"), action
        assert action.id == new[-1].taskCompleted.taskScheduledId + 1, action

    def _check_shape(self, activities: int = 4) -> None:
        """The built history is what the executor itself produces, episode by episode."""
        h = self.helpers
        past: list[Any] = []
        new = [
            h.new_orchestrator_started_event(T0),
            h.new_execution_started_event(self.name, "bench", encoded_input=json.dumps(FOREVER)),
        ]
        for seq in range(1, activities + 1):
            executor = self.worker._OrchestrationExecutor(
                self.registry, self.logger, self.converter()
            )
            [action] = executor.execute("bench", past, new).actions
            assert action.HasField("scheduleTask") and action.id == seq, action
            scheduled = h.new_task_scheduled_event(
                action.id, action.scheduleTask.name, action.scheduleTask.input.value
            )
            past = [*past, *new, scheduled, h.new_orchestrator_completed_event()]
            new = [
                h.new_orchestrator_started_event(T0),
                h.new_task_completed_event(seq, json.dumps(seq - 1)),
            ]
        built = self.history(activities)
        same = [e.SerializeToString() for e in past] == [
            e.SerializeToString() for e in built[0]
        ] and [e.SerializeToString() for e in new] == [e.SerializeToString() for e in built[1]]
        assert same, "the built durabletask history differs from the executor's own"


def replay_side_by_side(
    lengths: Sequence[int], repeat: int, quick: bool, advance: Callable[[], None]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows for Temporal++ and durabletask replays at each length, and ratio rows."""
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    try:
        dt: DurableTaskReplay | None = DurableTaskReplay()
        info = {"durabletask": dt.version if dt else None}
    except Exception as exc:  # not installed, or an API that moved
        dt = None
        reason = (
            "durabletask is not installed (pip install -e '.[bench]')"
            if isinstance(exc, ImportError)
            else f"{type(exc).__name__}: {exc}"
        )
        info = {"durabletask": None, "reason": reason}
    for length in lengths:
        ours = replay.build_history(length)
        n_ours = len(ours)
        theirs = dt.history(length) if dt else None
        tpp_t: list[float] = []
        dt_t: list[float] = []
        for rep in range(repeat + 1):  # in alternation; the first round warms up
            t0 = time.perf_counter()
            replay.replay_from_scratch(ours)
            t1 = time.perf_counter()
            if dt is not None and theirs is not None:
                dt.replay(*theirs)
            t2 = time.perf_counter()
            if rep:
                tpp_t.append(t1 - t0)
                dt_t.append(t2 - t1)
        rates = [n_ours / t for t in tpp_t]
        goal = (
            {} if quick else {"goal": REPLAY_GOAL, "met": statistics.median(rates) >= REPLAY_GOAL}
        )
        rows.append(
            c.summary(
                f"replay {length:,} activities: Temporal++",
                "events/s",
                rates,
                events=n_ours,
                activities=length,
                **goal,
            )
        )
        name = f"replay {length:,} activities: durabletask"
        if dt is None or theirs is None:
            rows.append(_unavailable(name, "events/s", info["reason"]))
        else:
            n_dt = len(theirs[0]) + len(theirs[1])
            rows.append(
                c.summary(
                    name, "events/s", [n_dt / t for t in dt_t], events=n_dt, activities=length
                )
            )
            rows.append(
                c.summary(
                    f"ratio replay {length:,} activities: Temporal++ / durabletask",
                    "ratio",
                    [d / t for d, t in zip(dt_t, tpp_t, strict=True)],
                    what="activities replayed per second (the same work; 3 vs 4 events each)",
                )
            )
        advance()
    return rows, info


def _unavailable(name: str, unit: str, reason: str) -> dict[str, Any]:
    return {"name": name, "unit": unit, "status": "unavailable", "reason": reason}


# -- main -----------------------------------------------------------------------------------


def end_to_end(
    workloads: Sequence[tuple[str, int, int]],
    repeat: int,
    quick: bool,
    advance: Callable[[], None],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows per (side, workload) and ratio rows; and what each side reported of itself."""
    samples: dict[str, dict[str, list[float]]] = {side: {} for side in SIDES}
    down: dict[str, str] = {}
    meta: dict[str, Any] = {}
    for side in SIDES:
        reason = _unavailable_reason(side)
        if reason:
            down[side] = reason
    # quick: one child per side runs every repetition; full: a child per side and round
    rounds = [repeat] if quick else [1] * repeat
    for reps in rounds:
        for side in SIDES:
            if side in down:
                advance()
                continue
            doc = _spawn(side, workloads, reps, quick)
            if "error" in doc:
                down[side] = doc["error"]
            else:
                for kind, values in doc["samples"].items():
                    samples[side].setdefault(kind, []).extend(values)
                meta[side] = {k: v for k, v in doc.items() if k != "samples"}
            advance()
    rows: list[dict[str, Any]] = []
    rates: dict[tuple[str, str], list[float]] = {}
    for side, label in SIDES.items():
        for kind, n, k in workloads:
            name = f"{label}: {n}x{k} {kind}"
            if side in down:
                rows.append(_unavailable(name, "steps/s", down[side]))
                continue
            rates[side, kind] = [n * k / s for s in samples[side][kind]]
            rows.append(
                c.summary(
                    name,
                    "steps/s",
                    rates[side, kind],
                    side=side,
                    workload=kind,
                    n=n,
                    k=k,
                    durability=DURABILITY[side],
                    **meta.get(side, {}),
                )
            )
    for ours, peer, goal in RATIOS:
        for kind, n, k in workloads:
            name = f"ratio {n}x{k} {kind}: {SIDES[ours]} / {SIDES[peer]}"
            if (ours, kind) not in rates or (peer, kind) not in rates:
                reason = down.get(peer) or down.get(ours, "?")
                rows.append({**_unavailable(name, "ratio", reason), "workload": kind})
                continue
            paired = [a / b for a, b in zip(rates[ours, kind], rates[peer, kind], strict=True)]
            extra: dict[str, Any] = {"ours": ours, "peer": peer, "workload": kind}
            if goal is not None and kind == HEADLINE and not quick:  # quick: sizes too small
                extra |= {"goal": goal, "met": statistics.median(paired) >= goal}
            rows.append(c.summary(name, "ratio", paired, **extra))
    return rows, {"down": down, **meta}


def main(argv: Sequence[str] | None = None) -> int:
    p = c.parser("Temporal++ beside DBOS Transact and durabletask, side by side.")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-workloads", help=argparse.SUPPRESS)
    p.add_argument("--child-repetitions", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        asked = [(str(w), int(n), int(k)) for w, n, k in json.loads(args.child_workloads)]
        print(json.dumps(child(args.child, asked, args.child_repetitions, args.quick)))
        return 0
    repeat = max(5, args.repeat)
    workloads = QUICK_WORKLOADS if args.quick else WORKLOADS
    lengths = QUICK_REPLAY_LENGTHS if args.quick else REPLAY_LENGTHS
    spawns = len(SIDES) * (1 if args.quick else repeat)
    with c.progress("peers", spawns + len(lengths)) as advance:
        e2e_rows, e2e_meta = end_to_end(workloads, repeat, args.quick, advance)
        replay_rows, replay_meta = replay_side_by_side(lengths, repeat, args.quick, advance)
    results = [*e2e_rows, *replay_rows]
    _print(results, repeat)
    params = {
        "quick": args.quick,
        "repeat": repeat,
        "workloads": [list(w) for w in workloads],
        "replay_lengths": list(lengths),
        "durability": DURABILITY,
        "headline": HEADLINE,
        "peers": {**replay_meta, "dbos": _version("dbos")},
        "unavailable": e2e_meta.get("down", {}),
    }
    path = c.write_results("peers", params, results, args.results_dir)
    _plot(results, args.results_dir)
    print(f"\nresults: {path}")
    return 0


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cell(row: dict[str, Any]) -> str:
    if row.get("status") == "unavailable":
        return "unavailable"
    return c.fmt(row["median"])


def _goal_note(row: dict[str, Any]) -> str:
    if "goal" not in row:
        return ""
    return f"goal >= {row['goal']:,}: {'met' if row['met'] else 'missed'}"


def _print(results: list[dict[str, Any]], repeat: int) -> None:
    e2e = [r for r in results if not r["name"].startswith(("ratio", "replay"))]
    print(
        c.table(
            f"Durable end to end, steps/s (median of {repeat}; min..max)",
            ["side: workload", "median", "min..max", "durability"],
            [
                [
                    r["name"],
                    _cell(r),
                    "" if "median" not in r else f"{c.fmt(r['min'])}..{c.fmt(r['max'])}",
                    r.get("durability", r.get("reason", "")),
                ]
                for r in e2e
            ],
        )
    )
    print()
    reps = [r for r in results if r["name"].startswith("replay")]
    print(
        c.table(
            "Replay from scratch, events/s",
            ["history", "median", "events", "note"],
            [
                [
                    r["name"],
                    _cell(r),
                    str(r.get("events", "")),
                    r.get("reason", _goal_note(r)),
                ]
                for r in reps
            ],
        )
    )
    print()
    ratios = [r for r in results if r["name"].startswith("ratio")]
    print(
        c.table(
            "Temporal++ / peer, measured in the same run (median of per-repetition ratios)",
            ["ratio", "median", "min..max", "goal"],
            [
                [
                    r["name"].removeprefix("ratio "),
                    _cell(r) + ("x" if "median" in r else ""),
                    "" if "median" not in r else f"{c.fmt(r['min'])}..{c.fmt(r['max'])}",
                    ""
                    if "goal" not in r
                    else f">= {r['goal']:g}x: {'met' if r['met'] else 'missed'}",
                ]
                for r in ratios
            ],
        )
    )


def _plot(results: list[dict[str, Any]], directory: pathlib.Path) -> None:
    _plots.replay_cost(directory, results, name="peers-replay")
    ratios = [r for r in results if r["name"].startswith("ratio") and "median" in r]
    if ratios:
        _plots.ratios(
            directory,
            "peers-ratios",
            "Temporal++ / peer, same run (log scale; 1 = parity)",
            [
                (r["name"].removeprefix("ratio "), r["median"], f"{c.fmt(r['median'])}x")
                for r in ratios
            ],
        )


if __name__ == "__main__":
    sys.exit(main())
