"""A run drawn as a layered DAG in server-side SVG (no JavaScript, no build step).

Two sources, one picture:

* :func:`run_graph` reads any run from its events: one node per activity
  type, child workflow type or timer started by one decision (a fan-out of
  ten ``charge`` activities is one node, ``charge`` times 10), one node per signal
  name between two decisions, and edges from what finished before a decision
  (since the previous decision that started something) to what it started.
  So a sequence is a chain and an ``All`` fans in, as in
  :func:`engine.pipeline.history_mermaid`, with timers and signals added.
* :func:`pipeline_graph` draws a pipeline run as its DAG, pending tasks
  included, coloured by :class:`~engine.pipeline.TaskProgress`.

:func:`render_svg` lays the graph out in layers (a node's layer is its longest
path from the start; barycentre sweeps order each layer) and writes SVG whose
every label and tooltip goes through ``markupsafe.escape``: a workflow id or
activity type of ``<script>`` is text.  Colours are CSS classes (``state-*``)
styled by ``ui.css``, so the page's Content-Security-Policy needs no inline
styles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from markupsafe import Markup

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
    SignalReceived,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowStarted,
    WorkflowTaskCompleted,
)
from ..cli._common import format_duration
from ..pipeline import PipelineSpec, TaskProgress

__all__ = ["Graph", "Node", "pipeline_graph", "render_svg", "run_graph"]

#: Above this many nodes the page offers the Mermaid text instead of a drawing.
MAX_NODES: Final = 400

_W, _H = 190, 48  # node size
_GX, _GY = 26, 46  # gaps between nodes in a layer, and between layers
_PAD = 12
_CHARS = 26  # characters of a label line that fit in a node


@dataclass
class Node:
    """One box: ``kind`` is start, finish, activity, child, timer, signal or task."""

    id: str
    kind: str
    label: str
    detail: str = ""
    state: str = "completed"
    title: str = ""


@dataclass
class Graph:
    """Nodes in creation order (every edge goes from an earlier node to a later one)."""

    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    dashed: set[tuple[str, str]] = field(default_factory=set)


@dataclass
class _Group:
    node: Node
    seqs: list[int] = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    retries: int = 0

    def finish(self, closed: bool, waiting: set[int]) -> None:
        n = len(self.seqs)
        open_ = n - self.completed - self.failed - self.cancelled
        if self.failed:
            state = "failed"
        elif open_:
            state = "abandoned" if closed else "retrying" if waiting & set(self.seqs) else "running"
        elif self.cancelled == n:
            state = "cancelled"
        else:
            state = "completed"
        text = state if n == 1 else f"{self.completed}/{n} done"
        if n > 1 and self.failed:
            text += f", {self.failed} failed"
        if self.retries:
            text += f" · {self.retries} {'retry' if self.retries == 1 else 'retries'}"
        self.node.state = state
        self.node.detail = text
        count = f" ×{n}" if n > 1 else ""  # noqa: RUF001 - a multiplication sign
        self.node.label += count
        self.node.title = f"{self.node.title}{count}: {text}"


def run_graph(events: Sequence[Event], status: str) -> Graph:
    """Any run's activities, children, timers and signals as a DAG (module docstring)."""
    if not events or not isinstance(events[0], WorkflowStarted):
        raise ValueError("a history begins with WorkflowStarted")
    started = events[0]
    graph = Graph()
    graph.nodes.append(
        Node("start", "start", started.workflow_type, "started", "started", started.workflow_type)
    )
    groups: list[_Group] = []
    by_seq: dict[int, _Group] = {}
    frontier: list[str] = []  # finished since the last decision that started something
    latest: list[str] = ["start"]  # what that decision started
    # NB: ``frontier`` is consumed by the next decision that starts something, not at every
    # decision, so a signal or an outcome that comes in between is never lost
    decision: dict[tuple[str, str], _Group] = {}
    new: list[str] = []
    sources: list[str] = []
    waiting: set[int] = set()
    signals: dict[str, _Group] = {}

    def add(kind: str, key: str, seq: int, label: str, title: str) -> None:
        nonlocal sources
        if not new:  # the decision's first command: it follows what finished since the last
            sources = frontier[:] or latest
            frontier.clear()
        group = decision.get((kind, key))
        if group is None:
            node = Node(f"{kind[0]}{seq}", kind, label, title=title)
            group = decision[(kind, key)] = _Group(node)
            groups.append(group)
            graph.nodes.append(node)
            new.append(node.id)
            graph.edges.extend((s, node.id) for s in sources)
        group.seqs.append(seq)
        by_seq[seq] = group

    def done(seq: int) -> _Group | None:
        waiting.discard(seq)
        group = by_seq.get(seq)
        if group is not None and group.node.id not in frontier:
            frontier.append(group.node.id)
        return group

    for ev in events:
        match ev:
            case WorkflowTaskCompleted():
                if new:
                    latest = new
                new, decision, signals = [], {}, {}
            case ActivityScheduled(seq=seq, activity_type=name):
                add("activity", name, seq, name, f"activity {name}")
            case ChildWorkflowStarted(seq=seq, workflow_type=name, workflow_id=child):
                add("child", name, seq, f"child {name}", f"child {name} ({child})")
            case TimerStarted(seq=seq, duration=duration):
                text = f"timer {format_duration(duration)}"
                add("timer", text, seq, text, text)
            case ActivityAttemptFailed(seq=seq) if seq in by_seq:
                by_seq[seq].retries += 1
                waiting.add(seq)
            case (
                ActivityCompleted(seq=seq) | ChildWorkflowCompleted(seq=seq) | TimerFired(seq=seq)
            ) if seq in by_seq:
                group = done(seq)
                if group is not None:
                    group.completed += 1
            case ActivityFailed(seq=seq) | ChildWorkflowFailed(seq=seq) if seq in by_seq:
                group = done(seq)
                if group is not None:
                    group.failed += 1
            case TimerCancelled(seq=seq) if seq in by_seq:
                by_seq[seq].cancelled += 1  # NB: a timer that lost a race drives nothing
            case SignalReceived(name=name):
                _signal(graph, groups, signals, frontier, latest, name, ev.index)
            case _:
                pass
    closed = type(events[-1]) in CLOSING_EVENTS
    for group in groups:
        group.finish(closed, waiting)
    if closed:
        if new:
            latest = new
        state = _FINISH_STATES.get(status, "completed")
        graph.nodes.append(Node("finish", "finish", status.lower(), "", state, status))
        graph.edges.extend((s, "finish") for s in (frontier or latest))
    return graph


