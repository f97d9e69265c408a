"""Golden histories: encoded histories under ``tests/data/`` that must always load.

Every run decodes each committed file with ``engine.events.decode_history``,
re-encodes it and compares the bytes, and replays the histories made by the
workflows defined here.  The files are never rewritten by a test run; to
regenerate them after a deliberate change (see ``tests/data/README.md``)::

    python -m tests.test_golden --regenerate
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import sys
from collections.abc import Callable, Generator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from engine import (
    ActivityError,
    All,
    CancelledError,
    ChildWorkflowError,
    ContinueAsNew,
    Interpreter,
    Now,
    Patched,
    RetryPolicy,
    ScheduleActivity,
    SetQuery,
    SideEffect,
    StartChildWorkflow,
    Timer,
    WaitSignal,
    activity,
    workflow,
)
from engine import Any as AnyOf
from engine.events import (
    SCHEMA_VERSION,
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    CancelRequested,
    CasRef,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    CommandRecord,
    Compressed,
    Encrypted,
    Event,
    Failure,
    Inline,
    Json,
    Link,
    MarkerRecorded,
    Payload,
    SignalReceived,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTaskCompleted,
    WorkflowTerminated,
    decode_event,
    decode_history,
    decode_payload,
    encode_event,
    encode_history,
    encode_payload,
    with_index,
)
from tests.history import History

DATA = pathlib.Path(__file__).resolve().parent / "data"
FORMATS = {"json": "json", "msgpack": "msgpack"}  # file suffix -> encode_history format

# --------------------------------------------------------------------------- the workflows


@dataclasses.dataclass
class Plan:
    name: str
    cents: int


@activity
def onboard(customer: str) -> None:
    pass


@activity
def charge(customer: str, cents: int) -> str:
    return "receipt"


@activity
def reserve(item: str) -> str:
    return "reservation"


@activity
def release(reservation: str) -> None:
    pass


@workflow
def subscription(customer: str, plan: Plan) -> Generator[Any, Any, Any]:
    yield ScheduleActivity(onboard, customer, start_to_close=timedelta(minutes=1))
    try:
        yield WaitSignal("cancel", timeout=timedelta(days=14))
        return "cancelled in trial"
    except TimeoutError:
        pass
    receipts = []
    for _ in range(2):
        receipts.append(
            (
                yield ScheduleActivity(
                    charge,
                    customer,
                    plan.cents,
                    retry=RetryPolicy(maximum_attempts=5, non_retryable=("CardDeclined",)),
                    schedule_to_close=timedelta(hours=1),
                    heartbeat_timeout=30,
                    task_queue="billing",
                )
            )
        )
        yield Timer(timedelta(days=30))
    return receipts


@workflow
def order(item: str) -> Generator[Any, Any, Any]:
    yield SetQuery("stage", "reserving")
    fast = yield Patched("fast-path")
    token = yield SideEffect(lambda: "tok-42")
    started = yield Now()
    reservation = yield ScheduleActivity(reserve, item)
    shipped = yield StartChildWorkflow("shipping", item, id=f"ship-{item}")
    with contextlib.suppress(ChildWorkflowError):
        yield StartChildWorkflow("insurance", item, task_queue="partners")
    with contextlib.suppress(ActivityError):
        yield All(ScheduleActivity(charge, item, 100), ScheduleActivity(charge, item, 5))
    yield SetQuery("stage", "waiting")
    try:
        won = yield AnyOf(WaitSignal("confirm"), Timer(timedelta(hours=1)))
        yield WaitSignal("ship")
    except CancelledError:
        yield ScheduleActivity(release, reservation)
        raise
    return [fast, token, started.isoformat(), shipped, won]  # pragma: no cover - cancelled


@workflow
def counter(n: int) -> Generator[Any, Any, Any]:
    yield Timer(60)
    yield ContinueAsNew(n + 1)


@workflow
def flaky() -> Generator[Any, Any, Any]:
    try:
        yield ScheduleActivity(charge, "c", 1)
    except ActivityError as exc:
        raise RuntimeError("giving up") from exc


@workflow
def stuck() -> Generator[Any, Any, Any]:
    yield WaitSignal("never")


T = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
DAY = 86400


def _subscription() -> History:
    h = History(subscription, "cust-7", Plan("monthly", 999), workflow_id="sub-7", start=T)
    h.decide().advance(2).complete(1).decide()
    h.advance(14 * DAY).fire(3).decide()
    h.advance(5).attempt_failed(4, 1, "TimeoutError").advance(1).complete(4, "rcpt-1", attempt=2)
    h.decide().advance(30 * DAY).fire(5).decide().advance(3).complete(6, "rcpt-2").decide()
    return h.advance(30 * DAY).fire(7).decide()


def _order() -> History:
    h = History(order, "book", workflow_id="order-1", start=T).decide()
    h.advance(1).complete(2, "res-1").decide()
    h.advance(60).child_completed(3, "tracking-9", run_id="ship-run").decide()
    h.advance(60).child_failed(4, "InsuranceDenied", "too risky", run_id="ins-run").decide()
    h.advance(1).fail(7, "CardDeclined", "insufficient funds", attempt=1).decide()
    h.advance(1).complete(6, "rcpt").decide()  # the other member ran on: recorded, unused
    h.advance(5).signal("confirm", {"by": "ann"}).decide()
    return h.advance(5).cancel("customer changed their mind").decide().complete(12).decide()


def _counter() -> History:
    return History(counter, 41, workflow_id="count", start=T).decide().advance(60).fire(1).decide()


def _flaky() -> History:
    h = History(flaky, workflow_id="flaky", start=T).decide()
    return h.advance(9).fail(1, "ConnectionError", "reset by peer", attempt=3).decide()


def _stuck() -> History:
    return (
        History(stuck, workflow_id="stuck", start=T).decide().advance(7).terminate("ops").decide()
    )


Workflow = Callable[..., Generator[Any, Any, Any]]
#: golden name -> (workflow, builder); each is replayed on every run
REPLAYED: dict[str, tuple[Workflow, Callable[[], History]]] = {
    "subscription": (subscription, _subscription),
    "order_cancelled": (order, _order),
    "counter_continued": (counter, _counter),
    "flaky_failed": (flaky, _flaky),
    "stuck_terminated": (stuck, _stuck),
}


# --------------------------------------------------------------------------- the payload zoo


def _payloads() -> list[Event]:
    """Every payload kind and optional field, built by hand (not replayed)."""
    inner = Json(text='{"big":"value"}')
    zipped = Compressed(data=b"\x28\xb5\x2f\xfd" + encode_payload(inner))
    sealed = Encrypted(key_id="k-2026", nonce=bytes(range(12)), data=b"\x01\x02\xff")
    offloaded = CasRef(digest="sha256:" + "ab" * 32, size=1 << 20)
    packed = Inline(data=msgspec.msgpack.encode(["c", 1]))
    cbor = Inline(data=b"\x82\x01\x02", encoding="cbor")
    cause = Failure(type="OSError", message="disk full", traceback="tb")
    error = Failure(
        type="app.SaveFailed",
        message="save",
        traceback="Traceback ...",
        cause=cause,
        details=sealed,
        non_retryable=True,
    )
    t = T
    return [
        WorkflowStarted(
            time=t,
            workflow_type="zoo",
            workflow_id="zoo-1",
            run_id="run-2",
            input=packed,
            task_queue="zoo-queue",
            parent=Link(workflow_id="parent", run_id="p-run", seq=3, event=17),
            continued_from=Link(workflow_id="zoo-1", run_id="run-1", reason="continue-as-new"),
            reset_from=Link(workflow_id="zoo-1", run_id="run-0", event=9, reason="bad deploy"),
            schema=SCHEMA_VERSION,
        ),
        WorkflowTaskCompleted(
            time=t,
            seen=1,
            batch_id="b1",
            commands=(
                CommandRecord(1, "all", "", 2.0),
                CommandRecord(2, "signal", "go", 86400.5),
                CommandRecord(5, "any", "", 0.0),
            ),
            queries={"stage": Json(text='"zoo"'), "blob": offloaded},
            worker="host-1/pid-2",
        ),
        ActivityScheduled(
            time=t,
            seq=3,
            activity_type="zoo.work",
            args=zipped,
            args_digest=0xFFFF_FFFF_FFFF,
            task_queue="q",
            retry=RetryPolicy(
                initial_interval=timedelta(seconds=2),
                backoff_coefficient=1.5,
                maximum_interval=timedelta(minutes=1),
                maximum_attempts=4,
                non_retryable=("ValueError",),
            ),
            start_to_close=timedelta(seconds=10),
            schedule_to_close=timedelta(minutes=2),
            heartbeat_timeout=timedelta(milliseconds=1500),
        ),
        TimerStarted(time=t, seq=4, duration=timedelta(days=1), fire_at=t + timedelta(days=1)),
        ChildWorkflowStarted(
            time=t,
            seq=6,
            workflow_type="zoo.child",
            workflow_id="zoo-1/run-2/6",
            args=sealed,
            args_digest=7,
            task_queue="children",
        ),
        MarkerRecorded(time=t, name="side_effect", seq=7, value=offloaded),
        MarkerRecorded(time=t, name="side_effect", seq=8, error=error),
        MarkerRecorded(time=t, name="patch", change_id="zoo-v2"),
        ActivityAttemptFailed(
            time=t, seq=3, attempt=1, error=cause, retry_at=t + timedelta(seconds=2)
        ),
        ActivityCompleted(time=t, seq=3, result=zipped, attempt=2),
        ActivityFailed(time=t, seq=9, error=error, attempt=4),
        SignalReceived(time=t, name="go", payload=sealed, request_id="req-1"),
        SignalReceived(time=t, name="go", payload=cbor),
        TimerFired(time=t, seq=4),
        ChildWorkflowCompleted(time=t, seq=6, result=offloaded, run_id="c-run"),
        ChildWorkflowFailed(time=t, seq=10, error=error, run_id="c-run-2"),
        CancelRequested(time=t, reason="zoo closing"),
        WorkflowTaskCompleted(time=t, seen=17, batch_id="b2"),
        TimerCancelled(time=t, seq=11),
        WorkflowCompleted(time=t, result=offloaded),
        WorkflowFailed(time=t, error=error),
        WorkflowCancelled(time=t, reason="zoo closing"),
        WorkflowContinuedAsNew(time=t, input=packed, new_run_id="run-3"),
        WorkflowTerminated(time=t, reason="the end"),
    ]


# --------------------------------------------------------------------------- files


def _normalise(events: list[Event]) -> list[Event]:
    """Tracebacks hold local paths and line numbers: keep the files reproducible."""
    out: list[Event] = []
    for ev in events:
        err = getattr(ev, "error", None)
        if isinstance(err, Failure):
            ev = msgspec.structs.replace(ev, error=_strip(err))  # type: ignore[type-var]
        out.append(ev)
    return out


def _strip(f: Failure) -> Failure:
    tb = f"Traceback (normalised for the golden file)\n{f.type}: {f.message}\n"
    cause = _strip(f.cause) if f.cause is not None else None
    return msgspec.structs.replace(f, traceback=tb, cause=cause)


def golden_histories() -> dict[str, list[Event]]:
    """Every golden history as the current code builds it."""
    out = {name: _normalise(build().events) for name, (_, build) in REPLAYED.items()}
    out["payloads"] = [with_index(e, i) for i, e in enumerate(_payloads())]
    return out


def encode_file(events: list[Event], suffix: str) -> bytes:
    """A golden file's bytes: msgpack as ``encode_history`` writes it; JSON one event a line."""
    if suffix == "msgpack":
        return encode_history(events, format="msgpack")
    return b"[\n" + b",\n".join(encode_event(e) for e in events) + b"\n]\n"


