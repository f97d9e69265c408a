"""Plots of benchmark results: matplotlib PNGs beside the JSON, or a note without matplotlib.

matplotlib is optional (the ``bench`` extra).  Every function here takes a
part's results (the rows it writes to JSON) or a results directory, writes one
PNG under that directory, prints ``plot: PATH`` and returns the path; without
matplotlib it prints why it skipped and returns None, so a part never fails
for want of a plot.  Drawing runs on the Agg backend: no display is needed.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import _common as c

_NOTE = "plots skipped: matplotlib is not installed (pip install -e '.[bench]')"
_skip_noted = False


def unavailable() -> str | None:
    """Why plots cannot be drawn here, or None when they can."""
    try:
        import matplotlib
    except ImportError:
        return _NOTE
    matplotlib.use("Agg")
    return None


def write(
    directory: pathlib.Path,
    name: str,
    draw: Callable[[Any], None],
    size: tuple[float, float] = (9, 4.5),
) -> pathlib.Path | None:
    """``draw(figure)`` and save it as ``directory/<name>.png``; None (and a note) if skipped."""
    global _skip_noted
    reason = unavailable()
    if reason is not None:
        if not _skip_noted:
            print(reason)
            _skip_noted = True
        return None
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=size, layout="constrained")
    try:
        draw(fig)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.png"
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    print(f"plot: {path}")
    return path


def _rows(results: Sequence[Mapping[str, Any]], pattern: str) -> list[tuple[re.Match[str], Any]]:
    found = []
    for row in results:
        m = re.fullmatch(pattern, row["name"])
        if m:
            found.append((m, row))
    return found


Scale = Callable[[Mapping[str, Any], float], float]


def _errorbar(
    ax: Any,
    xs: Sequence[float],
    rows: Sequence[Mapping[str, Any]],
    scale: Scale = lambda _row, v: v,
    **kw: Any,
) -> None:
    """Medians joined by a line, min..max as error bars; ``scale(row, value)`` converts units."""
    med = [scale(r, r["median"]) for r in rows]
    ends = [(scale(r, r["min"]), scale(r, r["max"])) for r in rows]  # a rate's min is a time's max
    low_err = [m - min(e) for m, e in zip(med, ends, strict=True)]
    high_err = [max(e) - m for m, e in zip(med, ends, strict=True)]
    ax.errorbar(xs, med, yerr=[low_err, high_err], marker="o", capsize=3, **kw)


def _ms_per_replay(row: Mapping[str, Any], events_per_s: float) -> float:
    return 1e3 * float(row["events"]) / events_per_s


def _by_activities(
    results: Sequence[Mapping[str, Any]], pattern: str
) -> list[tuple[int, Mapping[str, Any]]]:
    """Rows whose name matches ``pattern`` (group 1: an activity count), measured, by count."""
    found = [
        (int(m.group(1).replace(",", "")), row)
        for m, row in _rows(results, pattern)
        if "median" in row
    ]
    return sorted(found, key=lambda pair: pair[0])


def replay_cost(
    directory: pathlib.Path, results: Sequence[Mapping[str, Any]], name: str = "replay-cost"
) -> pathlib.Path | None:
    """Replay from scratch (ms) and the live path (us per new event) against history length.

    Reads the replay part's rows (``replay from scratch, N activities``,
    ``incremental, history of N activities``) or the peers part's
    (``replay N activities: Temporal++`` and ``...: durabletask``).
    """
    ours = _by_activities(results, r"replay from scratch, ([\d,]+) activities") or _by_activities(
        results, r"replay ([\d,]+) activities: Temporal\+\+"
    )
    peer = _by_activities(results, r"replay ([\d,]+) activities: durabletask")
    live = _by_activities(results, r"incremental, history of ([\d,]+) activities")
    if not ours:
        return None

    def draw(fig: Any) -> None:
        axes = fig.subplots(1, 2 if live else 1)
        left = axes[0] if live else axes
        for label, series in (("Temporal++ (engine.Interpreter)", ours), ("durabletask", peer)):
            if series:
                _errorbar(
                    left,
                    [n for n, _ in series],
                    [r for _, r in series],
                    scale=_ms_per_replay,
                    label=f"{label}, {series[0][1]['events'] / series[0][0]:.0f} events/activity",
                )
        left.set(
            xscale="log",
            yscale="log",
            xlabel="history length (activities)",
            ylabel="ms per replay from scratch",
            title="Replay from scratch (a cache miss)",
        )
        left.legend(fontsize="small")
        left.grid(True, which="both", alpha=0.3)
        if live:
            right = axes[1]
            _errorbar(right, [n for n, _ in live], [r for _, r in live], color="C2")
            right.set(
                xscale="log",
                ylim=(0, None),
                xlabel="history length (activities)",
                ylabel="us per new event",
                title="Live path (cached generator): flat in length",
            )
            right.grid(True, which="both", alpha=0.3)

    return write(directory, name, draw)


def e2e_throughput(directory: pathlib.Path, quick: bool) -> pathlib.Path | None:
    """Grouped bars: activities/s per workload, for every store and durability level run.

    Reads every ``e2e-*-<timestamp>.json`` under ``directory`` of this run
    (``_common.this_run``), keeping the newest per (store, durability).
    """
    newest = c.e2e_runs(directory, quick)
    if not newest:
        return None
    order = {"memory": 0, "sqlite": 1, "file": 2}
    levels = {"fsync": 0, "flush": 1, "none": 2, "": 3}
    keys = sorted(newest, key=lambda k: (order.get(k[0], 9), k[0], levels.get(k[1], 9), k[1]))
    workloads: list[str] = []
    table: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}
    for key in keys:
        for m, row in _rows(newest[key]["results"], r"(\d+x\d+) activities"):
            if m.group(1) not in workloads:
                workloads.append(m.group(1))
            table.setdefault(key, {})[m.group(1)] = row

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        width = 0.8 / max(1, len(keys))
        for i, key in enumerate(keys):
            xs, med, err_lo, err_hi = [], [], [], []
            for j, w in enumerate(workloads):
                row = table.get(key, {}).get(w)
                if row is None:
                    continue
                xs.append(j + (i - (len(keys) - 1) / 2) * width)
                med.append(row["median"])
                err_lo.append(row["median"] - row["min"])
                err_hi.append(row["max"] - row["median"])
            label = key[0] if not key[1] else f"{key[0]} ({key[1]})"
            ax.bar(xs, med, width, yerr=[err_lo, err_hi], capsize=2, label=label)
        ax.set_xticks(range(len(workloads)), [w.replace("x", " x ") for w in workloads])
        ax.set(
            xlabel="workflows x sequential activities (one worker, run_until_idle)",
            ylabel="activities/s (median; bars min..max)",
            title="End to end, per store and durability level",
        )
        ax.legend(fontsize="small", ncols=2)
        ax.grid(True, axis="y", alpha=0.3)

    return write(directory, "e2e-throughput", draw)


def append_latency(
    directory: pathlib.Path, latencies: Mapping[str, Sequence[float]]
) -> pathlib.Path | None:
    """The distribution (ECDF, log scale) of single-append latencies per store, in us."""

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        for label, values in latencies.items():
            xs = sorted(v * 1e6 for v in values)
            if not xs:
                continue
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.step(xs, ys, where="post", label=label)
        ax.set(
            xscale="log",
            ylim=(0, 1),
            xlabel="append latency (us, log scale)",
            ylabel="fraction of appends at or below",
            title="Single-event appends: latency distribution per store",
        )
        ax.axhline(0.95, color="grey", lw=0.5, ls="--")
        ax.legend(fontsize="small")
        ax.grid(True, which="both", alpha=0.3)

    return write(directory, "append-latency", draw)


def ratios(
    directory: pathlib.Path, name: str, title: str, bars: Sequence[tuple[str, float, str]]
) -> pathlib.Path | None:
    """Horizontal bars of ``(label, value, annotation)``, log scale, with a line at 1."""

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        labels = [b[0] for b in bars]
        values = [b[1] for b in bars]
        ax.barh(range(len(bars)), values, color="C0")
        ax.set_yticks(range(len(bars)), labels, fontsize="small")
        ax.invert_yaxis()
        ax.axvline(1, color="grey", lw=0.8)
        for i, (_, value, note) in enumerate(bars):
            ax.annotate(f" {note or c.fmt(value)}", (value, i), va="center", fontsize="small")
        ax.set(xscale="log", title=title)
        ax.grid(True, axis="x", which="both", alpha=0.3)

    return write(directory, name, draw, size=(9, 1.2 + 0.45 * len(bars)))
