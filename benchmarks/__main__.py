"""``python -m benchmarks [--quick] [--results-dir DIR] [PART ...]``: run benchmark parts.

Each part is a module ``benchmarks.<name>`` with ``main(argv) -> int`` that takes
the common options (``--quick``, ``--repeat``, ``--results-dir``).  ``PARTS``
lists them in running order; a listed part whose module does not exist yet is
skipped, so new parts register by adding their module (and their name here).

The whole suite runs ``e2e`` once per store and durability level
(``--e2e-stores``), and ends with one summary table of the headline figures
against their goals, read back from the JSON results of this run (``--summary``
prints it from the results already there, running nothing).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pathlib
import sys
from datetime import UTC, datetime
from typing import Any

from . import _common as c

PARTS = ("replay", "stores", "e2e", "cas", "peers", "limits")
E2E_STORES = "memory,sqlite:fsync,sqlite:flush,sqlite:none,file:fsync,file:flush,file:none"


def available() -> list[str]:
    return [name for name in PARTS if importlib.util.find_spec(f"benchmarks.{name}") is not None]


def main(argv: list[str] | None = None) -> int:
    parts = available()
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=f"Run benchmark parts (available: {', '.join(parts)}).",
    )
    p.add_argument("parts", nargs="*", metavar="PART", help="parts to run (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--repeat", type=int, help="repetitions per measurement")
    p.add_argument("--results-dir", help="where the JSON results go")
    p.add_argument(
        "--e2e-stores",
        default=E2E_STORES,
        help=f"the e2e part's runs, STORE[:DURABILITY] comma-separated (default {E2E_STORES})",
    )
    p.add_argument("--summary", action="store_true", help="print the summary only; run nothing")
    args = p.parse_args(argv)
    directory = pathlib.Path(args.results_dir) if args.results_dir else c.default_results_dir()
    if args.summary:
        print(summary(directory, quick=args.quick))
        return 0
    unknown = [name for name in args.parts if name not in parts]
    if unknown:
        p.error(f"unknown or unavailable part(s) {', '.join(unknown)}; available: {parts}")
    common: list[str] = []
    if args.quick:
        common.append("--quick")
    if args.repeat is not None:
        common += ["--repeat", str(args.repeat)]
    if args.results_dir is not None:
        common += ["--results-dir", args.results_dir]
    # every part of this run tags its results, and reads back only this run's
    before = os.environ.get(c.RUN_ENV)
    os.environ[c.RUN_ENV] = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    try:
        status = 0
        for name in args.parts or parts:
            module = importlib.import_module(f"benchmarks.{name}")
            e2e_runs = [_e2e_args(v) for v in args.e2e_stores.split(",")]
            for extra in e2e_runs if name == "e2e" else [[]]:
                print(f"== {' '.join([name, *extra])} ==", flush=True)
                status = max(status, int(module.main([*common, *extra])))
                print(flush=True)
        print(summary(directory, quick=args.quick))
    finally:  # called in-process (a test, a notebook): leave the environment as it was
        if before is None:
            os.environ.pop(c.RUN_ENV, None)
        else:
            os.environ[c.RUN_ENV] = before
    return status


def _e2e_args(variant: str) -> list[str]:
    store, _, level = variant.strip().partition(":")
    return ["--store", store, *(["--durability", level] if level else [])]


# -- the summary: headline figures of this run against their goals ---------------------------


def _row(doc: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    if doc is None:
        return None
    for row in doc["results"]:
        if row["name"] == name and "median" in row:
            found: dict[str, Any] = row
            return found
    return None


def _store_order(item: tuple[tuple[str, str], Any]) -> tuple[int, str, int]:
    (store, level), _ = item
    stores, levels = ("memory", "sqlite", "file"), ("", "fsync", "flush", "none")
    rank = stores.index(store) if store in stores else len(stores)
    return rank, store, levels.index(level) if level in levels else len(levels)


def summary(directory: pathlib.Path, quick: bool) -> str:
    """One table of the headline figures, from this commit's results under ``directory``."""

    def doc(part: str) -> dict[str, Any] | None:
        found = c.latest(part, directory)
        return found if found is not None and c.this_run(found, quick) else None

    rows: list[list[str]] = []

    def add(what: str, row: dict[str, Any] | None, goal: str = "", met: bool | None = None) -> None:
        if row is None:
            rows.append([what, "not run", "", goal, ""])
            return
        verdict = "" if met is None or quick else ("met" if met else "MISSED")
        spread = f"{c.fmt(row['min'])}..{c.fmt(row['max'])}"
        rows.append([what, f"{c.fmt(row['median'])} {row['unit']}", spread, goal, verdict])

    replay = doc("replay")
    scratch = _row(replay, "replay from scratch (decoded events)")
    add(
        "replay from scratch, decoded events",
        scratch,
        ">= 1,000,000 events/s",
        None if scratch is None else scratch["median"] >= 1e6,
    )
    add("decode msgpack + replay", _row(replay, "decode msgpack + replay"))
    lengths = [] if replay is None else replay["parameters"].get("incremental_lengths") or []
    if replay is not None and lengths:
        longest = max(lengths)
        add(
            f"live path, history of {longest:,} activities",
            _row(replay, f"incremental, history of {longest:,} activities"),
        )
    for (store, level), e2e in sorted(c.e2e_runs(directory, quick).items(), key=_store_order):
        n, k = e2e["parameters"]["workloads"][0]
        row = _row(e2e, f"{n}x{k} activities")
        label = store if not level else f"{store} ({level})"
        goal, met = "", None
        if store == "memory" and row is not None:
            goal, met = ">= 20,000 activities/s", row["median"] >= 20_000
        add(f"end to end {n}x{k}, {label}", row, goal, met)
    stores_doc = doc("stores")
    for label in ("memory", "sqlite fsync", "file fsync"):
        add(f"append latency median, {label}", _row(stores_doc, f"{label}: append latency median"))
    peers = doc("peers")
    if peers is not None:
        for row in peers["results"]:
            if row["name"].startswith("ratio") and (
                row.get("workload") == peers["parameters"]["headline"]
                or row["name"].startswith("ratio replay")
            ):
                if "median" not in row:
                    rows.append([row["name"].removeprefix("ratio "), "unavailable", "", "", ""])
                    continue
                goal = f">= {row['goal']:g}x" if "goal" in row else ""
                add(row["name"].removeprefix("ratio "), row, goal, row.get("met"))
    else:
        rows.append(["Temporal++ / peers", "not run", "", "", ""])
    limits = doc("limits")
    if limits is not None:
        for row in limits["results"]:
            if row["name"].startswith("fraction: "):
                add(row["name"].removeprefix("fraction: "), row)
    title = (
        f"Summary ({'quick' if quick else 'full'} run {os.environ.get(c.RUN_ENV, '')}, "
        f"commit {c.versions()['git'] or '?'}; "
        f"medians, min..max; from {directory})"
    )
    return c.table(title, ["figure", "median", "min..max", "goal", ""], rows)


if __name__ == "__main__":
    sys.exit(main())