_FINISH_STATES: Final = {
    "COMPLETED": "completed",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "TERMINATED": "terminated",
    "CONTINUED_AS_NEW": "continued",
}


def _signal(
    graph: Graph,
    groups: list[_Group],
    signals: dict[str, _Group],
    frontier: list[str],
    latest: list[str],
    name: str,
    index: int,
) -> None:
    """A signal: a node fed (dashed) by what ran when it came; it feeds the next decision."""
    group = signals.get(name)
    if group is None:
        node = Node(f"s{index}", "signal", f"signal {name}", title=f"signal {name}")
        group = signals[name] = _Group(node)
        groups.append(group)
        graph.nodes.append(node)
        for s in latest:
            graph.edges.append((s, node.id))
            graph.dashed.add((s, node.id))
        frontier.append(node.id)
    group.seqs.append(-1 - index)
    group.completed += 1


def pipeline_graph(spec: PipelineSpec, tasks: dict[str, TaskProgress], status: str) -> Graph:
    """A pipeline run as its DAG: every task, coloured by its progress."""
    graph = Graph()
    for t in spec.tasks:
        p = tasks.get(t.name, TaskProgress())
        detail = p.state
        if t.fan_out and p.state not in ("pending", "skipped", "reused"):
            detail = f"{p.completed + p.reused}/{p.scheduled + p.reused} done"
            if p.failed:
                detail += f", {p.failed} failed"
        if p.retried:
            detail += f" · {p.retried} {'retry' if p.retried == 1 else 'retries'}"
        kind = "fanout" if t.fan_out else "task"
        title = f"{t.name} ({t.type}): {detail}"
        graph.nodes.append(Node(f"t_{t.name}", kind, t.name, detail, p.state, title))
    for t in spec.tasks:
        graph.edges.extend((f"t_{pred}", f"t_{t.name}") for pred in t.preds)
    if status != "RUNNING":
        graph.nodes.append(
            Node(
                "finish",
                "finish",
                status.lower(),
                "",
                _FINISH_STATES.get(status, "completed"),
                status,
            )
        )
        sinks = {f"t_{t.name}" for t in spec.tasks} - {a for a, _ in graph.edges}
        graph.edges.extend((s, "finish") for s in sorted(sinks))
    return graph


# --------------------------------------------------------------------------- layout and SVG


