"""The machine's own ceilings, and Temporal++'s figures as fractions of them.

``python -m benchmarks.limits [--quick] [--repeat N] [--results-dir DIR] [--fresh]``

Ceilings, measured here in a temporary directory (the file system the other
parts' stores use), each the median of ``--repeat`` repetitions:

* ``fdatasync``'d appends: one 200-byte ``write`` to a file opened with
  ``O_APPEND``, then ``fdatasync`` (what ``FileStore`` does), appends/s; the same
  with ``fsync``;
* group commit: 10 and 100 such records per ``write`` + ``fdatasync``, records/s;
* SQLite commits/s in WAL mode (``SQLiteStore``'s) at ``synchronous`` FULL,
  NORMAL and OFF, one 200-byte row per ``BEGIN IMMEDIATE`` ... ``COMMIT``; rows/s
  with 10 and 100 rows per commit at FULL; and FULL in SQLite's default
  rollback journal (``journal_mode=DELETE``, which DBOS uses);
* msgspec decode of a realistic history (``engine.events.decode_history`` of
  the replay part's sequential-activity history, JSON and msgpack), events/s;
* bare generator resumes/s (yielding a fresh command each time).

Then each Temporal++ figure over the ceiling that bounds it.  A figure comes
from another part's results in the results directory when they belong with
this run (within ``python -m benchmarks``: written by the same suite run;
alone: by this commit; either way with the same ``--quick`` setting), else it
is measured here with that part's own functions, at smaller sizes; ``--fresh``
always measures here.  Every row says
where its figure came from.
"""

from __future__ import annotations

import os
import pathlib
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import stores
from engine.events import decode_history, encode_history

from . import _common as c
from . import _plots, e2e, replay
from . import stores as store_bench

RECORD = b"x" * 199 + b"\n"  # one 200-byte record, as a FileStore line is about
SQLITE_LEVELS = ("FULL", "NORMAL", "OFF")
EVENTS_PER_ACTIVITY = 3  # the replay part's history: decision, scheduled, completed
GROUPS = (10, 100)


# -- ceilings -------------------------------------------------------------------------------


def _tempdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="tpp-bench-limits-")


