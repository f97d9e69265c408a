"""The reference workflows of the reliability suite, and their fsync'd attempt ledger.

Three workflows cover the shapes a crash can hit: ``ref_chain`` (sequential
activities), ``ref_timer_signal`` (an activity, a timer, a signal wait, an
activity using the signal) and ``ref_parent`` (a child workflow, then one
continue-as-new whose second run runs an activity).  Every activity attempt
appends ``workflow run seq attempt`` to the ledger file named by its first
argument and ``fsync``s it before it returns.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from datetime import timedelta
from typing import Any, Final

from engine import (
    ContinueAsNew,
    ScheduleActivity,
    StartChildWorkflow,
    Timer,
    WaitSignal,
    activity,
    activity_context,
    workflow,
)

__all__ = ["ACTIVITIES", "WORKFLOWS", "ledger", "read_ledger"]


@activity
def ledger(path: str, tag: str) -> str:
    """Note this attempt in the ledger (durably), return a value derived from ``tag``."""
    ctx = activity_context()
    line = f"{ctx.workflow_id}\t{ctx.run_id}\t{ctx.seq}\t{ctx.attempt}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return f"{tag}!"


def read_ledger(path: str) -> list[tuple[str, str, int, int]]:
    try:
        with open(path) as f:
            rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except FileNotFoundError:
        return []
    return [(w, r, int(q), int(a)) for w, r, q, a in rows]


@workflow
def ref_chain(path: str, steps: int) -> Generator[Any, Any, list[str]]:
    out = []
    for step in range(steps):
        out.append((yield ScheduleActivity(ledger, path, f"step{step}")))
    return out


@workflow
def ref_timer_signal(path: str) -> Generator[Any, Any, str]:
    first = yield ScheduleActivity(ledger, path, "before")
    yield Timer(timedelta(hours=1))
    payload = yield WaitSignal("go")
    last = yield ScheduleActivity(ledger, path, f"after-{payload}")
    return f"{first}|{last}"


@workflow
def ref_child(path: str, n: int) -> Generator[Any, Any, int]:
    total = 0
    for i in range(n):
        total += len((yield ScheduleActivity(ledger, path, f"child{i}")))
    return total


@workflow
def ref_parent(path: str, round: int) -> Generator[Any, Any, str]:
    if round == 0:
        got = yield StartChildWorkflow(ref_child, path, 2, id="ref-child")
        yield ScheduleActivity(ledger, path, f"parent{got}")
        yield ContinueAsNew(path, 1)
    last = yield ScheduleActivity(ledger, path, "second-run")
    return str(last)


WORKFLOWS: Final = [ref_chain, ref_timer_signal, ref_child, ref_parent]
ACTIVITIES: Final = [ledger]
BY_NAME: Final = {
    "ref_chain": ref_chain,
    "ref_timer_signal": ref_timer_signal,
    "ref_child": ref_child,
    "ref_parent": ref_parent,
}