def _layers(graph: Graph) -> list[list[Node]]:
    """Longest-path layering (nodes in creation order), then two barycentre sweeps."""
    preds: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for a, b in graph.edges:
        preds[b].append(a)
    layer: dict[str, int] = {}
    for node in graph.nodes:
        layer[node.id] = 1 + max((layer.get(p, -1) for p in preds[node.id]), default=-1)
    layers: list[list[Node]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for node in graph.nodes:
        layers[layer[node.id]].append(node)
    for _ in range(2):
        pos = {n.id: i for row in layers for i, n in enumerate(row)}
        for row in layers[1:]:

            def centre(n: Node, pos: dict[str, int] = pos) -> float:
                ps = preds[n.id]
                return sum(pos[p] for p in ps) / len(ps) if ps else pos[n.id]

            row.sort(key=centre)
            pos.update({n.id: i for i, n in enumerate(row)})
    return layers


def _clip(text: str, limit: int = _CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_svg(graph: Graph, *, title: str = "") -> Markup:
    """The graph as an inline ``<svg>`` element; every piece of text is escaped.

    >>> graph = Graph([Node("start", "start", "<script>"), Node("a1", "activity", "charge")])
    >>> graph.edges.append(("start", "a1"))
    >>> svg = render_svg(graph)
    >>> "&lt;script&gt;" in svg and "<script>" not in svg, svg.count('class="edge"')
    (True, 1)
    """
    layers = _layers(graph)
    widest = max((len(row) for row in layers), default=1)
    width = widest * (_W + _GX) - _GX + 2 * _PAD
    height = len(layers) * (_H + _GY) - _GY + 2 * _PAD
    at: dict[str, tuple[float, float]] = {}
    for depth, row in enumerate(layers):
        left = _PAD + (width - 2 * _PAD - (len(row) * (_W + _GX) - _GX)) / 2
        for i, node in enumerate(row):
            at[node.id] = (left + i * (_W + _GX), _PAD + depth * (_H + _GY))
    parts = [
        Markup(
            '<svg xmlns="http://www.w3.org/2000/svg" class="run-graph" role="img" '
            'width="{w}" height="{h}" viewBox="0 0 {w} {h}" aria-label="{t}">'
        ).format(w=f"{width:g}", h=f"{height:g}", t=title or "run graph"),
        Markup(
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
            'class="arrow-head"/></marker></defs>'
        ),
    ]
    for a, b in graph.edges:
        (x1, y1), (x2, y2) = at[a], at[b]
        sx, sy, tx, ty = x1 + _W / 2, y1 + _H, x2 + _W / 2, y2
        bend = max(_GY / 2, (ty - sy) / 2)
        cls = "edge dashed" if (a, b) in graph.dashed else "edge"
        parts.append(
            Markup('<path class="{c}" marker-end="url(#arrow)" d="M {a} C {b} {c2} {d}"/>').format(
                c=cls,
                a=f"{sx:g} {sy:g}",
                b=f"{sx:g} {sy + bend:g}",
                c2=f"{tx:g} {ty - bend:g}",
                d=f"{tx:g} {ty:g}",
            )
        )
    for node in graph.nodes:
        x, y = at[node.id]
        rx = _H / 2 if node.kind in ("start", "finish") else 5
        parts.append(
            Markup(
                '<g class="node kind-{k} state-{s}"><title>{t}</title>'
                '<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{rx}"/>'
            ).format(
                k=node.kind,
                s=node.state,
                t=node.title or node.label,
                x=f"{x:g}",
                y=f"{y:g}",
                w=_W,
                h=_H,
                rx=f"{rx:g}",
            )
        )
        if node.kind in ("child", "fanout"):  # a double border, like Mermaid's subroutine
            parts.append(
                Markup(
                    '<rect class="inner" x="{x}" y="{y}" width="{w}" height="{h}" rx="3"/>'
                ).format(x=f"{x + 4:g}", y=f"{y + 4:g}", w=_W - 8, h=_H - 8)
            )
        lines = [node.label, node.detail] if node.detail else [node.label]
        for i, text in enumerate(lines):
            dy = (i - (len(lines) - 1) / 2) * 16 + 5
            parts.append(
                Markup('<text x="{x}" y="{y}" class="{c}">{t}</text>').format(
                    x=f"{x + _W / 2:g}",
                    y=f"{y + _H / 2 + dy:g}",
                    c="label" if i == 0 else "detail",
                    t=_clip(text),
                )
            )
        parts.append(Markup("</g>"))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