def file_appends(
    calls: int, per_call: int, sync: Callable[[int], None], repeat: int
) -> list[float]:
    """Records/s of ``calls`` writes of ``per_call`` records, each write followed by ``sync``."""
    chunk = RECORD * per_call
    out = []
    for rep in range(repeat + 1):  # the first is a warm-up
        with _tempdir() as tmp:
            fd = os.open(pathlib.Path(tmp) / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                sync(fd)  # the file exists on disk before the clock starts
                t0 = time.perf_counter()
                for _ in range(calls):
                    os.write(fd, chunk)
                    sync(fd)
                elapsed = time.perf_counter() - t0
            finally:
                os.close(fd)
        if rep:
            out.append(calls * per_call / elapsed)
    return out


def sqlite_commits(
    commits: int, rows: int, synchronous: str, repeat: int, journal: str = "WAL"
) -> list[float]:
    """Rows/s of ``commits`` transactions of ``rows`` 200-byte rows each."""
    params = [(RECORD,)] * rows
    out = []
    for rep in range(repeat + 1):
        with _tempdir() as tmp:
            conn = sqlite3.connect(pathlib.Path(tmp) / "t.db", isolation_level=None)
            try:
                mode = conn.execute(f"PRAGMA journal_mode={journal}").fetchone()[0]
                assert mode.upper() == journal, mode
                conn.execute(f"PRAGMA synchronous={synchronous}")
                conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
                t0 = time.perf_counter()
                for _ in range(commits):
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany("INSERT INTO t (body) VALUES (?)", params)
                    conn.execute("COMMIT")
                elapsed = time.perf_counter() - t0
            finally:
                conn.close()
        if rep:
            out.append(commits * rows / elapsed)
    return out


def _fsync_name() -> str:
    return "fdatasync" if hasattr(os, "fdatasync") else "fsync"


def _fdatasync(fd: int) -> None:
    (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(fd)


@dataclass
class Sizes:
    appends: int
    group_calls: int
    commits: int
    history_activities: int
    store_appends: int
    e2e_wide: tuple[int, int]
    e2e_long: int


FULL_SIZES = Sizes(1000, 200, 1000, 10_000, 500, (500, 10), 1000)
QUICK_SIZES = Sizes(20, 5, 20, 200, 20, (10, 3), 20)


def ceilings(sizes: Sizes, repeat: int, advance: Callable[[], None]) -> dict[str, dict[str, Any]]:
    """Every ceiling row, by a short key."""
    sync = _fsync_name()
    out: dict[str, dict[str, Any]] = {}

    def add(key: str, name: str, unit: str, values: list[float], **extra: Any) -> None:
        out[key] = c.summary(f"ceiling: {name}", unit, values, **extra)
        advance()

    add(
        "fdatasync",
        f"{sync}'d 200 B appends",
        "appends/s",
        file_appends(sizes.appends, 1, _fdatasync, repeat),
        records_per_sync=1,
    )
    add(
        "fsync",
        "fsync'd 200 B appends",
        "appends/s",
        file_appends(sizes.appends, 1, os.fsync, repeat),
        records_per_sync=1,
    )
    for group in GROUPS:
        add(
            f"fdatasync x{group}",
            f"200 B records, {group} per {sync}",
            "records/s",
            file_appends(sizes.group_calls, group, _fdatasync, repeat),
            records_per_sync=group,
        )
    for level in SQLITE_LEVELS:
        add(
            f"sqlite {level}",
            f"SQLite WAL commits, {level}",
            "commits/s",
            sqlite_commits(sizes.commits, 1, level, repeat),
            rows_per_commit=1,
        )
    for group in GROUPS:
        add(
            f"sqlite FULL x{group}",
            f"SQLite WAL FULL, {group} rows per commit",
            "rows/s",
            sqlite_commits(sizes.group_calls, group, "FULL", repeat),
            rows_per_commit=group,
        )
    add(
        "sqlite DELETE FULL",
        "SQLite rollback-journal commits, FULL",
        "commits/s",
        sqlite_commits(sizes.commits, 1, "FULL", repeat, journal="DELETE"),
        rows_per_commit=1,
    )
    history = replay.build_history(sizes.history_activities)
    n = len(history)
    as_json = encode_history(history)
    as_msgpack = encode_history(history, format="msgpack")
    add(
        "decode json",
        "msgspec decode, JSON",
        "events/s",
        [n / t for t in c.measure(lambda: decode_history(as_json), repeat)],
        events=n,
    )
    add(
        "decode msgpack",
        "msgspec decode, msgpack",
        "events/s",
        [n / t for t in c.measure(lambda: decode_history(as_msgpack, format="msgpack"), repeat)],
        events=n,
    )
    add(
        "resumes",
        "bare generator resumes",
        "resumes/s",
        replay.bare_generator_rate(20 * n, repeat, prebuilt=False),
    )
    return out


# -- Temporal++ figures ---------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    unit: str
    median: float
    low: float
    high: float
    source: str
    samples: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "name": f"figure: {self.name}",
            "unit": self.unit,
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "repetitions": len(self.samples),
            "samples": self.samples,
            "source": self.source,
        }


def _from_row(name: str, row: dict[str, Any], source: str, scale: float = 1.0) -> Figure:
    return Figure(
        name,
        row["unit"],
        row["median"] * scale,
        row["min"] * scale,
        row["max"] * scale,
        source,
        [v * scale for v in row["samples"]],
    )


def _from_times(name: str, unit: str, rates: list[float], source: str) -> Figure:
    return Figure(name, unit, statistics.median(rates), min(rates), max(rates), source, rates)


def _per_second(name: str, row: dict[str, Any], source: str) -> Figure:
    """A us/activity row as activities/s (its min becomes the max)."""
    rates = [1e6 / v for v in row["samples"]]
    return _from_times(name, "activities/s", rates, source)


class Figures:
    """Temporal++'s figures: from this run's JSON results when they fit, else measured here."""

    def __init__(
        self, directory: pathlib.Path, sizes: Sizes, repeat: int, quick: bool, fresh: bool
    ) -> None:
        self.directory, self.sizes, self.repeat = directory, sizes, repeat
        self.quick, self.fresh = quick, fresh
        self._history: list[Any] | None = None

    def _doc(self, part: str, **params: Any) -> tuple[dict[str, Any], str, dict[str, Any]] | None:
        """(rows by name, where they came from, parameters) of a fitting result, or None."""
        if self.fresh:
            return None
        if part.startswith("e2e-"):  # e2e-<store>-latest.json holds only its last level
            doc = c.e2e_runs(self.directory, self.quick).get(
                (part.removeprefix("e2e-"), params.get("durability", ""))
            )
        else:
            doc = c.latest(part, self.directory)
        if doc is None or not c.this_run(doc, self.quick):
            return None
        rows = {r["name"]: r for r in doc["results"] if "median" in r}
        return rows, f"{doc['benchmark']} results of {doc['timestamp'][:19]}Z", doc["parameters"]

    def history(self) -> list[Any]:
        if self._history is None:
            self._history = replay.build_history(self.sizes.history_activities)
        return self._history

    def replay(self) -> list[Figure]:
        found = self._doc("replay")
        names = {
            "scratch": "replay from scratch (decoded events)",
            "json": "decode JSON + replay",
            "msgpack": "decode msgpack + replay",
        }
        if found is not None and all(n in found[0] for n in names.values()):
            rows, source, _ = found
            return [_from_row(name, rows[name], source) for name in names.values()]
        events = self.history()
        n = len(events)
        as_json = encode_history(events)
        as_msgpack = encode_history(events, format="msgpack")
        runs: dict[str, Callable[[], None]] = {
            "scratch": lambda: replay.replay_from_scratch(events),
            "json": lambda: replay.replay_from_scratch(decode_history(as_json)),
            "msgpack": lambda: replay.replay_from_scratch(
                decode_history(as_msgpack, format="msgpack")
            ),
        }
        return [
            _from_times(
                names[key],
                "events/s",
                [n / t for t in c.measure(run, self.repeat)],
                f"measured here ({n:,} events)",
            )
            for key, run in runs.items()
        ]

    def store_appends(self, label: str) -> Figure:
        name = f"{label}: single appends"
        found = self._doc("stores")
        if found is not None and name in found[0]:
            return _from_row(name, found[0][name], found[1])
        opener = dict(store_bench.backends())[label]
        single = store_bench.single_appends(opener, self.sizes.store_appends, self.repeat)
        rates = [s[2] for s in single]
        return _from_times(
            name, "appends/s", rates, f"measured here ({self.sizes.store_appends} appends)"
        )

    def e2e(self, store: str) -> tuple[Figure, Figure]:
        """(the wide workload, one long workflow) end to end on ``store`` (durability fsync)."""
        n, k = self.sizes.e2e_wide
        long_k = self.sizes.e2e_long
        label = "memory" if store == "memory" else f"{store} fsync"
        wide_name = f"e2e {label}: {n}x{k} activities"
        long_name = f"e2e {label}: 1x{long_k} activities"
        params: dict[str, Any] = {} if store == "memory" else {"durability": "fsync"}
        found = self._doc(f"e2e-{store}", **params)
        if found is not None:  # its first workload and its long workflow, at its sizes
            rows, source, doc_params = found
            (n_, k_), long_ = doc_params["workloads"][0], doc_params["long"]
            wide = rows.get(f"{n_}x{k_} activities")
            long = rows.get(f"1x{long_} live cache")
            if wide is not None and long is not None:
                return (
                    _from_row(f"e2e {label}: {n_}x{k_} activities", wide, source),
                    _per_second(f"e2e {label}: 1x{long_} activities", long, source),
                )
        new_url = e2e.fresh_urls(store, "fsync")

        def open_store() -> stores.Store:
            return stores.open(new_url())

        wide_s, _ = e2e.throughput(open_store, n, k, self.repeat)
        long_s, _ = e2e.throughput(open_store, 1, long_k, self.repeat)
        return (
            _from_times(wide_name, "activities/s", [n * k / s for s in wide_s], "measured here"),
            _from_times(long_name, "activities/s", [long_k / s for s in long_s], "measured here"),
        )


# -- fractions ------------------------------------------------------------------------------


def fraction(figure: Figure, ceiling: dict[str, Any], scale: float, note: str) -> dict[str, Any]:
    """``figure * scale`` over ``ceiling``: median over median, min and max over the extremes."""
    return {
        "name": f"fraction: {figure.name} / {ceiling['name'].removeprefix('ceiling: ')}",
        "unit": "fraction",
        "median": figure.median * scale / ceiling["median"],
        "min": figure.low * scale / ceiling["max"],
        "max": figure.high * scale / ceiling["min"],
        "figure": figure.name,
        "figure_unit": figure.unit,
        "figure_median": figure.median,
        "figure_source": figure.source,
        "scale": scale,
        "ceiling": ceiling["name"],
        "ceiling_median": ceiling["median"],
        "note": note,
    }


def fractions(
    ceil: dict[str, dict[str, Any]], figures: Figures
) -> tuple[list[Figure], list[dict[str, Any]]]:
    """The figures used, and one fraction row per (figure, the ceiling that bounds it)."""
    scratch, json_replay, msgpack_replay = figures.replay()
    sqlite_appends = figures.store_appends("sqlite fsync")
    file_appends = figures.store_appends("file fsync")
    mem_wide, mem_long = figures.e2e("memory")
    sqlite_wide, sqlite_long = figures.e2e("sqlite")
    file_wide, file_long = figures.e2e("file")
    group = "above 1: the worker group-commits many runs' batches per"
    kept = "the share of in-memory speed kept with fsync"
    out = [
        fraction(
            scratch,
            ceil["resumes"],
            1 / EVENTS_PER_ACTIVITY,
            "per activity: 3 events and one generator resume",
        ),
        fraction(json_replay, ceil["decode json"], 1, "the decoding is part of the work"),
        fraction(msgpack_replay, ceil["decode msgpack"], 1, "the decoding is part of the work"),
        fraction(sqlite_appends, ceil["sqlite FULL"], 1, "one append is one WAL commit"),
        fraction(file_appends, ceil["fdatasync"], 1, "one append is one fdatasync of its log"),
        fraction(mem_wide, ceil["resumes"], 1, "CPU-bound; a resume is a small part"),
        fraction(sqlite_long, ceil["sqlite FULL"], 1, "one workflow: a WAL commit per activity"),
        fraction(sqlite_wide, ceil["sqlite FULL"], 1, f"{group} WAL commit"),
        fraction(sqlite_wide, _as_ceiling(mem_wide), 1, kept),
        fraction(file_long, ceil["fdatasync"], 1, "one workflow: an fdatasync per activity"),
        fraction(file_wide, ceil["fdatasync"], 1, "each run's log is synced on its own"),
        fraction(file_wide, _as_ceiling(mem_wide), 1, kept),
    ]
    used = [
        scratch,
        json_replay,
        msgpack_replay,
        sqlite_appends,
        file_appends,
        mem_wide,
        mem_long,
        sqlite_wide,
        sqlite_long,
        file_wide,
        file_long,
    ]
    return used, out


def _as_ceiling(figure: Figure) -> dict[str, Any]:
    return {
        "name": f"ceiling: {figure.name}",
        "median": figure.median,
        "min": figure.low,
        "max": figure.high,
    }


# -- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = c.parser("The machine's ceilings, and Temporal++'s figures as fractions of them.")
    p.add_argument(
        "--fresh", action="store_true", help="measure every Temporal++ figure here, ignoring JSON"
    )
    args = p.parse_args(argv)
    repeat = max(5, args.repeat)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    count = 6 + 2 * len(GROUPS) + len(SQLITE_LEVELS)  # the ceilings measured below
    with c.progress("limits: ceilings", count) as advance:
        ceil = ceilings(sizes, repeat, advance)
    ceiling_rows = [
        [r["name"].removeprefix("ceiling: "), c.fmt(r["median"]), c.fmt(r["min"]), r["unit"]]
        for r in ceil.values()
    ]
    print(
        c.table(
            f"The machine's ceilings (median of {repeat}; a temporary directory)",
            ["ceiling", "median", "min", "unit"],
            ceiling_rows,
        )
    )
    figures = Figures(args.results_dir, sizes, repeat, args.quick, args.fresh)
    used, fracs = fractions(ceil, figures)
    print()
    print(
        c.table(
            "Temporal++ figures as fractions of the ceiling that bounds them",
            ["figure", "median", "unit", "ceiling", "fraction", "source"],
            [
                [
                    f["figure"],
                    c.fmt(f["figure_median"]),
                    f["figure_unit"] if f["scale"] == 1 else f"{f['figure_unit']} / 3",
                    f["ceiling"].removeprefix("ceiling: "),
                    c.fmt(f["median"]),
                    f["figure_source"],
                ]
                for f in fracs
            ],
        )
    )
    params = {
        "quick": args.quick,
        "repeat": repeat,
        "fresh": args.fresh,
        "record_bytes": len(RECORD),
        "sizes": sizes.__dict__,
        "sync": _fsync_name(),
        "tempdir": tempfile.gettempdir(),
    }
    results = [*ceil.values(), *(f.row() for f in used), *fracs]
    path = c.write_results("limits", params, results, args.results_dir)
    _plots.ratios(
        args.results_dir,
        "limits-fractions",
        "Temporal++ figures over the machine's ceilings (log scale)",
        [
            (f"{f['figure']}\n / {f['ceiling'].removeprefix('ceiling: ')}", f["median"], "")
            for f in fracs
        ],
    )
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