def regenerate() -> list[pathlib.Path]:
    DATA.mkdir(exist_ok=True)
    written = []
    for name, events in golden_histories().items():
        for suffix in FORMATS:
            path = DATA / f"{name}.{suffix}"
            path.write_bytes(encode_file(events, suffix))
            written.append(path)
    return written


#: every encoded history under tests/data (kept old files included)
GOLDEN = sorted(p.name for p in DATA.iterdir() if p.suffix[1:] in FORMATS)


def load(filename: str) -> list[Event]:
    path = DATA / filename
    if not path.exists():  # pragma: no cover - only when a file was deleted
        pytest.fail(f"{path} is missing: run `python -m tests.test_golden --regenerate`")
    suffix = filename.rsplit(".", 1)[1]
    return decode_history(path.read_bytes(), format=FORMATS[suffix])


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("filename", GOLDEN)
def test_golden_file_decodes_and_re_encodes_to_the_same_bytes(filename: str) -> None:
    events = load(filename)
    suffix = filename.rsplit(".", 1)[1]
    assert encode_file(events, suffix) == (DATA / filename).read_bytes()
    assert [e.index for e in events] == list(range(len(events)))
    # the one-line encoding of tpp workflow show reads the same events
    assert decode_history(encode_history(events, format=suffix), format=suffix) == events


