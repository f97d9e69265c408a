"""The pages: the workflows list, a workflow run, a payload, the downloads, the stats.

Every handler here is a plain function, so Starlette runs it in its thread
pool (stores, the CAS and decoding block).  Nothing here changes state.
"""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime
from typing import Any, Final

import click
import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .._events import (
    CLOSING_EVENTS,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    Event,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTaskCompleted,
    WorkflowTerminated,
    encode_history,
)
from .._info import Status, WorkflowInfo
from .._reset import decision_boundaries
from ..cli._common import format_seconds, format_time, parse_time
from ..cli._render import pending
from ..cli._stats import compute
from ..pipeline import history_mermaid, scan
from ._app import Ui, ui_of
from ._graph import MAX_NODES, pipeline_graph, render_svg, run_graph
from ._views import (
    LinkView,
    PayloadView,
    Urls,
    failure_view,
    link_view,
    payload_slots,
    payload_view,
    query,
    timeline,
)

__all__ = [
    "graph_mermaid",
    "history_json",
    "payload",
    "stats_page",
    "workflow_page",
    "workflow_partial",
    "workflows_page",
    "workflows_partial",
]

PAGE_SIZES: Final = (20, 50, 100, 200)
#: With an id prefix the list scans this many runs at most (the store cannot filter by id).
SCAN_LIMIT: Final = 20_000
#: The most timeline rows one page shows (the newest); the download has them all.
MAX_ROWS: Final = 2_000
DONE: Final = {
    "signal": "Signal sent.",
    "cancel": "Cancellation requested: the workflow's finally blocks and compensations run.",
    "terminate": "Terminated.",
    "reset": "Reset: this is the new run; a worker replays the kept history and goes on.",
}


def _urls(request: Request) -> Urls:
    return Urls(request.scope.get("root_path", ""))


def _param(request: Request, name: str) -> str | None:
    value = query(request.scope).get(name)
    return value if value else None


def _required(request: Request, name: str) -> str:
    value = query(request.scope).get(name)
    if value is None or value == "":
        raise HTTPException(400, f"the query parameter {name!r} is required")
    return value


def _int(request: Request, name: str) -> int:
    text = _required(request, name)
    try:
        return int(text)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number, got {text!r}") from None


# --------------------------------------------------------------------------- the list


def _time(text: str | None, what: str) -> datetime | None:
    try:
        return parse_time(text, what, now=datetime.now(UTC))
    except click.BadParameter as exc:
        raise ValueError(f"{what}: {exc.message}") from None


def _info_row(info: WorkflowInfo, urls: Urls) -> dict[str, Any]:
    return {
        "id": info.id,
        "run_id": info.run_id,
        "url": urls.workflow(info.id, info.run_id),
        "type": info.type,
        "status": info.status.value,
        "blocked": info.blocked,
        "task_queue": info.task_queue,
        "start": format_time(info.start_time),
        "close": format_time(info.close_time),
    }


def _list_context(ui: Ui, request: Request) -> tuple[dict[str, Any], int]:
    urls = _urls(request)
    q = query(request.scope)
    filters = {k: q.get(k, "") for k in ("status", "type", "prefix", "since", "until")}
    size = int(q.get("size", "50")) if q.get("size", "50") in {str(s) for s in PAGE_SIZES} else 50
    ctx: dict[str, Any] = {"filters": filters, "size": size, "sizes": PAGE_SIZES, "error": None}
    ctx.update(rows=[], counts=[], total=0, next_url=None, first_url=None, scanned=None)
    ctx["statuses"] = [s.value.lower() for s in Status]
    ctx["all_url"] = urls.path("/", **{**filters, "status": ""}, size=size)
    ctx["partial_url"] = urls.path("/partials/workflows", **filters, size=size, **_paging(q))
    try:
        status = Status(filters["status"].upper()) if filters["status"] else None
    except ValueError:
        ctx["error"] = f"unknown status {filters['status']!r}"
        return ctx, 400
    try:
        since, until = (
            _time(filters["since"] or None, "since"),
            _time(filters["until"] or None, "until"),
        )
    except ValueError as exc:
        ctx["error"] = str(exc)
        return ctx, 400
    kind, prefix = filters["type"] or None, filters["prefix"]
    counts: dict[Status, int]
    if not prefix:
        try:
            page = ui.store.list(
                status=status,
                type=kind,
                since=since,
                until=until,
                page_size=size,
                page_token=q.get("page") or None,
            )
        except ValueError as exc:
            ctx["error"] = f"bad page: {exc}"
            return ctx, 400
        items, counts = page.items, page.counts
        if page.next_page_token:
            ctx["next_url"] = urls.path("/", **filters, size=size, page=page.next_page_token)
    else:
        items, counts, more, scanned = _scan(ui, status, kind, since, until, prefix, q, size)
        if more:
            offset = int(q.get("offset", "0") or 0) + size
            ctx["next_url"] = urls.path("/", **filters, size=size, offset=offset)
        ctx["scanned"] = scanned if scanned >= SCAN_LIMIT else None
    if q.get("page") or q.get("offset"):
        ctx["first_url"] = urls.path("/", **filters, size=size)
    ctx["rows"] = [_info_row(i, urls) for i in items]
    ctx["total"] = sum(counts.values())
    ctx["counts"] = [
        {
            "status": s.value,
            "n": counts.get(s, 0),
            "url": urls.path("/", **{**filters, "status": s.value.lower()}, size=size),
            "active": s is status,
        }
        for s in Status
    ]
    return ctx, 200


