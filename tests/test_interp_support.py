"""What the interpreter builds on: definitions, the JSON codec, retry policies, commands."""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
import pytest

from engine import JsonCodec, RetryPolicy, ScheduleActivity, Timer, activity, workflow
from engine._codec import MsgpackCodec, fingerprint
from engine._commands import to_timedelta
from engine._defs import (
    ActivityDefinition,
    WorkflowDefinition,
    activity_definition,
    result_type_of,
    type_name,
    workflow_definition,
)
from engine._errors import PayloadTooLargeError
from engine.events import Compressed, Inline, Json

# --------------------------------------------------------------------------- definitions


@dataclasses.dataclass
class Item:
    sku: str


@activity
def fetch(sku: str, *more: int, flag: bool = False, **extra: Any) -> Item:
    return Item(sku)


@activity(name="renamed")
async def fetch_async(sku: str) -> list[Item]:
    return [Item(sku)]


@workflow
def flow(a: int, b: Item, /, c: str = "", *rest: float, key: int = 0) -> Generator[Any, Any, str]:
    yield Timer(1)
    return "x"


def test_definitions_read_names_and_annotations() -> None:
    d = workflow_definition(flow)
    assert isinstance(d, WorkflowDefinition)
    assert d.name == "flow" and d.fn is flow
    assert d.param_types() == ([int, Item, str], float)
    assert d.param_types() is d.param_types()  # cached
    assert d.result_type() is str
    a = activity_definition(fetch)
    assert isinstance(a, ActivityDefinition)
    assert (a.name, a.is_async, a.result_type()) == ("fetch", False, Item)
    assert a.param_types() == ([str], int)
    r = activity_definition(fetch_async)
    assert (r.name, r.is_async, r.result_type()) == ("renamed", True, list[Item])


def test_result_types() -> None:
    @workflow
    def untyped():  # type: ignore[no-untyped-def]
        yield Timer(1)

    @workflow
    def returns_none() -> Generator[Any, Any, None]:
        yield Timer(1)

    @workflow
    def bare() -> Generator:  # type: ignore[type-arg]
        yield Timer(1)

    @workflow
    def iterator() -> Iterator[Any]:
        yield Timer(1)

    @workflow
    def short() -> collections.abc.Generator[Any]:  # type: ignore[type-arg]
        yield Timer(1)

    @workflow
    def unresolvable() -> Generator[Any, Any, NoSuchType]:  # type: ignore[name-defined]  # noqa: F821
        yield Timer(1)

    for wf in (untyped, returns_none, bare, iterator, short, unresolvable):
        assert workflow_definition(wf).result_type() is Any
    assert workflow_definition(unresolvable).param_types() == ([], None)

    def plain(x):  # type: ignore[no-untyped-def]
        return x

    def typed(x: int) -> int:
        return x

    assert result_type_of("by.name") is Any
    assert result_type_of(fetch) is Item
    assert result_type_of(typed) is int
    assert result_type_of(plain) is Any


def test_definition_errors() -> None:
    with pytest.raises(TypeError, match="needs a generator function"):
        workflow(lambda: None)
    with pytest.raises(TypeError, match="@activity needs a function, got 3"):
        activity(3)
    with pytest.raises(TypeError, match="a type name must be a non-empty string, got 3"):

        @workflow(name=3)  # type: ignore[call-overload]
        def nameless() -> Generator[Any, Any, Any]:
            yield Timer(1)

    with pytest.raises(TypeError, match="'fetch' is not a workflow: decorate it with @workflow"):
        workflow_definition(fetch)
    with pytest.raises(TypeError, match="'flow' is a workflow, not an activity"):
        activity_definition(flow)
    with pytest.raises(TypeError, match="an activity must be a function or a type name string"):
        activity_definition(functools.partial(print, 1))


def test_activity_definitions_of_plain_functions_and_methods() -> None:
    def plain(x: int) -> int:
        return x

    d = activity_definition(plain)
    assert (d.name, d.fn) == ("plain", plain)

    class Shop:
        @activity(name="shop.buy")
        def buy(self, n: int) -> int:
            return n

    shop = Shop()
    bound = activity_definition(shop.buy)
    assert bound.name == "shop.buy"
    assert bound.fn == shop.buy
    assert bound.param_types() == ([int], None)


def test_type_names() -> None:
    assert type_name("x.y", "activity") == "x.y"
    assert type_name(fetch_async, "activity") == "renamed"
    assert type_name(print, "activity") == "print"
    with pytest.raises(TypeError, match="activity type name must not be empty"):
        type_name("", "activity")
    with pytest.raises(TypeError, match="child workflow must be a function or a type name"):
        type_name(42, "child workflow")


# --------------------------------------------------------------------------- the JSON codec


