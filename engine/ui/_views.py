"""What the pages show, as plain data for the templates: payloads, timeline rows, links.

Nothing here writes HTML: templates do, with autoescape on, so every string
built here (ids, names, payload text, error messages) is escaped where it is
shown.  URLs are built by :class:`Urls`, which puts workflow ids in query
parameters, percent-encoded, so any string (slashes, spaces, unicode) round-trips.

Payloads are shown without I/O where that is possible: plain JSON and msgpack
are decoded at once; compressed and encrypted ones are opened when the UI
has the codec's keys (without them an encrypted payload says so and shows
nothing else); a payload in the CAS, or one too large to inline, is fetched
on demand from the ``/payload`` endpoint.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import msgspec

from .._errors import PayloadKeyError, WorkflowError
from .._events import (
    CasRef,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    Compressed,
    Encrypted,
    Event,
    Failure,
    Inline,
    Json,
    Link,
    Payload,
    WorkflowStarted,
    WorkflowTaskCompleted,
)
from ..cli._common import format_duration, format_time
from ..cli._render import SUMMARY, show_value

__all__ = [
    "FailureView",
    "FieldView",
    "LinkView",
    "PayloadView",
    "Row",
    "Urls",
    "failure_view",
    "payload_slots",
    "payload_view",
    "pretty",
    "query",
    "timeline",
]

#: Payloads stored larger than this are fetched on demand rather than inlined in a page.
INLINE_LIMIT: Final = 16 * 1024
#: The most text one payload view holds (the history download has everything).
TEXT_LIMIT: Final = 2 * 1024 * 1024
_PREVIEW: Final = 90
_PAYLOAD_TYPES: Final = (Json, Inline, Compressed, Encrypted, CasRef)

Decode = Callable[[Payload], Any]


class Urls:
    """Links within the app (under ``root``, the ASGI root path), ids as query parameters.

    >>> Urls("/tpp").workflow("orders/7 ☃", "r1")
    '/tpp/workflow?id=orders%2F7%20%E2%98%83&run=r1'
    """

    def __init__(self, root: str = "") -> None:
        self.root = root.rstrip("/")

    def path(self, path: str, **params: Any) -> str:
        """``root + path`` with ``params`` (``None`` values left out) percent-encoded.

        NB: UTF-8 with ``surrogatepass``, as :func:`query` reads it back, so even an
        id with a lone surrogate (any ``str`` is a valid id) links to its page.
        """
        text = "&".join(
            f"{k}={urllib.parse.quote(str(v).encode('utf-8', 'surrogatepass'), safe='')}"
            for k, v in params.items()
            if v is not None and v != ""
        )
        return f"{self.root}{path}" + (f"?{text}" if text else "")

    def workflow(self, workflow_id: str, run_id: str | None = None, **params: Any) -> str:
        return self.path("/workflow", id=workflow_id, run=run_id, **params)

    def payload(self, workflow_id: str, run_id: str, event: int, n: int) -> str:
        return self.path("/payload", id=workflow_id, run=run_id, event=event, n=n)

    def static(self, name: str) -> str:
        return f"{self.root}/static/{name}"


def query(scope: Any) -> dict[str, str]:
    """A request's query parameters (``scope`` is the ASGI scope), as :meth:`Urls.path` wrote them.

    >>> query({"query_string": b"id=a%2Fb%20%E2%98%83&run=&id2=x+y"})
    {'id': 'a/b ☃', 'run': '', 'id2': 'x y'}
    """
    raw = scope.get("query_string", b"").decode("ascii", "replace")
    try:
        pairs = urllib.parse.parse_qsl(
            raw, keep_blank_values=True, encoding="utf-8", errors="surrogatepass"
        )
    except UnicodeDecodeError:  # not UTF-8 at all: not from a link of ours
        pairs = urllib.parse.parse_qsl(raw, keep_blank_values=True, errors="replace")
    return dict(pairs)


# --------------------------------------------------------------------------- payloads


@dataclass
class PayloadView:
    """One payload: ``kind`` is ``value`` (``text`` holds it), ``fetch`` (load it from
    ``url``), ``encrypted`` (no key to open it) or ``error`` (it could not be read)."""

    label: str
    kind: str
    preview: str
    text: str = ""
    url: str | None = None


def pretty(value: Any) -> str:
    """A decoded value as indented JSON (bytes as base64, datetimes as ISO 8601)."""
    try:
        return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str) -> str:
    return _clip(" ".join(text.split()), _PREVIEW)


def _stored_size(payload: Payload) -> int:
    match payload:
        case Json(text=text):
            return len(text)
        case CasRef(size=size):
            return size
        case Inline(data=data) | Compressed(data=data) | Encrypted(data=data):
            return len(data)
    return 0  # pragma: no cover - the union is closed


def _value(label: str, value: Any) -> PayloadView:
    text = pretty(value)
    if len(text) > TEXT_LIMIT:
        text = text[:TEXT_LIMIT] + f"\n… ({len(text) - TEXT_LIMIT:,} more characters: "
        text += "download the history for all of it)"
    return PayloadView(label, "value", _one_line(pretty_compact(value)), text)


def pretty_compact(value: Any) -> str:
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


def _encrypted(label: str, key_id: str, size: int, why: str) -> PayloadView:
    text = f"encrypted with key {key_id!r} ({size:,} B): {why}"
    return PayloadView(label, "encrypted", f"<encrypted, key {key_id}>", text)


def payload_view(
    label: str,
    payload: Payload,
    decode: Decode,
    *,
    has_keys: bool,
    url: str | None,
    fetch: bool = False,
) -> PayloadView:
    """How to show ``payload``: decoded now, or a link to fetch it (``fetch`` forces a decode).

    ``decode`` is ``Client.decode``; ``has_keys`` says whether its codec holds
    encryption keys.  A payload in the CAS, or larger than :data:`INLINE_LIMIT`
    as stored, is decoded only when ``fetch`` is set (the ``/payload`` endpoint).
    """
    size = _stored_size(payload)
    if isinstance(payload, Json) and (fetch or size <= INLINE_LIMIT):
        try:
            value = msgspec.json.decode(payload.text)
        except msgspec.DecodeError:
            return PayloadView(label, "value", _one_line(payload.text), payload.text)
        return _value(label, value)
    if isinstance(payload, Encrypted) and not has_keys:
        return _encrypted(label, payload.key_id, size, "this UI has no keys (start it with --keys)")
    if not fetch and (isinstance(payload, CasRef) or size > INLINE_LIMIT):
        where = (
            f"in the CAS: {payload.digest[:23]}… ({size:,} B)"
            if isinstance(payload, CasRef)
            else f"<{type(payload).__name__.lower()} {size:,} B>"
        )
        return PayloadView(label, "fetch", where, url=url)
    try:
        return _value(label, decode(payload))
    except PayloadKeyError as exc:
        key = payload.key_id if isinstance(payload, Encrypted) else "?"
        return _encrypted(label, key, size, str(exc))
    except (WorkflowError, TypeError, ValueError) as exc:
        return PayloadView(label, "error", "<unreadable>", f"{type(exc).__name__}: {exc}")


def payload_slots(event: Event) -> list[tuple[str, Payload]]:
    """Every payload ``event`` holds, labelled: fields, failure details, query values."""
    out: list[tuple[str, Payload]] = []
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if isinstance(value, _PAYLOAD_TYPES):
            out.append((name, value))
        elif isinstance(value, Failure):
            path = name
            chain: Failure | None = value
            while chain is not None:
                if chain.details is not None:
                    out.append((f"{path}.details", chain.details))
                path, chain = f"{path}.cause", chain.cause
        elif isinstance(value, dict):
            out.extend(
                (f"{name}.{k}", v) for k, v in value.items() if isinstance(v, _PAYLOAD_TYPES)
            )
    return out


# --------------------------------------------------------------------------- failures, links


@dataclass
class FailureView:
    type: str
    message: str
    non_retryable: bool
    traceback: str
    causes: list[str]
    details: PayloadView | None = None


def failure_view(failure: Failure, details: PayloadView | None = None) -> FailureView:
    causes = []
    cause = failure.cause
    while cause is not None:
        causes.append(f"{cause.type}: {cause.message}")
        cause = cause.cause
    return FailureView(
        failure.type, failure.message, failure.non_retryable, failure.traceback, causes, details
    )


@dataclass
class LinkView:
    text: str
    url: str
    note: str = ""


def link_view(link: Link, urls: Urls, text: str | None = None) -> LinkView:
    notes = [f"event {link.event}"] if link.event else []
    if link.reason:
        notes.append(link.reason)
    return LinkView(
        text or f"{link.workflow_id} / {link.run_id}",
        urls.workflow(link.workflow_id, link.run_id),
        "; ".join(notes),
    )


# --------------------------------------------------------------------------- the timeline


@dataclass
class FieldView:
    name: str
    text: str = ""
    payload: PayloadView | None = None
    failure: FailureView | None = None
    link: LinkView | None = None


@dataclass
class Row:
    """One event: its index, time, offset from the run's start, kind and main fields."""

    index: int
    time: str
    offset: str
    kind: str
    group: str
    fields: list[FieldView] = field(default_factory=list)
    boundary: bool = False