@pytest.mark.parametrize("name", list(REPLAYED))
def test_golden_json_and_msgpack_hold_the_same_history(name: str) -> None:
    assert load(f"{name}.json") == load(f"{name}.msgpack")


@pytest.mark.parametrize("name", list(REPLAYED))
@pytest.mark.parametrize("suffix", list(FORMATS))
def test_golden_history_replays(name: str, suffix: str) -> None:
    wf, _ = REPLAYED[name]
    events = load(f"{name}.{suffix}")
    it = Interpreter(wf)
    it.feed(events)
    last = events[-1]
    closing = it.closing
    assert closing is not None and closing == last
    assert it.decide(T, "after") is None
    it.close()


#: histories recorded by older engine versions, replayed by today's code
#: (v0.1 made no decision for an input that changed nothing)
OLD_RECORDINGS = {"order_cancelled_v0_1": "order_cancelled"}


@pytest.mark.parametrize("old", list(OLD_RECORDINGS))
@pytest.mark.parametrize("suffix", list(FORMATS))
def test_old_recordings_still_replay(old: str, suffix: str) -> None:
    wf, _ = REPLAYED[OLD_RECORDINGS[old]]
    events = load(f"{old}.{suffix}")
    it = Interpreter(wf)
    it.feed(events)
    assert it.closing == events[-1]
    assert it.decide(T, "after") is None
    it.close()