def test_codec_round_trips_into_annotated_types() -> None:
    c = JsonCodec()
    p = c.encode(Item("a"))
    assert p == Json(text='{"sku":"a"}')
    assert c.decode(p, Item) == Item("a")
    assert c.decode(p) == {"sku": "a"}
    assert c.decode(p, Item) == Item("a")  # the cached decoder
    payload, digest = c.encode_args(["a", 1])
    assert payload == Json(text='["a",1]')
    assert digest == c.fingerprint_args(("a", 1)) == fingerprint(b'["a",1]')
    assert c.decode_args(Json(text='[{"sku":"b"},1,2]'), [Item], int) == [Item("b"), 1, 2]


def test_fingerprint_is_crc_and_length() -> None:
    assert fingerprint(b"") == 0
    assert fingerprint(b"abc") >> 32 == 3
    assert fingerprint(b"abc") != fingerprint(b"abd")


def test_codec_errors() -> None:
    c = JsonCodec()
    with pytest.raises(TypeError, match="cannot be serialised") as info:
        c.encode(object())
    assert "msgspec-serialisable" in str(info.value)
    with pytest.raises(TypeError, match="a Compressed payload needs the codec chain"):
        c.decode(Compressed(data=b""))
    with pytest.raises(TypeError, match="in encoding 'cbor' cannot be read"):
        c.decode(Inline(data=b"", encoding="cbor"))
    with pytest.raises(TypeError, match="payload does not match the annotated type"):
        c.decode(MsgpackCodec().encode("x"), int)
    with pytest.raises(ValueError, match="max_payload must be a positive number"):
        JsonCodec(max_payload=0)
    with pytest.raises(PayloadTooLargeError, match="21 bytes is above the limit of 20 bytes"):
        JsonCodec(max_payload=20).encode("x" * 19)
    with pytest.raises(TypeError, match="payload does not match the annotated type"):
        c.decode(Json(text='"x"'), int)
    with pytest.raises(TypeError, match="got 2 arguments, the function takes 1"):
        c.decode_args(Json(text="[1,2]"), [int], None)
    with pytest.raises(TypeError, match="argument 2 does not match"):
        c.decode_args(Json(text='[1,"x"]'), [int], int)


def test_msgpack_codec_round_trips_and_both_codecs_read_both_formats() -> None:
    @dataclass
    class Item:
        sku: str
        blob: bytes
        at: datetime

    at = datetime(2026, 11, 26, tzinfo=UTC)
    for writer in (JsonCodec(), MsgpackCodec()):
        payload, digest = writer.encode_args([Item("a", b"\x00\xff", at), 3])
        assert digest == writer.fingerprint_args([Item("a", b"\x00\xff", at), 3])
        for reader in (JsonCodec(), MsgpackCodec()):
            assert reader.decode_args(payload, [Item, int], None) == [Item("a", b"\x00\xff", at), 3]
            assert reader.decode(writer.encode({"k": [1.5, None]})) == {"k": [1.5, None]}
    assert type(MsgpackCodec().encode(1)) is Inline


def test_codec_with_an_unhashable_annotation() -> None:
    tp = Annotated[int, {"unhashable": "metadata"}]
    for c in (JsonCodec(), MsgpackCodec()):
        assert c.decode(c.encode(5), tp) == 5
        assert c.decode(c.encode(6), tp) == 6


# --------------------------------------------------------------------------- retry policies


def test_retry_defaults_follow_temporal() -> None:
    p = RetryPolicy()
    assert p.initial_interval == timedelta(seconds=1)
    assert [p.delay(n).total_seconds() for n in (1, 2, 3, 8, 20)] == [1, 2, 4, 100, 100]
    assert p.retries(1000, "ValueError")
    assert msgspec.json.encode(p) == b"{}"


def test_retry_limits() -> None:
    p = RetryPolicy(
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=3,
        maximum_interval=timedelta(seconds=10),
        maximum_attempts=3,
        non_retryable=("CardDeclined", "billing.Fraud"),
    )
    assert [p.delay(n).total_seconds() for n in (1, 2, 3)] == [2, 6, 10]
    assert p.retries(2, "ValueError")
    assert not p.retries(3, "ValueError")
    assert not p.retries(1, "CardDeclined")
    assert not p.retries(1, "billing.CardDeclined")
    assert not p.retries(1, "billing.Fraud")
    assert p.retries(1, "other.Fraud")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"initial_interval": timedelta()}, "initial_interval must be a positive timedelta"),
        ({"initial_interval": 5}, "initial_interval must be a positive timedelta"),
        ({"backoff_coefficient": 0.5}, "backoff_coefficient must be >= 1"),
        (
            {"initial_interval": timedelta(seconds=5), "maximum_interval": timedelta(seconds=1)},
            "maximum_interval must be >= initial_interval",
        ),
        ({"maximum_attempts": -1}, "maximum_attempts must be >= 0"),
    ],
)
def test_retry_validation(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**options)