def _paging(q: Any) -> dict[str, str]:
    return {k: q[k] for k in ("page", "offset") if q.get(k)}


def _scan(
    ui: Ui,
    status: Status | None,
    kind: str | None,
    since: datetime | None,
    until: datetime | None,
    prefix: str,
    q: Any,
    size: int,
) -> tuple[list[WorkflowInfo], dict[Status, int], bool, int]:
    """Runs whose id starts with ``prefix``: the store's pages, filtered here."""
    try:
        offset = max(0, int(q.get("offset", "0") or 0))
    except ValueError:
        offset = 0
    matched: list[WorkflowInfo] = []
    counts: dict[Status, int] = {}
    token: str | None = None
    scanned = 0
    while scanned < SCAN_LIMIT:
        page = ui.store.list(type=kind, since=since, until=until, page_size=500, page_token=token)
        for info in page.items:
            scanned += 1
            if info.id.startswith(prefix):
                counts[info.status] = counts.get(info.status, 0) + 1
                if status is None or info.status is status:
                    matched.append(info)
        token = page.next_page_token
        if token is None:
            break
    return matched[offset : offset + size], counts, len(matched) > offset + size, scanned


def workflows_page(request: Request) -> Response:
    ui = ui_of(request)
    ctx, status = _list_context(ui, request)
    return ui.render(request, "workflows.html", ctx, status)


def workflows_partial(request: Request) -> Response:
    ui = ui_of(request)
    ctx, status = _list_context(ui, request)
    return ui.render(request, "_workflows_table.html", ctx, status)


# --------------------------------------------------------------------------- one run


def _load(request: Request) -> tuple[Ui, WorkflowInfo, list[Event]]:
    ui = ui_of(request)
    info = ui.store.describe(_required(request, "id"), _param(request, "run"))
    return ui, info, ui.store.read(info.id, info.run_id)


def _slot_url(urls: Urls, ev: Event, payload: Any, wid: str, run: str) -> str:
    for n, (_, p) in enumerate(payload_slots(ev)):
        if p is payload:
            return urls.payload(wid, run, ev.index, n)
    return urls.payload(wid, run, ev.index, 0)  # pragma: no cover - payload is in ev


def _pview(ui: Ui, urls: Urls, label: str, ev: Event, p: Any, info: WorkflowInfo) -> PayloadView:
    url = _slot_url(urls, ev, p, info.id, info.run_id)
    return payload_view(label, p, ui.client.decode, has_keys=ui.has_keys, url=url)


def _live(ui: Ui, urls: Urls, info: WorkflowInfo, history: list[Event]) -> dict[str, Any]:
    """The part of a run page that changes while it runs (polled by htmx)."""
    queries: list[PayloadView] = []
    for ev in reversed(history):
        if isinstance(ev, WorkflowTaskCompleted) and ev.queries is not None:
            queries = [_pview(ui, urls, k, ev, v, info) for k, v in ev.queries.items()]
            break
    now = datetime.now(UTC)
    due = None if info.due is None else "now" if info.due <= now else format_time(info.due)
    waits = pending(history)
    for c in waits.children:
        c["url"] = urls.workflow(c["workflow_id"])
    return {
        "info": info,
        "status": info.status.value,
        "start": format_time(info.start_time),
        "close": format_time(info.close_time),
        "due": due,
        "pending": waits,
        "queries": queries,
        "length": len(history),
        "running": info.status is Status.RUNNING,
    }