def test_goldens_cover_every_event_kind_and_payload_kind() -> None:
    from engine.events import Event as EventUnion

    kinds: set[str] = set()
    payloads: set[str] = set()
    for filename in GOLDEN:
        for ev in load(filename):
            kinds.add(type(ev).__name__)
            payloads.update(_payload_kinds(ev))
    all_kinds = {t.__name__ for t in EventUnion.__args__}
    assert len(all_kinds) == 20
    assert kinds == all_kinds
    assert payloads == {"Json", "Inline", "Compressed", "Encrypted", "CasRef"}


def _payload_kinds(obj: Any) -> set[str]:
    if isinstance(obj, Json | Inline | Compressed | Encrypted | CasRef):
        return {type(obj).__name__}
    found: set[str] = set()
    if isinstance(obj, msgspec.Struct):
        for field in obj.__struct_fields__:
            found |= _payload_kinds(getattr(obj, field))
    elif isinstance(obj, dict):
        for v in obj.values():
            found |= _payload_kinds(v)
    elif isinstance(obj, tuple | list):
        for v in obj:
            found |= _payload_kinds(v)
    return found


def test_wrapped_payloads_round_trip() -> None:
    events = load("payloads.msgpack")
    zipped = events[2].args  # type: ignore[union-attr]
    assert isinstance(zipped, Compressed)
    assert decode_payload(zipped.data[4:]) == Json(text='{"big":"value"}')
    started = events[0]
    assert isinstance(started, WorkflowStarted) and isinstance(started.input, Inline)
    assert msgspec.msgpack.decode(started.input.data) == ["c", 1]


def test_the_committed_goldens_match_the_current_builders() -> None:
    """Not a schema rule, a tripwire: a change in what the engine records shows up here.

    If the change is deliberate and old histories still load (the other tests),
    regenerate the files and commit them with the change.
    """
    for name, events in golden_histories().items():
        assert load(f"{name}.json") == events, f"{name}: regenerate the golden files"


# --------------------------------------------------------------------------- schema evolution


