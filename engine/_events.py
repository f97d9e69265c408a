"""The history model: payloads, failures and the events of a workflow run.

A run is an append-only list of events, one tagged union (``Event``), encoded
with msgspec as JSON or msgpack at the store boundary.  Every event carries its
``index`` in the log (set by the store when it appends) and a UTC ``time``.

Schema evolution (tested by the golden histories under ``tests/data/``):

1. A tag (the class name in ``"kind"``) never changes and is never reused.
2. A new field always has a default, so an old history decodes unchanged;
   ``omit_defaults`` keeps encodings small and makes old writers' output
   identical to new writers' output for the same data.
3. A field is never removed or retyped; a replaced field is kept and ignored.
4. ``WorkflowStarted.schema`` records ``SCHEMA_VERSION`` at the start of a run,
   bumped only for a change of meaning that readers must branch on.
5. Unknown fields are ignored on decode (msgspec's default), so a newer
   writer's history still loads in an older reader when only fields were added.

Payloads are an envelope union: ``Json`` (inline JSON text, readable in a
history file), ``Inline`` (bytes in another encoding), and the wrappers
``Compressed``, ``Encrypted`` and ``CasRef`` whose bytes hold an encoded inner
payload.  The core never looks inside a payload it does not need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec

from ._retry import RetryPolicy

SCHEMA_VERSION: Final = 1

# --------------------------------------------------------------------------- payloads


class _Payload(msgspec.Struct, frozen=True, kw_only=True, tag_field="p", omit_defaults=True):
    pass


class Json(_Payload, frozen=True, tag="json"):
    """A value encoded as JSON text, kept inline."""

    text: str


class Inline(_Payload, frozen=True, tag="inline"):
    """A value encoded as bytes (``encoding`` names the format, e.g. ``"msgpack"``)."""

    data: bytes
    encoding: str = "msgpack"


class Compressed(_Payload, frozen=True, tag="zstd"):
    """``data`` decompresses to a msgpack-encoded inner ``Payload``."""

    data: bytes
    algorithm: str = "zstd"


class Encrypted(_Payload, frozen=True, tag="aesgcm"):
    """``data`` (AES-GCM with ``nonce`` under key ``key_id``) decrypts to an inner ``Payload``."""

    key_id: str
    nonce: bytes
    data: bytes


class CasRef(_Payload, frozen=True, tag="cas"):
    """The CAS blob ``digest`` (``size`` bytes) holds an encoded inner ``Payload``."""

    digest: str
    size: int


Payload = Json | Inline | Compressed | Encrypted | CasRef


class Failure(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An exception as data: what failed, never the exception object itself."""

    type: str
    message: str
    traceback: str = ""
    cause: Failure | None = None
    details: Payload | None = None
    non_retryable: bool = False


