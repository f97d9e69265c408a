"""What every benchmark part shares: options, timing, machine info, tables, JSON results."""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
RUN_ENV = "TPP_BENCH_RUN"  # set by ``python -m benchmarks``: the id of one whole-suite run
ROOT = pathlib.Path(__file__).resolve().parent.parent


def default_results_dir() -> pathlib.Path:
    """``$TPP_BENCH_RESULTS``, else ``benchmarks/results``."""
    return pathlib.Path(os.environ.get("TPP_BENCH_RESULTS", RESULTS_DIR))


def parser(description: str) -> argparse.ArgumentParser:
    """The options every part takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of a second")
    p.add_argument("--repeat", type=int, default=7, help="repetitions per measurement (at least 5)")
    p.add_argument(
        "--results-dir",
        type=pathlib.Path,
        default=default_results_dir(),
        help="where the JSON results go (default benchmarks/results, or $TPP_BENCH_RESULTS)",
    )
    return p


def measure(run: Callable[[], Any], repeat: int) -> list[float]:
    """Seconds taken by ``run()``, ``repeat`` times, after one untimed warm-up run."""
    run()
    samples = []
    for _ in range(repeat):
        gc.collect()  # start each repetition from the same heap; GC stays on, as in use
        t0 = time.perf_counter()
        run()
        samples.append(time.perf_counter() - t0)
    return samples


def timed(run: Callable[[], Any]) -> float:
    """Seconds taken by one ``run()``, from a collected heap (as in ``measure``)."""
    gc.collect()
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def alternate(sides: Sequence[Callable[[], float]], repeat: int) -> list[list[float]]:
    """``repeat`` samples of each side, taken in turn: a, b, a, b, ... (after one warm-up each).

    Each call of a side takes one sample (a rate, or seconds).  Two figures measured
    this way share the machine of the same minutes, so their ratio holds on a machine
    whose speed drifts (other load, a disk whose fsync rate moves), where figures
    measured one after the other, minutes apart, would not.
    """
    for side in sides:
        side()
    out: list[list[float]] = [[] for _ in sides]
    for _ in range(repeat):
        for samples, side in zip(out, sides, strict=True):
            samples.append(side())
    return out


def measure_with_setup(
    setup: Callable[[], Any], run: Callable[[Any], Any], repeat: int
) -> list[float]:
    """Seconds taken by ``run(setup())``, timing only ``run``, ``repeat`` times."""
    samples = []
    for _ in range(repeat):
        state = setup()
        gc.collect()
        t0 = time.perf_counter()
        run(state)
        samples.append(time.perf_counter() - t0)
    return samples


def summary(name: str, unit: str, values: Sequence[float], **extra: Any) -> dict[str, Any]:
    """One result row: median, min and max of the per-repetition values."""
    return {
        "name": name,
        "unit": unit,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "repetitions": len(values),
        "samples": list(values),
        **extra,
    }


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
    }


def versions() -> dict[str, str]:
    import msgspec

    import engine

    return {"temporalpp": engine.__version__, "msgspec": msgspec.__version__, "git": _git_commit()}


def fmt(value: float) -> str:
    """A number for a table: thousands separators, three significant figures below 100."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table (first column left-aligned, the others right-aligned)."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([title, line(headers), rule, *[line(r) for r in rows]])


def write_results(
    part: str, parameters: dict[str, Any], results: list[dict[str, Any]], directory: pathlib.Path
) -> pathlib.Path:
    """Write ``<part>-<UTC timestamp>.json`` (and ``<part>-latest.json``) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    doc = {
        "benchmark": part,
        "timestamp": now.isoformat(),
        "run": os.environ.get(RUN_ENV),
        "machine": machine(),
        "versions": versions(),
        "parameters": parameters,
        "results": results,
    }
    text = json.dumps(doc, indent=2) + "\n"
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{part}-{stamp}.json"
    n = 1
    while path.exists():  # two runs in one second keep both results
        n += 1
        path = directory / f"{part}-{stamp}-{n}.json"
    path.write_text(text)
    (directory / f"{part}-latest.json").write_text(text)
    return path


def latest(part: str, directory: pathlib.Path) -> dict[str, Any] | None:
    """The document of ``<part>-latest.json`` under ``directory``, or None."""
    try:
        doc: dict[str, Any] = json.loads((directory / f"{part}-latest.json").read_text())
    except (OSError, ValueError):
        return None
    return doc


def this_run(doc: dict[str, Any], quick: bool) -> bool:
    """Whether a results document belongs with figures being measured now.

    Within ``python -m benchmarks`` (``$TPP_BENCH_RUN`` set): written by this
    run.  Otherwise: written by this commit.  Either way with the same ``quick``.
    """
    if doc.get("parameters", {}).get("quick") != quick:
        return False
    run = os.environ.get(RUN_ENV)
    if run:
        return bool(doc.get("run") == run)
    return bool(doc.get("versions", {}).get("git") == versions()["git"])


def e2e_runs(directory: pathlib.Path, quick: bool) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest e2e result per (store, durability) under ``directory``, of this run.

    ``e2e-<store>-latest.json`` keeps one durability level; the timestamped
    files keep them all.
    """
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(directory.glob("e2e-*-2*.json")):  # timestamps sort in time order
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        params = doc.get("parameters", {})
        if not this_run(doc, quick):
            continue
        newest[str(params.get("store", "?")), str(params.get("durability") or "")] = doc
    return newest


@contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr for a long run; yields ``advance()``.

    Off (``advance`` does nothing) when stderr is not a terminal, so logs,
    pipes and the test suite see only the tables on stdout.
    """
    if not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)
