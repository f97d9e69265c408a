"""Replay throughput of the pure interpreter.

``python -m benchmarks.replay [--quick] [--repeat N] [--results-dir DIR] [--profile]
[--against REF]``

The workflow runs activities one after the other, so its history is three
events per activity (``WorkflowTaskCompleted``, ``ActivityScheduled``,
``ActivityCompleted``), built the way a worker builds it.  Measured:

(a) replay from scratch of a history of ``--activities`` activities, given
    decoded events (feed everything, then make the next decision: a worker's
    cache miss), in events/s; also with ``check_args=False``;
(b) the same, decoding the history from bytes first (JSON and msgpack);
(c) the live, incremental path (feed a result, decide, feed the batch back),
    in microseconds per new event, for histories of several lengths: it should
    not grow with the length;

and, for reference, the machine's bare generator resume rate (yielding a
fresh command object, and a prebuilt one) and msgspec's raw decode rate of
the same history.  ``--profile`` prints where replay from scratch spends its
time.  ``--against REF`` also replays with the interpreter of git revision REF
(``engine/_interpreter.py`` as it was there, with today's other modules),
alternating with today's, repetition by repetition, and reports the ratio: a
before/after comparison that holds on a busy machine.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import re
import statistics
import subprocess
import sys
import types
from collections.abc import Callable, Generator, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from engine import Interpreter, ScheduleActivity, activity, workflow
from engine.events import (
    ActivityCompleted,
    Event,
    Json,
    WorkflowStarted,
    decode_history,
    encode_history,
    with_index,
)

from . import _common as c
from . import _plots

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FOREVER = 10**9


@activity
def step(i: int) -> int:
    return i


@workflow
def sequential(count: int) -> Generator[Any, Any, int]:
    total = 0
    for i in range(count):
        total += yield ScheduleActivity(step, i)
    return total


def completed(seq: int) -> ActivityCompleted:
    return ActivityCompleted(time=T0, seq=seq, result=Json(text=str(seq - 1)))


def build_history(activities: int) -> list[Event]:
    """A store's view of ``sequential``: ``activities`` completed, the next one scheduled.

    Ends with the last ``ActivityCompleted`` (not yet decided on), so replay ends
    with a real decision.  ``3 * activities + 1`` events.
    """
    it = Interpreter(sequential)
    history: list[Event] = []

    def append(events: Sequence[Event]) -> None:
        batch = [with_index(e, len(history) + i) for i, e in enumerate(events)]
        history.extend(batch)
        it.feed(batch)

    append(
        [
            WorkflowStarted(
                time=T0,
                workflow_type="sequential",
                workflow_id="bench",
                run_id="run-1",
                input=Json(text=f"[{FOREVER}]"),
            )
        ]
    )
    for seq in range(1, activities + 1):
        decision = it.decide(T0, f"b{seq}")
        assert decision is not None
        append(decision.events)
        append([completed(seq)])
    it.close()
    return history


def replay_from_scratch(
    events: list[Event], check_args: bool = True, interpreter: type[Interpreter] = Interpreter
) -> None:
    it = interpreter(sequential, check_args=check_args)
    it.feed(events)
    decision = it.decide(T0, "next")
    assert decision is not None
    it.close()


def live_steps(it: Interpreter, first_seq: int, steps: int) -> None:
    """The worker's loop: a result comes in, decide, feed the appended batch back."""
    for seq in range(first_seq, first_seq + steps):
        it.feed([completed(seq)])
        decision = it.decide(T0, f"live{seq}")
        assert decision is not None
        it.feed(decision.events)


def bare_generator_rate(n: int, repeat: int, prebuilt: bool) -> list[float]:
    """Resumes/s of a bare generator, ``repeat`` times (after a warm-up)."""
    run = bare_generator(n, prebuilt)
    return [n / t for t in c.measure(run, repeat)]


def bare_generator(n: int, prebuilt: bool) -> Callable[[], None]:
    """A function that resumes a bare generator ``n`` times.

    Each resume yields a new command (as workflow code does), or with ``prebuilt`` the same one.
    """

    def fresh() -> Generator[Any, Any, None]:
        for i in range(n):
            yield ScheduleActivity(step, i)

    def same() -> Generator[Any, Any, None]:
        cmd = ScheduleActivity(step, 0)
        for _ in range(n):
            yield cmd

    def run() -> None:
        gen = same() if prebuilt else fresh()
        send = gen.send
        send(None)
        try:
            while True:
                send(1)
        except StopIteration:
            pass

    return run