# --------------------------------------------------------------------------- commands


def test_commands_are_frozen_structs_with_star_args() -> None:
    cmd = ScheduleActivity(fetch, "a", 1, retry=RetryPolicy(), start_to_close=5)
    assert cmd.args == ("a", 1)
    assert cmd.start_to_close == 5 and cmd.task_queue is None
    with pytest.raises(AttributeError):
        cmd.args = ()  # type: ignore[misc]
    assert cmd == ScheduleActivity(fetch, "a", 1, retry=RetryPolicy(), start_to_close=5)
    gen = iter(cmd)
    assert next(gen) is cmd
    with pytest.raises(StopIteration) as stop:
        gen.send("result")
    assert stop.value.value == "result"


def test_durations() -> None:
    assert to_timedelta(1.5, "x") == timedelta(seconds=1.5)
    assert to_timedelta(timedelta(days=1), "x") == timedelta(days=1)
    assert to_timedelta(0, "x") == timedelta()
    with pytest.raises(TypeError, match="x must be a timedelta or a number of seconds"):
        to_timedelta(True, "x")
    with pytest.raises(ValueError, match="x must not be negative"):
        to_timedelta(-0.1, "x")


def test_unknown_event_encodings_are_refused() -> None:
    from engine.events import decode_history, encode_history

    with pytest.raises(ValueError, match="unknown event encoding 'cbor'"):
        encode_history([], format="cbor")
    with pytest.raises(ValueError, match="unknown event encoding"):
        decode_history(b"[]", format="yaml")


def test_an_interpreter_closed_mid_run_refuses_more_work() -> None:
    from tests.history import T0, History

    @workflow
    def napper() -> Generator[Any, Any, Any]:
        yield Timer(5)

    it = History(napper).decide().replay()
    it.close()
    with pytest.raises(RuntimeError, match="closed before the run ended"):
        it.decide(T0, "again")


def test_retry_policy_normalises_and_refuses_bad_names() -> None:
    assert msgspec.json.encode(RetryPolicy(backoff_coefficient=2)) == b"{}"  # 2 is the default
    assert RetryPolicy(backoff_coefficient=3).backoff_coefficient == 3.0
    assert RetryPolicy(non_retryable=["KeyError"]).non_retryable == ("KeyError",)
    with pytest.raises(TypeError, match="list of exception type names"):
        RetryPolicy(non_retryable="ValueError")


def test_continue_as_new_with_no_arguments() -> None:
    from engine import ContinueAsNew

    assert ContinueAsNew().args == ()


def test_unhashable_callables_are_activities_too() -> None:
    from tests.history import History

    class Pricer:
        __hash__ = None  # type: ignore[assignment]

        def __init__(self) -> None:
            self.__name__ = "price"

        def __call__(self, cents: int) -> int:
            return cents

    pricer = Pricer()

    @workflow
    def shop() -> Generator[Any, Any, Any]:
        return (yield ScheduleActivity(pricer, 5))

    h = History(shop).decide()
    assert h.kinds() == ["ActivityScheduled:1"]
    h.complete(1, 5).decide()
    assert h.result() == 5
    h.assert_replays()


def test_a_removed_patch_check_replays_and_an_unrecorded_activity_is_caught() -> None:
    from engine import NonDeterminismError, Patched, WaitSignal
    from tests.history import History

    @workflow(name="patchy")
    def v2() -> Generator[Any, Any, Any]:
        if (yield Patched("fast-path")):
            yield Timer(1)
        return (yield WaitSignal("go"))

    @workflow(name="patchy")
    def v3() -> Generator[Any, Any, Any]:  # the patch is deployed everywhere: check removed
        yield Timer(1)
        return (yield WaitSignal("go"))

    h = History(v2).decide()
    h.fire(1).decide()
    v3_replay = h.replay(v3)  # the recorded patch marker is simply not asked for
    assert v3_replay.closing is None
    v3_replay.close()

    @workflow(name="patchy")
    def extra() -> Generator[Any, Any, Any]:
        yield Timer(1)
        yield ScheduleActivity("audit")  # recorded nothing at this point: a WaitSignal was
        return (yield WaitSignal("go"))

    with pytest.raises(NonDeterminismError, match="sequence number 2"):
        h.replay(extra)


def test_a_patch_marker_last_in_its_decision_replays() -> None:
    from engine import Patched, WaitSignal
    from tests.history import History

    @workflow
    def flagged() -> Generator[Any, Any, Any]:
        new = yield Patched("flag")
        return [new, (yield WaitSignal("go"))]

    h = History(flagged).decide()  # batch: WorkflowTaskCompleted(WaitSignal), the patch marker
    h.signal("go", 1).decide()
    assert h.result() == [True, 1]
    h.assert_replays()