def _links(ui: Ui, urls: Urls, info: WorkflowInfo, history: list[Event]) -> list[LinkView]:
    links = []
    started = history[0]
    if isinstance(started, WorkflowStarted):
        if started.parent is not None:
            links.append(("Parent", link_view(started.parent, urls)))
        if started.continued_from is not None:
            links.append(("Continued from", link_view(started.continued_from, urls)))
        if started.reset_from is not None:
            links.append(("Reset from", link_view(started.reset_from, urls)))
    last = history[-1]
    if isinstance(last, WorkflowContinuedAsNew) and last.new_run_id:
        target = urls.workflow(info.id, last.new_run_id)
        links.append(("Continued as", LinkView(f"{info.id} / {last.new_run_id}", target)))
    latest = ui.store.describe(info.id)
    if latest.run_id != info.run_id:
        target = urls.workflow(info.id, latest.run_id)
        note = latest.status.value
        links.append(("Latest run", LinkView(f"{info.id} / {latest.run_id}", target, note)))
    out = []
    for label, link in links:
        link.note = f"{label}" + (f" · {link.note}" if link.note else "")
        out.append(link)
    return out


def _children(urls: Urls, history: list[Event]) -> list[dict[str, str]]:
    outcome: dict[int, tuple[str, str]] = {}
    for ev in history:
        if isinstance(ev, ChildWorkflowCompleted):
            outcome[ev.seq] = ("COMPLETED", ev.run_id)
        elif isinstance(ev, ChildWorkflowFailed):
            outcome[ev.seq] = ("FAILED", ev.run_id)
    return [
        {
            "id": ev.workflow_id,
            "type": ev.workflow_type,
            "state": outcome.get(ev.seq, ("RUNNING", ""))[0],
            "url": urls.workflow(ev.workflow_id, outcome.get(ev.seq, ("", ""))[1] or None),
        }
        for ev in history
        if isinstance(ev, ChildWorkflowStarted)
    ]


def _outcome(ui: Ui, urls: Urls, info: WorkflowInfo, history: list[Event]) -> dict[str, Any]:
    last = history[-1]
    out: dict[str, Any] = {"result": None, "failure": None, "reason": None}
    if type(last) not in CLOSING_EVENTS:
        return out
    match last:
        case WorkflowCompleted(result=result):
            out["result"] = _pview(ui, urls, "result", last, result, info)
        case WorkflowFailed(error=error):
            details = None
            if error.details is not None:
                details = _pview(ui, urls, "details", last, error.details, info)
            out["failure"] = failure_view(error, details)
        case WorkflowTerminated(reason=reason) | WorkflowCancelled(reason=reason):
            out["reason"] = reason or "no reason given"
        case WorkflowContinuedAsNew(input=new_input):
            out["result"] = _pview(ui, urls, "next input", last, new_input, info)
    return out


def _boundaries(history: list[Event]) -> list[dict[str, Any]]:
    out = []
    for i in decision_boundaries(history):
        then = [type(ev).__name__ for ev in history[i + 1 : i + 3]]
        out.append(
            {"index": i, "time": format_time(history[i].time), "then": ", ".join(then) or "—"}
        )
    return out


def _graph(ui: Ui, info: WorkflowInfo, history: list[Event]) -> tuple[Any, int]:
    status = info.status.value
    graph = None
    if info.type.startswith("pipeline:"):
        try:
            view = scan(history, ui.client.decode)
        except Exception:  # NB: a picture never breaks the page; the events one follows
            view = None
        if view is not None and view.spec is not None:
            graph = pipeline_graph(view.spec, view.tasks, status)
    if graph is None:
        graph = run_graph(history, status)
    if len(graph.nodes) > MAX_NODES:
        return None, len(graph.nodes)
    return render_svg(graph, title=f"{info.id}: {info.type}"), len(graph.nodes)


def workflow_page(request: Request) -> Response:
    ui, info, history = _load(request)
    urls = _urls(request)
    started = history[0]
    rows = timeline(history[-MAX_ROWS:], ui.client.decode, urls, has_keys=ui.has_keys)
    svg, nodes = _graph(ui, info, history)
    ctx: dict[str, Any] = {
        **_live(ui, urls, info, history),
        **_outcome(ui, urls, info, history),
        "input": (
            _pview(ui, urls, "input", started, started.input, info)
            if isinstance(started, WorkflowStarted)
            else None
        ),
        "links": _links(ui, urls, info, history),
        "children": _children(urls, history),
        "rows": rows,
        "hidden_rows": max(0, len(history) - MAX_ROWS),
        "boundaries": _boundaries(history),
        "svg": svg,
        "nodes": nodes,
        "done": DONE.get(query(request.scope).get("done", "")),
        "live_url": urls.path(
            "/partials/workflow", id=info.id, run=info.run_id, shown=len(history)
        ),
        "history_url": urls.path("/workflow/history.json", id=info.id, run=info.run_id),
        "mermaid_url": urls.path("/workflow/graph.mmd", id=info.id, run=info.run_id),
        "self_url": urls.workflow(info.id, info.run_id),
    }
    return ui.render(request, "workflow.html", ctx)