def interpreter_at(ref: str) -> type[Interpreter]:
    """The ``Interpreter`` of ``engine/_interpreter.py`` at git revision ``ref``.

    Only that module is taken from ``ref``; it imports today's other modules
    (events, codecs, commands), so it replays the same event objects.
    """
    source = subprocess.run(
        ["git", "show", f"{ref}:engine/_interpreter.py"],
        cwd=c.ROOT,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    name = "engine._interpreter_at_" + re.sub(r"\W", "_", ref)
    module = types.ModuleType(name)
    module.__package__ = "engine"
    module.__file__ = f"{ref}:engine/_interpreter.py"
    sys.modules[name] = module  # for the dataclass and typing machinery that looks it up
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # this repository's own code
    cls: type[Interpreter] = module.Interpreter
    return cls


def against(ref: str, events: list[Event], repeat: int) -> list[dict[str, Any]]:
    """Replay from scratch with REF's interpreter and today's, alternating; and the ratio."""
    old = interpreter_at(ref)
    n = len(events)
    today, before = c.alternate(
        [
            lambda: n / c.timed(lambda: replay_from_scratch(events)),
            lambda: n / c.timed(lambda: replay_from_scratch(events, interpreter=old)),
        ],
        repeat,
    )
    ratios = [a / b for a, b in zip(today, before, strict=True)]
    return [
        c.summary("replay from scratch, this checkout (alternating)", "events/s", today, events=n),
        c.summary(f"replay from scratch, interpreter of {ref}", "events/s", before, events=n),
        c.summary(
            f"this checkout / {ref}, per repetition",
            "ratio",
            ratios,
            ref=ref,
            median_over_median=statistics.median(today) / statistics.median(before),
        ),
    ]


def profile(events: list[Event], top: int = 15) -> str:
    prof = cProfile.Profile()
    prof.enable()
    replay_from_scratch(events)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).sort_stats("tottime")
    stats.print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.split("\n\n")[0] if __doc__ else "replay benchmark")
    p.add_argument("--activities", type=int, help="activities in the replayed history")
    p.add_argument(
        "--lengths",
        type=lambda s: [int(x) for x in s.split(",")],
        help="history lengths (activities) for the incremental path, comma-separated",
    )
    p.add_argument("--steps", type=int, help="new activities timed per incremental run")
    p.add_argument("--profile", action="store_true", help="print a cProfile of replay")
    p.add_argument(
        "--against",
        metavar="REF",
        help="also replay with the interpreter of git revision REF, alternating; the ratio",
    )
    args = p.parse_args(argv)
    repeat = max(5, args.repeat)
    activities = args.activities or (200 if args.quick else 10_000)
    lengths = args.lengths or ([10, 100] if args.quick else [100, 1_000, 10_000])
    steps = args.steps or (20 if args.quick else 1_000)
    params = {
        "quick": args.quick,
        "repeat": repeat,
        "activities": activities,
        "incremental_lengths": lengths,
        "incremental_steps": steps,
        "events_per_activity": 3,
        "against": args.against,
    }

    history = build_history(max(activities, *lengths))
    events = history[: 3 * activities + 1]
    n = len(events)
    as_json = encode_history(events)
    as_msgpack = encode_history(events, format="msgpack")
    assert decode_history(as_json) == events
    assert decode_history(as_msgpack, format="msgpack") == events

    results: list[dict[str, Any]] = []

    def rate(name: str, samples: list[float], **extra: Any) -> None:
        results.append(c.summary(name, "events/s", [n / t for t in samples], events=n, **extra))

    # (a) and (b)
    rate(
        "replay from scratch (decoded events)",
        c.measure(lambda: replay_from_scratch(events), repeat),
    )
    rate(
        "replay from scratch, check_args=False",
        c.measure(lambda: replay_from_scratch(events, check_args=False), repeat),
    )
    rate(
        "decode JSON + replay",
        c.measure(lambda: replay_from_scratch(decode_history(as_json)), repeat),
        bytes=len(as_json),
    )
    rate(
        "decode msgpack + replay",
        c.measure(
            lambda: replay_from_scratch(decode_history(as_msgpack, format="msgpack")), repeat
        ),
        bytes=len(as_msgpack),
    )

    # replay from scratch at each length (its cost grows with the history; for the plot)
    for length in lengths:
        prefix = history[: 3 * length + 1]
        results.append(
            c.summary(
                f"replay from scratch, {length:,} activities",
                "events/s",
                [len(prefix) / t for t in c.measure(partial(replay_from_scratch, prefix), repeat)],
                events=len(prefix),
                activities=length,
            )
        )

    # (c): the live path at several lengths
    for length in lengths:
        prefix = history[: 3 * length + 1]

        def setup(prefix: list[Event] = prefix) -> Interpreter:
            it = Interpreter(sequential)
            it.feed(prefix)
            decision = it.decide(T0, "catch-up")  # schedules activity length + 1
            assert decision is not None
            it.feed(decision.events)
            return it

        def run(it: Interpreter, length: int = length) -> None:
            live_steps(it, length + 1, steps)
            it.close()

        samples = c.measure_with_setup(setup, run, repeat)
        results.append(
            c.summary(
                f"incremental, history of {length:,} activities",
                "us/event",
                [t * 1e6 / (3 * steps) for t in samples],
                history_events=len(prefix),
                new_events=3 * steps,
            )
        )

    # references
    gen_n = 20 * n
    results.append(
        c.summary(
            "reference: bare generator resume, new command each",
            "resumes/s",
            bare_generator_rate(gen_n, repeat, prebuilt=False),
        )
    )
    results.append(
        c.summary(
            "reference: bare generator resume, prebuilt command",
            "resumes/s",
            bare_generator_rate(gen_n, repeat, prebuilt=True),
        )
    )
    rate("reference: msgspec decode only, JSON", c.measure(lambda: decode_history(as_json), repeat))
    rate(
        "reference: msgspec decode only, msgpack",
        c.measure(lambda: decode_history(as_msgpack, format="msgpack"), repeat),
    )

    if args.against:
        results.extend(against(args.against, events, repeat))

    rows = [
        [r["name"], c.fmt(r["median"]), c.fmt(r["min"]), c.fmt(r["max"]), r["unit"]]
        for r in results
    ]
    print(
        c.table(
            f"replay: {activities:,} sequential activities = {n:,} events; median of {repeat}",
            ["measurement", "median", "min", "max", "unit"],
            rows,
        )
    )
    path = c.write_results("replay", params, results, args.results_dir)
    _plots.replay_cost(args.results_dir, results)
    print(f"\nresults: {path}")
    if args.profile:
        print()
        print(profile(events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