_GROUPS: Final = (
    ("Workflow", "workflow"),
    ("Activity", "activity"),
    ("Timer", "timer"),
    ("Signal", "signal"),
    ("Cancel", "cancel"),
    ("Child", "child"),
    ("Marker", "marker"),
)


def _group(kind: str) -> str:
    if kind == "WorkflowTaskCompleted":
        return "decision"
    if kind.endswith(("Failed", "Terminated")):
        return "bad"
    for prefix, group in _GROUPS:
        if kind.startswith(prefix):
            return group
    return "other"


def _offset(start: datetime, when: datetime) -> str:
    seconds = (when - start).total_seconds()
    if abs(seconds) < 60:
        return f"+{seconds:.3f}s"
    return "+" + format_duration(when - start)


def timeline(
    events: Sequence[Event],
    decode: Decode,
    urls: Urls,
    *,
    has_keys: bool,
) -> list[Row]:
    """One row per event, payloads as :class:`PayloadView`\\ s, links to other runs."""
    if not events:
        return []
    first = events[0]
    wid = first.workflow_id if isinstance(first, WorkflowStarted) else ""
    run = first.run_id if isinstance(first, WorkflowStarted) else ""
    child_runs = {
        ev.seq: ev.run_id
        for ev in events
        if isinstance(ev, ChildWorkflowCompleted | ChildWorkflowFailed) and ev.run_id
    }
    rows = []
    for ev in events:
        kind = type(ev).__name__
        row = Row(
            ev.index,
            format_time(ev.time),
            _offset(first.time, ev.time),
            kind,
            _group(kind),
            boundary=isinstance(ev, WorkflowTaskCompleted),
        )
        slots = payload_slots(ev)
        numbered = {id(p): n for n, (_, p) in enumerate(slots)}

        def view(
            label: str, p: Payload, ev: Event = ev, numbered: dict[int, int] = numbered
        ) -> PayloadView:
            url = urls.payload(wid, run, ev.index, numbered.get(id(p), 0))
            return payload_view(label, p, decode, has_keys=has_keys, url=url)

        for name in SUMMARY.get(type(ev), ()):
            value = getattr(ev, name)
            if value is None or value == "" or (name == "seq" and value == 0):
                continue
            if isinstance(value, _PAYLOAD_TYPES):
                row.fields.append(FieldView(name, payload=view(name, value)))
            elif isinstance(value, Failure):
                details = None if value.details is None else view("details", value.details)
                row.fields.append(FieldView(name, failure=failure_view(value, details)))
            elif isinstance(value, Link):
                row.fields.append(FieldView(name, link=link_view(value, urls)))
            elif isinstance(ev, ChildWorkflowStarted) and name == "workflow_id":
                target = urls.workflow(value, child_runs.get(ev.seq))
                row.fields.append(FieldView(name, link=LinkView(value, target)))
            elif name == "attempt" and value == 1:
                continue
            else:
                row.fields.append(FieldView(name, text=show_value(value, limit=None)))
        if isinstance(ev, WorkflowTaskCompleted) and ev.queries:
            for qname, qvalue in ev.queries.items():
                row.fields.append(FieldView(f"query {qname}", payload=view(qname, qvalue)))
        rows.append(row)
    return rows
