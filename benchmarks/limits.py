"""The machine's own ceilings, and Temporal++'s figures as fractions of them.

``python -m benchmarks.limits [--quick] [--repeat N] [--results-dir DIR]``

Ceilings, measured here in a temporary directory (the file system the other
parts' stores use):

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

Then each Temporal++ figure over the ceiling that bounds it.  A figure and its
ceiling are measured in turn, repetition by repetition (ceiling, figure,
ceiling, figure, ...: ``SERIES``), and the fraction is the median of the one
over the median of the other, so both come from the same minutes: on a machine
whose speed drifts (other load, a disk whose fsync rate moves tenfold within
the hour) a ceiling measured apart from its figure would say little.  Its min
and max are those of the per-repetition fractions.  A ceiling that bounds
several figures is measured with each; the ceilings table pools all its
samples.  The ceilings that bound no figure are measured on their own first.
``--repeat`` sets the repetitions of each (at least 5).
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
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
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

Sampler = Callable[[], float]  # one repetition: a rate


# -- ceilings -------------------------------------------------------------------------------


def _tempdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="tpp-bench-limits-")


def file_append_rate(calls: int, per_call: int, sync: Callable[[int], None]) -> float:
    """Records/s of ``calls`` writes of ``per_call`` records, each followed by ``sync``."""
    chunk = RECORD * per_call
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
    return calls * per_call / elapsed


def file_appends(
    calls: int, per_call: int, sync: Callable[[int], None], repeat: int
) -> list[float]:
    """:func:`file_append_rate`, ``repeat`` times after a warm-up."""
    return _repeated(lambda: file_append_rate(calls, per_call, sync), repeat)


def sqlite_commit_rate(commits: int, rows: int, synchronous: str, journal: str = "WAL") -> float:
    """Rows/s of ``commits`` transactions of ``rows`` 200-byte rows each, in a fresh database."""
    params = [(RECORD,)] * rows
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
    return commits * rows / elapsed


def sqlite_commits(
    commits: int, rows: int, synchronous: str, repeat: int, journal: str = "WAL"
) -> list[float]:
    """:func:`sqlite_commit_rate`, ``repeat`` times after a warm-up."""
    return _repeated(lambda: sqlite_commit_rate(commits, rows, synchronous, journal), repeat)


def _repeated(sample: Sampler, repeat: int) -> list[float]:
    sample()  # a warm-up
    return [sample() for _ in range(repeat)]


def _e2e_rate(open_store: Callable[[], stores.Store], n: int, k: int) -> float:
    """Activities/s of one worker running ``n`` x ``k`` activities on a fresh store."""
    return n * k / e2e.run_once(open_store, n, k)


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


@dataclass(frozen=True)
class Measure:
    """A ceiling or a figure: its row name, unit, and how to take one repetition of it."""

    name: str
    unit: str
    sample: Sampler
    ceiling: bool  # a machine ceiling (else a Temporal++ figure)


def measures(sizes: Sizes) -> dict[str, Measure]:
    """Every ceiling and figure, by a short key."""
    sync = _fsync_name()
    history = replay.build_history(sizes.history_activities)
    n = len(history)
    as_json = encode_history(history)
    as_msgpack = encode_history(history, format="msgpack")
    resumes = 20 * n
    run_generator = replay.bare_generator(resumes, prebuilt=False)
    found: dict[str, Measure] = {}

    def ceiling(key: str, name: str, unit: str, sample: Sampler) -> None:
        found[key] = Measure(f"ceiling: {name}", unit, sample, ceiling=True)

    def figure(key: str, name: str, unit: str, sample: Sampler) -> None:
        found[key] = Measure(f"figure: {name}", unit, sample, ceiling=False)

    def rate(count: int, run: Callable[[], object]) -> Sampler:
        return lambda: count / c.timed(run)

    ceiling(
        "fdatasync",
        f"{sync}'d 200 B appends",
        "appends/s",
        lambda: file_append_rate(sizes.appends, 1, _fdatasync),
    )
    ceiling(
        "fsync",
        "fsync'd 200 B appends",
        "appends/s",
        lambda: file_append_rate(sizes.appends, 1, os.fsync),
    )
    for group in GROUPS:
        ceiling(
            f"fdatasync x{group}",
            f"200 B records, {group} per {sync}",
            "records/s",
            partial(file_append_rate, sizes.group_calls, group, _fdatasync),
        )
    for level in SQLITE_LEVELS:
        ceiling(
            f"sqlite {level}",
            f"SQLite WAL commits, {level}",
            "commits/s",
            partial(sqlite_commit_rate, sizes.commits, 1, level),
        )
    for group in GROUPS:
        ceiling(
            f"sqlite FULL x{group}",
            f"SQLite WAL FULL, {group} rows per commit",
            "rows/s",
            partial(sqlite_commit_rate, sizes.group_calls, group, "FULL"),
        )
    ceiling(
        "sqlite DELETE FULL",
        "SQLite rollback-journal commits, FULL",
        "commits/s",
        lambda: sqlite_commit_rate(sizes.commits, 1, "FULL", journal="DELETE"),
    )
    ceiling(
        "decode json", "msgspec decode, JSON", "events/s", rate(n, lambda: decode_history(as_json))
    )
    ceiling(
        "decode msgpack",
        "msgspec decode, msgpack",
        "events/s",
        rate(n, lambda: decode_history(as_msgpack, format="msgpack")),
    )
    ceiling("resumes", "bare generator resumes", "resumes/s", rate(resumes, run_generator))

    figure(
        "replay",
        "replay from scratch (decoded events)",
        "events/s",
        rate(n, lambda: replay.replay_from_scratch(history)),
    )
    figure(
        "replay json",
        "decode JSON + replay",
        "events/s",
        rate(n, lambda: replay.replay_from_scratch(decode_history(as_json))),
    )
    figure(
        "replay msgpack",
        "decode msgpack + replay",
        "events/s",
        rate(n, lambda: replay.replay_from_scratch(decode_history(as_msgpack, format="msgpack"))),
    )
    openers = dict(store_bench.backends())
    for store in ("sqlite", "file"):
        if f"{store} fsync" not in openers:  # the file store may not have landed
            continue
        figure(
            f"{store} appends",
            f"{store} fsync: single appends",
            "appends/s",
            partial(store_bench.single_append_rate, openers[f"{store} fsync"], sizes.store_appends),
        )
    wide_n, wide_k = sizes.e2e_wide
    long_k = sizes.e2e_long
    for store in ("memory", "sqlite", "file"):
        label = "memory" if store == "memory" else f"{store} fsync"
        new_url = e2e.fresh_urls(store, "fsync")

        def open_store(new_url: Callable[[], str] = new_url) -> stores.Store:
            return stores.open(new_url())

        figure(
            f"{store} wide",
            f"e2e {label}: {wide_n}x{wide_k} activities",
            "activities/s",
            partial(_e2e_rate, open_store, wide_n, wide_k),
        )
        figure(
            f"{store} long",
            f"e2e {label}: 1x{long_k} activities",
            "activities/s",
            partial(_e2e_rate, open_store, 1, long_k),
        )
    return found


# -- series: a ceiling and the figures it bounds, in turn ------------------------------------


@dataclass(frozen=True)
class Fraction:
    figure: str  # a measure's key
    over: str  # the key of the ceiling (or of a figure taken as one) it is a fraction of
    scale: float
    note: str


@dataclass(frozen=True)
class Series:
    """Measures taken in turn, repetition by repetition, and the fractions among them."""

    keys: tuple[str, ...]
    fractions: tuple[Fraction, ...]


_GROUP = "above 1: the worker group-commits many runs' batches per"
_KEPT = "the share of in-memory speed kept with fsync"
SERIES: tuple[Series, ...] = (
    Series(
        ("resumes", "replay"),
        (
            Fraction(
                "replay",
                "resumes",
                1 / EVENTS_PER_ACTIVITY,
                "per activity: 3 events and one generator resume",
            ),
        ),
    ),
    Series(
        ("decode json", "replay json"),
        (Fraction("replay json", "decode json", 1, "the decoding is part of the work"),),
    ),
    Series(
        ("decode msgpack", "replay msgpack"),
        (Fraction("replay msgpack", "decode msgpack", 1, "the decoding is part of the work"),),
    ),
    Series(
        ("sqlite FULL", "sqlite appends"),
        (Fraction("sqlite appends", "sqlite FULL", 1, "one append is one WAL commit"),),
    ),
    Series(
        ("fdatasync", "file appends"),
        (Fraction("file appends", "fdatasync", 1, "one append is one fdatasync of its log"),),
    ),
    Series(
        ("resumes", "memory wide"),
        (Fraction("memory wide", "resumes", 1, "CPU-bound; a resume is a small part"),),
    ),
    Series(
        ("sqlite FULL", "sqlite long"),
        (Fraction("sqlite long", "sqlite FULL", 1, "one workflow: a WAL commit per activity"),),
    ),
    Series(
        ("sqlite FULL", "sqlite wide", "memory wide"),
        (
            Fraction("sqlite wide", "sqlite FULL", 1, f"{_GROUP} WAL commit"),
            Fraction("sqlite wide", "memory wide", 1, _KEPT),
        ),
    ),
    Series(
        ("fdatasync", "file long"),
        (Fraction("file long", "fdatasync", 1, "one workflow: an fdatasync per activity"),),
    ),
    Series(
        ("fdatasync", "file wide", "memory wide"),
        (
            Fraction("file wide", "fdatasync", 1, "each run's log is synced on its own"),
            Fraction("file wide", "memory wide", 1, _KEPT),
        ),
    ),
)


def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")


def fraction(
    figure: Measure,
    over: Measure,
    figure_samples: list[float],
    over_samples: list[float],
    spec: Fraction,
    window: str,
) -> dict[str, Any]:
    """``figure * scale`` over ``over``, from samples taken in turn.

    The median is the median of the figure over the median of the ceiling (the two
    from the same minutes); min and max are those of the per-repetition fractions.
    """
    scale = spec.scale
    per_rep = [f * scale / o for f, o in zip(figure_samples, over_samples, strict=True)]
    figure_name = figure.name.removeprefix("figure: ")
    over_name = over.name.removeprefix("ceiling: ").removeprefix("figure: ")
    return {
        "name": f"fraction: {figure_name} / {over_name}",
        "unit": "fraction",
        "median": statistics.median(figure_samples) * scale / statistics.median(over_samples),
        "min": min(per_rep),
        "max": max(per_rep),
        "paired_median": statistics.median(per_rep),
        "repetitions": len(per_rep),
        "samples": per_rep,
        "figure": figure_name,
        "figure_unit": figure.unit,
        "figure_median": statistics.median(figure_samples),
        "figure_source": f"measured here, in turn with its ceiling, {window}",
        "scale": scale,
        "ceiling": f"ceiling: {over_name}",
        "ceiling_unit": over.unit,
        "ceiling_median": statistics.median(over_samples),
        "window": window,
        "note": spec.note,
    }


def run_series(
    found: dict[str, Measure], repeat: int, advance: Callable[[], None]
) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
    """Every series, in turn within each; (the samples of every measure, pooled; fractions)."""
    pooled: dict[str, list[float]] = {}
    fracs: list[dict[str, Any]] = []
    for series in SERIES:
        keys = [k for k in series.keys if k in found]
        if len(keys) < 2:
            advance()
            continue
        start = _now()
        samples = dict(zip(keys, c.alternate([found[k].sample for k in keys], repeat), strict=True))
        window = f"{start}-{_now()} UTC"
        for key, values in samples.items():
            pooled.setdefault(key, []).extend(values)
        for spec in series.fractions:
            if spec.figure in samples and spec.over in samples:
                fracs.append(
                    fraction(
                        found[spec.figure],
                        found[spec.over],
                        samples[spec.figure],
                        samples[spec.over],
                        spec,
                        window,
                    )
                )
        advance()
    return pooled, fracs


# -- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = c.parser("The machine's ceilings, and Temporal++'s figures as fractions of them.")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="accepted for old scripts: every figure is always measured here, next to its ceiling",
    )
    args = p.parse_args(argv)
    repeat = max(5, args.repeat)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    found = measures(sizes)
    in_series = {k for s in SERIES for k in s.keys}
    alone = [k for k, m in found.items() if m.ceiling and k not in in_series]
    samples: dict[str, list[float]] = {}
    with c.progress("limits", len(alone) + len(SERIES)) as advance:
        for key in alone:
            samples[key] = _repeated(found[key].sample, repeat)
            advance()
        pooled, fracs = run_series(found, repeat, advance)
    samples.update(pooled)
    rows = {
        key: c.summary(found[key].name, found[key].unit, samples[key])
        for key in found  # in the order measures() lists them
        if key in samples
    }
    ceilings = [r for r in rows.values() if r["name"].startswith("ceiling: ")]
    figures = [r for r in rows.values() if r["name"].startswith("figure: ")]
    print(
        c.table(
            f"The machine's ceilings (median of {repeat} or more; a temporary directory)",
            ["ceiling", "median", "min", "unit"],
            [
                [
                    r["name"].removeprefix("ceiling: "),
                    c.fmt(r["median"]),
                    c.fmt(r["min"]),
                    r["unit"],
                ]
                for r in ceilings
            ],
        )
    )
    print()
    print(
        c.table(
            "Temporal++ figures as fractions of the ceiling that bounds them "
            "(each measured in turn with its ceiling)",
            ["figure", "median", "unit", "ceiling", "its median", "fraction", "min..max", "when"],
            [
                [
                    f["figure"],
                    c.fmt(f["figure_median"]),
                    f["figure_unit"] if f["scale"] == 1 else f"{f['figure_unit']} / 3",
                    f["ceiling"].removeprefix("ceiling: "),
                    c.fmt(f["ceiling_median"]),
                    c.fmt(f["median"]),
                    f"{c.fmt(f['min'])}..{c.fmt(f['max'])}",
                    f["window"],
                ]
                for f in fracs
            ],
        )
    )
    params = {
        "quick": args.quick,
        "repeat": repeat,
        "interleaved": True,
        "record_bytes": len(RECORD),
        "sizes": sizes.__dict__,
        "sync": _fsync_name(),
        "tempdir": tempfile.gettempdir(),
    }
    for r in figures:
        r["source"] = "measured here, in turn with its ceiling"
    results = [*ceilings, *figures, *fracs]
    path = c.write_results("limits", params, results, args.results_dir)
    _plots.ratios(
        args.results_dir,
        "limits-fractions",
        "Temporal++ figures over the machine's ceilings, each measured in turn with its "
        "ceiling (log scale)",
        [
            (f"{f['figure']}\n / {f['ceiling'].removeprefix('ceiling: ')}", f["median"], "")
            for f in fracs
        ],
    )
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