def test_an_unknown_field_is_ignored() -> None:
    raw = (
        b'{"kind":"ActivityCompleted","index":4,"time":"2026-03-01T09:30:00Z","seq":3,'
        b'"result":{"p":"json","text":"1","encrypted_by":"future"},"attempt":2,'
        b'"worker":"from-a-newer-writer","extra":{"nested":[1,2]}}'
    )
    ev = decode_event(raw)
    assert ev == ActivityCompleted(index=4, time=T, seq=3, result=Json(text="1"), attempt=2)
    packed = msgspec.msgpack.encode(
        {
            "kind": "ActivityFailed",
            "time": T,
            "seq": 1,
            "error": {"type": "E", "message": "m", "retryable_after": 5},
            "shard": 9,
        }
    )
    assert decode_event(packed, format="msgpack") == ActivityFailed(
        time=T, seq=1, error=Failure(type="E", message="m")
    )


def test_a_missing_defaulted_field_takes_its_default() -> None:
    raw = (
        b'[{"kind":"WorkflowStarted","time":"2026-03-01T09:30:00Z","workflow_type":"w",'
        b'"workflow_id":"i","run_id":"r","input":{"p":"json","text":"[]"}},'
        b'{"kind":"WorkflowTaskCompleted","time":"2026-03-01T09:30:00Z","seen":1,"batch_id":"b"},'
        b'{"kind":"ActivityScheduled","time":"2026-03-01T09:30:00Z","seq":1,'
        b'"activity_type":"a","args":{"p":"json","text":"[]"},"args_digest":0},'
        b'{"kind":"ActivityCompleted","time":"2026-03-01T09:30:00Z","seq":1,'
        b'"result":{"p":"inline","data":"kQE="}}]'
    )
    started, head, scheduled, done = decode_history(raw)
    assert isinstance(started, WorkflowStarted)
    assert (started.index, started.task_queue, started.schema, started.parent) == (
        -1,
        "default",
        SCHEMA_VERSION,
        None,
    )
    assert isinstance(head, WorkflowTaskCompleted)
    assert (head.commands, head.queries, head.worker) == ((), None, "")
    assert isinstance(scheduled, ActivityScheduled)
    assert (scheduled.retry, scheduled.task_queue, scheduled.start_to_close) == (None, "", None)
    assert isinstance(done, ActivityCompleted)
    assert done.attempt == 1
    assert done.result == Inline(data=b"\x91\x01", encoding="msgpack")
    # a command record written before ``detail`` existed
    assert msgspec.json.decode(b'[3,"signal","s"]', type=CommandRecord) == CommandRecord(
        3, "signal", "s", 0
    )
    assert msgspec.json.decode(b'[4,"all"]', type=CommandRecord) == CommandRecord(4, "all")


def test_defaults_are_omitted_so_old_and_new_writers_agree() -> None:
    ev = ActivityCompleted(time=T, seq=1, result=Json(text="1"))
    assert encode_event(ev) == (
        b'{"kind":"ActivityCompleted","seq":1,"result":{"p":"json","text":"1"},'
        b'"time":"2026-03-01T09:30:00Z"}'
    )


def test_an_unknown_kind_is_an_error() -> None:
    with pytest.raises(msgspec.ValidationError, match="Invalid value 'WorkflowExploded'"):
        decode_event(b'{"kind":"WorkflowExploded","time":"2026-03-01T09:30:00Z"}')
    with pytest.raises(msgspec.ValidationError):
        decode_history(b'[{"kind":"TimerFired","time":"2026-03-01T09:30:00Z"}]')


def test_event_helpers() -> None:
    ev = TimerFired(time=T, seq=2)
    for fmt in ("json", "msgpack"):
        assert decode_event(encode_event(ev, format=fmt), format=fmt) == ev
    moved = with_index(ev, 7)
    assert (moved.index, moved.time) == (7, T)
    later = T + timedelta(seconds=1)
    assert with_index(ev, 8, later) == TimerFired(index=8, time=later, seq=2)
    payload: Payload = CasRef(digest="d", size=1)
    assert decode_payload(encode_payload(payload)) == payload
    from engine._events import event_name

    assert event_name(ev) == "TimerFired"


if __name__ == "__main__":  # pragma: no cover - by hand only
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python -m tests.test_golden --regenerate")
    for p in regenerate():
        print(f"wrote {p.relative_to(DATA.parent.parent)}")
