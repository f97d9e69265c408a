"""Mermaid flowcharts: a pipeline's DAG, a pipeline run's tasks, and any run's activities.

* :func:`pipeline_mermaid` draws a spec: one node per task (a fan-out task is
  a subroutine box, fed by an ``each`` edge), edges from predecessors in task
  order.  With per-task progress it is a run's picture, coloured by state.
* :func:`history_mermaid` draws any run from its history.  A pipeline run
  (one that published its spec) is drawn as its DAG.  Any other run is drawn
  from its events: one node per activity type (or child workflow) started by
  one decision, and an edge from every activity or child that finished
  before that decision (since the previous one that started something) to
  what it started; so a sequence is a chain, and an ``All`` fans in.

Output is deterministic (stable ids and order) so tests compare it to golden
files.  Colours are ``classDef``\\ s named after the states.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from .._events import (
    CLOSING_EVENTS,
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    Event,
    WorkflowStarted,
    WorkflowTaskCompleted,
)
from ._history import _STATUS, TaskProgress, scan
from ._model import PipelineSpec

__all__ = ["history_mermaid", "pipeline_mermaid", "project_mermaid"]

#: One colour per state, in the order the ``classDef`` lines are written.
CLASSES: Final = {
    "completed": "fill:#d3f9d8,stroke:#2b8a3e,color:#000",
    "reused": "fill:#d0ebff,stroke:#1971c2,color:#000",
    "running": "fill:#fff3bf,stroke:#e67700,color:#000",
    "retrying": "fill:#ffe8cc,stroke:#d9480f,color:#000",
    "failed": "fill:#ffe3e3,stroke:#c92a2a,color:#000",
    "pending": "fill:#f1f3f5,stroke:#868e96,color:#000",
    "skipped": "fill:#f8f9fa,stroke:#adb5bd,color:#868e96,stroke-dasharray:4 3",
    "abandoned": "fill:#f8f9fa,stroke:#868e96,color:#495057,stroke-dasharray:4 3",
    "cancelled": "fill:#f8f9fa,stroke:#868e96,color:#495057",
    "terminated": "fill:#f8f9fa,stroke:#868e96,color:#495057",
}
_DIRECTIONS: Final = ("TD", "TB", "BT", "LR", "RL")


def _text(value: str) -> str:
    """Text for a quoted Mermaid label (Mermaid's entity codes for what would break it)."""
    return (
        value.replace("#", "#35;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    )


def _check(direction: str) -> str:
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(_DIRECTIONS)}, got {direction!r}")
    return direction


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _progress_text(p: TaskProgress, fan_out: bool) -> str:
    if p.state == "reused":
        return "reused"
    if p.state in ("pending", "skipped"):
        return "not run" if p.state == "skipped" else "pending"
    text = p.state
    if fan_out:
        text = f"{p.completed + p.reused}/{p.scheduled + p.reused} done"
        if p.failed:
            text += f", {p.failed} failed"
        if p.reused:
            text += f" ({p.reused} reused)"
    if p.retried:
        text += f" · {_plural(p.retried, 'retry')}".replace("retrys", "retries")
    return text


def _classes(used: dict[str, list[str]]) -> list[str]:
    lines = []
    for state, style in CLASSES.items():
        if used.get(state):
            lines.append(f"    classDef {state} {style}")
    for state in CLASSES:
        if used.get(state):
            lines.append(f"    class {','.join(used[state])} {state}")
    return lines


def _task_nodes(
    spec: PipelineSpec,
    indent: str,
    prefix: str,
    progress: dict[str, TaskProgress] | None,
    used: dict[str, list[str]],
) -> list[str]:
    lines = []
    for t in spec.tasks:
        node = prefix + t.name
        label = f"{t.name}<br/>{_text(t.type.rpartition(':')[2])}"
        if progress is not None and t.name in progress:
            p = progress[t.name]
            label += f"<br/>{_text(_progress_text(p, t.fan_out))}"
            used.setdefault(p.state, []).append(node)
        shape = ('[["', '"]]') if t.fan_out else ('["', '"]')
        lines.append(f"{indent}{node}{shape[0]}{label}{shape[1]}")
    for t in spec.tasks:
        arrow = "-->|each|" if t.fan_out else "-->"
        for pred in t.preds:
            lines.append(f"{indent}{prefix}{pred} {arrow} {prefix}{t.name}")
    return lines


def pipeline_mermaid(
    spec: PipelineSpec,
    *,
    direction: str = "TD",
    progress: dict[str, TaskProgress] | None = None,
    title: str | None = None,
) -> str:
    """A pipeline's DAG as a Mermaid flowchart; with ``progress``, a run's state per task."""
    lines = [f"flowchart {_check(direction)}"]
    lines.append(f"    %% {_text(title if title is not None else 'pipeline ' + spec.name)}")
    used: dict[str, list[str]] = {}
    lines.extend(_task_nodes(spec, "    ", "", progress, used))
    lines.extend(_classes(used))
    return "\n".join(lines) + "\n"


def project_mermaid(specs: Sequence[PipelineSpec], *, direction: str = "TD") -> str:
    """Several pipelines as subgraphs of one flowchart (node ids ``PIPELINE__TASK``)."""
    lines = [f"flowchart {_check(direction)}"]
    for spec in specs:
        ident = spec.name.replace("-", "_")
        lines.append(f'    subgraph {ident}["{_text(spec.name)}"]')
        lines.extend(_task_nodes(spec, "        ", f"{ident}__", None, {}))
        lines.append("    end")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- any run


class _Node:
    __slots__ = ("attempts_failed", "completed", "failed", "id", "kind", "label", "seqs")

    def __init__(self, id: str, kind: str, label: str) -> None:
        self.id = id
        self.kind = kind
        self.label = label
        self.seqs: list[int] = []
        self.completed = 0
        self.failed = 0
        self.attempts_failed = 0

    def state(self, closed: bool, waiting: set[int]) -> str:
        open_ = len(self.seqs) - self.completed - self.failed
        if self.failed:
            return "failed"
        if open_:
            if closed:
                return "abandoned"
            return "retrying" if waiting.intersection(self.seqs) else "running"
        return "completed"

    def text(self, state: str) -> str:
        n = len(self.seqs)
        if n == 1:
            text = state
        else:
            text = f"{self.completed}/{n} done"
            if self.failed:
                text += f", {self.failed} failed"
        if self.attempts_failed:
            text += f" · {_plural(self.attempts_failed, 'retry')}".replace("retrys", "retries")
        return text


def _generic(events: Sequence[Event], direction: str, status: str) -> str:
    started = events[0]
    assert isinstance(started, WorkflowStarted)
    nodes: list[_Node] = []
    by_seq: dict[int, _Node] = {}
    edges: list[tuple[str, str]] = []
    frontier: list[str] = ["start"]  # finished since the last decision that started something
    latest: list[str] = ["start"]  # what the last decision that started something started
    decision: dict[tuple[str, str], _Node] = {}
    waiting: set[int] = set()
    new: list[_Node] = []
    sources: list[str] = []

    def flush() -> None:
        nonlocal frontier, latest, new
        if new:
            latest = [n.id for n in new]
            frontier = []
        new = []

    def add(kind: str, name: str, seq: int, label: str) -> None:
        nonlocal sources
        if not new:
            sources = frontier or latest
        node = decision.get((kind, name))
        if node is None:
            node = _Node(f"{kind}{seq}", kind, label)
            decision[(kind, name)] = node
            nodes.append(node)
            new.append(node)
            edges.extend((s, node.id) for s in sources)
        node.seqs.append(seq)
        by_seq[seq] = node

    def finish(seq: int) -> _Node | None:
        waiting.discard(seq)
        node = by_seq.get(seq)
        if node is not None and node.id not in frontier:
            frontier.append(node.id)
        return node

    for ev in events:
        match ev:
            case WorkflowTaskCompleted():
                flush()
                decision = {}
            case ActivityScheduled(seq=seq, activity_type=name):
                add("a", name, seq, _text(name))
            case ChildWorkflowStarted(seq=seq, workflow_type=name, workflow_id=child):
                add("c", name, seq, f"child {_text(name)}<br/>{_text(child)}")
            case ActivityAttemptFailed(seq=seq) if seq in by_seq:
                by_seq[seq].attempts_failed += 1
                waiting.add(seq)
            case ActivityCompleted(seq=seq) | ChildWorkflowCompleted(seq=seq) if seq in by_seq:
                node = finish(seq)
                if node is not None:
                    node.completed += 1
            case ActivityFailed(seq=seq) | ChildWorkflowFailed(seq=seq) if seq in by_seq:
                node = finish(seq)
                if node is not None:
                    node.failed += 1
            case _:
                pass
    flush()
    closed = type(events[-1]) in CLOSING_EVENTS
    lines = [f"flowchart {_check(direction)}"]
    lines.append(f"    %% {_text(started.workflow_id)}: {_text(started.workflow_type)} ({status})")
    lines.append(f'    start(["{_text(started.workflow_type)}"])')
    used: dict[str, list[str]] = {}
    for node in nodes:
        state = node.state(closed, waiting)
        used.setdefault(state, []).append(node.id)
        n = len(node.seqs)
        count = f" ×{n}" if n > 1 else ""  # noqa: RUF001 - a multiplication sign
        lines.append(f'    {node.id}["{node.label}{count}<br/>{node.text(state)}"]')
    if closed:
        edges.extend((s, "finish") for s in (frontier or latest))
        lines.append(f'    finish(["{status.lower()}"])')
        state = status.lower() if status.lower() in CLASSES else "completed"
        used.setdefault(state, []).append("finish")
    lines.extend(f"    {a} --> {b}" for a, b in edges)
    lines.extend(_classes(used))
    return "\n".join(lines) + "\n"


def history_mermaid(
    events: Sequence[Event],
    decode: Callable[..., Any] | None = None,
    *,
    direction: str = "TD",
) -> str:
    """Any run as a Mermaid flowchart, coloured by state (see the module docstring).

    ``decode`` (``Client.decode``) reads the spec a pipeline run published;
    without it every run is drawn from its events.
    """
    if not events or not isinstance(events[0], WorkflowStarted):
        raise ValueError("a history begins with WorkflowStarted")
    view = scan(events, decode) if decode is not None else None
    status = view.status if view is not None else _status(events)
    if view is not None and view.spec is not None:
        title = f"{view.workflow_id}: {view.workflow_type} ({status})"
        return pipeline_mermaid(view.spec, direction=direction, progress=view.tasks, title=title)
    return _generic(events, direction, status)


def _status(events: Sequence[Event]) -> str:
    return _STATUS.get(type(events[-1]), "RUNNING")