class Link(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A pointer to another run: a parent, the run continued from, the run reset from."""

    workflow_id: str
    run_id: str
    seq: int = 0
    event: int = 0
    reason: str = ""


class CommandRecord(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """A command that has no event of its own (``WaitSignal``, ``All``, ``Any``).

    Recorded in its decision's ``WorkflowTaskCompleted.commands`` so replay can
    check it like any other command.  ``detail`` is the signal timeout in seconds
    or the number of members of ``All``/``Any``.
    """

    seq: int
    kind: str
    name: str = ""
    detail: float = 0


# --------------------------------------------------------------------------- events


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", omit_defaults=True):
    index: int = -1
    time: datetime


class WorkflowStarted(_Event, frozen=True, tag="WorkflowStarted"):
    workflow_type: str
    workflow_id: str
    run_id: str
    input: Payload
    task_queue: str = "default"
    parent: Link | None = None
    continued_from: Link | None = None
    reset_from: Link | None = None
    schema: int = SCHEMA_VERSION


class WorkflowTaskCompleted(_Event, frozen=True, tag="WorkflowTaskCompleted"):
    """Opens a decision batch; the decision saw ``history[:seen]``."""

    seen: int
    batch_id: str
    commands: tuple[CommandRecord, ...] = ()
    queries: dict[str, Payload] | None = None
    worker: str = ""


class ActivityScheduled(_Event, frozen=True, tag="ActivityScheduled"):
    seq: int
    activity_type: str
    args: Payload
    args_digest: int
    task_queue: str = ""
    retry: RetryPolicy | None = None
    start_to_close: timedelta | None = None
    schedule_to_close: timedelta | None = None
    heartbeat_timeout: timedelta | None = None


class ActivityCompleted(_Event, frozen=True, tag="ActivityCompleted"):
    seq: int
    result: Payload
    attempt: int = 1


class ActivityFailed(_Event, frozen=True, tag="ActivityFailed"):
    seq: int
    error: Failure
    attempt: int = 1


class ActivityAttemptFailed(_Event, frozen=True, tag="ActivityAttemptFailed"):
    seq: int
    attempt: int
    error: Failure
    retry_at: datetime


class TimerStarted(_Event, frozen=True, tag="TimerStarted"):
    seq: int
    duration: timedelta
    fire_at: datetime


class TimerFired(_Event, frozen=True, tag="TimerFired"):
    seq: int


class TimerCancelled(_Event, frozen=True, tag="TimerCancelled"):
    seq: int


class SignalReceived(_Event, frozen=True, tag="SignalReceived"):
    name: str
    payload: Payload
    request_id: str = ""


class CancelRequested(_Event, frozen=True, tag="CancelRequested"):
    reason: str = ""


class ChildWorkflowStarted(_Event, frozen=True, tag="ChildWorkflowStarted"):
    seq: int
    workflow_type: str
    workflow_id: str
    args: Payload
    args_digest: int
    task_queue: str = ""


class ChildWorkflowCompleted(_Event, frozen=True, tag="ChildWorkflowCompleted"):
    seq: int
    result: Payload
    run_id: str = ""


class ChildWorkflowFailed(_Event, frozen=True, tag="ChildWorkflowFailed"):
    seq: int
    error: Failure
    run_id: str = ""


class MarkerRecorded(_Event, frozen=True, tag="MarkerRecorded"):
    """``name="side_effect"`` (keyed by ``seq``) or ``name="patch"`` (keyed by ``change_id``)."""

    name: str
    seq: int = 0
    change_id: str = ""
    value: Payload | None = None
    error: Failure | None = None


class WorkflowCompleted(_Event, frozen=True, tag="WorkflowCompleted"):
    result: Payload


class WorkflowFailed(_Event, frozen=True, tag="WorkflowFailed"):
    error: Failure


class WorkflowCancelled(_Event, frozen=True, tag="WorkflowCancelled"):
    reason: str = ""


class WorkflowTerminated(_Event, frozen=True, tag="WorkflowTerminated"):
    reason: str = ""


class WorkflowContinuedAsNew(_Event, frozen=True, tag="WorkflowContinuedAsNew"):
    input: Payload
    new_run_id: str = ""


Event = (
    WorkflowStarted
    | WorkflowTaskCompleted
    | ActivityScheduled
    | ActivityCompleted
    | ActivityFailed
    | ActivityAttemptFailed
    | TimerStarted
    | TimerFired
    | TimerCancelled
    | SignalReceived
    | CancelRequested
    | ChildWorkflowStarted
    | ChildWorkflowCompleted
    | ChildWorkflowFailed
    | MarkerRecorded
    | WorkflowCompleted
    | WorkflowFailed
    | WorkflowCancelled
    | WorkflowTerminated
    | WorkflowContinuedAsNew
)

#: Events a decision writes (after its ``WorkflowTaskCompleted``); all others come from outside.
DECISION_EVENTS: Final = frozenset(
    {
        WorkflowTaskCompleted,
        ActivityScheduled,
        TimerStarted,
        TimerCancelled,
        ChildWorkflowStarted,
        MarkerRecorded,
        WorkflowCompleted,
        WorkflowFailed,
        WorkflowCancelled,
        WorkflowContinuedAsNew,
    }
)
#: Events that close a run.
CLOSING_EVENTS: Final = frozenset(
    {
        WorkflowCompleted,
        WorkflowFailed,
        WorkflowCancelled,
        WorkflowTerminated,
        WorkflowContinuedAsNew,
    }
)

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(Event)
_json_list_decoder = msgspec.json.Decoder(list[Event])
_mp_encoder = msgspec.msgpack.Encoder()
_mp_decoder = msgspec.msgpack.Decoder(Event)
_mp_list_decoder = msgspec.msgpack.Decoder(list[Event])
_payload_mp_decoder = msgspec.msgpack.Decoder(Payload)


def _check_format(format: str) -> None:
    if format not in ("json", "msgpack"):
        raise ValueError(f"unknown event encoding {format!r}: use 'json' or 'msgpack'")


def encode_event(event: Event, *, format: str = "json") -> bytes:
    """Encode one event (``format`` is ``"json"`` or ``"msgpack"``)."""
    _check_format(format)
    return _json_encoder.encode(event) if format == "json" else _mp_encoder.encode(event)


def decode_event(data: bytes, *, format: str = "json") -> Event:
    """Decode one event; raises ``msgspec.ValidationError`` on malformed input."""
    _check_format(format)
    if format == "json":
        return _json_decoder.decode(data)  # type: ignore[no-any-return]
    return _mp_decoder.decode(data)  # type: ignore[no-any-return]


def encode_history(events: list[Event], *, format: str = "json") -> bytes:
    """Encode a whole history as one JSON array or msgpack array."""
    _check_format(format)
    return _json_encoder.encode(events) if format == "json" else _mp_encoder.encode(events)


def decode_history(data: bytes, *, format: str = "json") -> list[Event]:
    """Decode a history written by :func:`encode_history` (or ``tpp workflow show -o json``)."""
    _check_format(format)
    if format == "json":
        return _json_list_decoder.decode(data)
    return _mp_list_decoder.decode(data)


def encode_payload(payload: Payload) -> bytes:
    """The msgpack bytes an envelope wrapper (compression, encryption, CAS) stores."""
    return _mp_encoder.encode(payload)


def decode_payload(data: bytes) -> Payload:
    return _payload_mp_decoder.decode(data)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- payload walking
# Which fields of each event class hold payloads: ("p", name) a payload (or None),
# ("f", name) a Failure (or None: its details and causes), ("q", name) a dict of them.


def _payload_fields(cls: type) -> tuple[tuple[str, str], ...]:
    out = []
    for f in msgspec.structs.fields(cls):
        text = str(f.type)
        if "Failure" in text:
            out.append(("f", f.name))
        elif text.startswith("dict[") and "Json" in text:
            out.append(("q", f.name))
        elif "Json" in text:
            out.append(("p", f.name))
    return tuple(out)


_PAYLOAD_FIELDS: Final[dict[type, tuple[tuple[str, str], ...]]] = {
    cls: _payload_fields(cls) for cls in Event.__args__
}


def _map_failure(failure: Failure, fn: Callable[[Payload], Payload]) -> Failure:
    details = failure.details if failure.details is None else fn(failure.details)
    cause = failure.cause if failure.cause is None else _map_failure(failure.cause, fn)
    if details is failure.details and cause is failure.cause:
        return failure
    return msgspec.structs.replace(failure, details=details, cause=cause)


def map_payloads(event: Event, fn: Callable[[Payload], Payload]) -> Event:
    """``event`` with ``fn`` applied to every payload it holds (itself if none changed).

    Payloads sit in top-level fields, in ``WorkflowTaskCompleted.queries``, and in
    failures' ``details`` along their cause chain.
    """
    changes: dict[str, Any] = {}
    for kind, name in _PAYLOAD_FIELDS[type(event)]:
        old = getattr(event, name)
        if old is None:
            continue
        new: Any
        if kind == "p":
            new = fn(old)
        elif kind == "f":
            new = _map_failure(old, fn)
        else:
            mapped = {k: fn(v) for k, v in old.items()}
            new = old if all(mapped[k] is v for k, v in old.items()) else mapped
        if new is not old:
            changes[name] = new
    return msgspec.structs.replace(event, **changes) if changes else event


def iter_payloads(event: Event) -> Iterator[Payload]:
    """Every payload ``event`` holds, outermost envelopes only (see :func:`map_payloads`)."""
    for kind, name in _PAYLOAD_FIELDS[type(event)]:
        value = getattr(event, name)
        if value is None:
            continue
        if kind == "p":
            yield value
        elif kind == "q":
            yield from value.values()
        else:
            failure: Failure | None = value
            while failure is not None:
                if failure.details is not None:
                    yield failure.details
                failure = failure.cause


def cas_digests(events: Iterable[Event]) -> Iterator[str]:
    """The CAS digests that ``events`` reference (what ``tpp cas gc`` must keep)."""
    for event in events:
        for payload in iter_payloads(event):
            if type(payload) is CasRef:
                yield payload.digest


def with_index(event: Event, index: int, time: datetime | None = None) -> Event:
    """A copy of ``event`` at ``index`` (stores call this when they append)."""
    if time is None:
        return msgspec.structs.replace(event, index=index)
    return msgspec.structs.replace(event, index=index, time=time)


def event_name(event: Any) -> str:
    return type(event).__name__