def workflow_partial(request: Request) -> Response:
    ui, info, history = _load(request)
    urls = _urls(request)
    try:
        shown = int(query(request.scope).get("shown", "0"))
    except ValueError:
        shown = 0
    ctx = _live(ui, urls, info, history)
    ctx["new_events"] = max(0, len(history) - shown) if shown else 0
    ctx["live_url"] = urls.path("/partials/workflow", id=info.id, run=info.run_id, shown=shown)
    ctx["self_url"] = urls.workflow(info.id, info.run_id)
    return ui.render(request, "_workflow_live.html", ctx)


def payload(request: Request) -> Response:
    """One payload of one event, fetched (from the CAS), decrypted and decoded now."""
    ui, info, _ = _load(request)
    event, n = _int(request, "event"), _int(request, "n")
    found = ui.store.read(info.id, info.run_id, after=event) if event >= 0 else []
    if not found or found[0].index != event:
        raise HTTPException(404, f"run {info.run_id} has no event {event}")
    slots = payload_slots(found[0])
    if not 0 <= n < len(slots):
        raise HTTPException(404, f"event {event} has no payload #{n}")
    label, p = slots[n]
    view = payload_view(label, p, ui.client.decode, has_keys=ui.has_keys, url=None, fetch=True)
    if "hx-request" in request.headers:
        return ui.render(request, "_payload_body.html", {"p": view})
    back = _urls(request).workflow(info.id, info.run_id)
    ctx = {"p": view, "info": info, "event": event, "back": back}
    return ui.render(request, "payload.html", ctx)


def _attachment(name: str) -> str:
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)
    return (
        f'attachment; filename="{safe[:120] or "workflow"}"; '
        f"filename*=UTF-8''{urllib.parse.quote(name[:200], safe='')}"
    )


def history_json(request: Request) -> Response:
    """The run's history in ``engine.events.encode_history`` format (what ``tpp verify`` reads)."""
    _, info, history = _load(request)
    return Response(
        encode_history(history),
        media_type="application/json",
        headers={"content-disposition": _attachment(f"{info.id}.{info.run_id}.json")},
    )


def graph_mermaid(request: Request) -> Response:
    """The run as the Mermaid flowchart ``tpp workflow graph`` prints."""
    ui, info, history = _load(request)
    text = history_mermaid(history, ui.client.decode)
    return Response(
        text,
        media_type="text/plain; charset=utf-8",
        headers={"content-disposition": _attachment(f"{info.id}.{info.run_id}.mmd")},
    )


# --------------------------------------------------------------------------- stats


def stats_page(request: Request) -> Response:
    """What ``tpp stats`` computes: runs per workflow type, activities per activity type."""
    ui = ui_of(request)
    kind, since_text = _param(request, "type"), _param(request, "since")
    ctx: dict[str, Any] = {"type": kind or "", "since": since_text or "", "error": None}
    try:
        since = _time(since_text, "since")
    except ValueError as exc:
        ctx.update(error=str(exc), stats=None)
        return ui.render(request, "stats.html", ctx, 400)
    stats = compute(ui.store, type=kind, since=since, decode=ui.client.decode)
    ctx["stats"] = stats
    ctx["workflows"] = {k: msgspec.structs.asdict(v) for k, v in stats.workflows.items()}
    ctx["activities"] = [
        {
            "name": name,
            **{k: v for k, v in msgspec.structs.asdict(a).items() if k not in ("p50", "p95")},
            "p50": format_seconds(a.p50),
            "p95": format_seconds(a.p95),
        }
        for name, a in stats.activities.items()
    ]
    ctx["pipelines"] = [
        {"pipeline": p, "task": t, **msgspec.structs.asdict(s)}
        for p, tasks in stats.pipelines.items()
        for t, s in tasks.items()
    ]
    return ui.render(request, "stats.html", ctx)
