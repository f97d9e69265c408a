"""The store conformance suite: the definition of "a backend".

Every backend runs this suite unchanged.  A backend's test file subclasses
``StoreConformance`` and provides a ``make_store`` fixture: a callable that
opens the backend's store at this test's location.  For a durable backend every
call opens the *same* data (so the suite can close and reopen it); for
``MemoryStore`` every call is a new, empty store::

    # tests/test_store_file.py
    import pytest
    from stores.file import FileStore
    from tests.store_conformance import StoreConformance

    class TestFileStore(StoreConformance):
        reopen = True  # data survives close() and make_store() again
        shared = True  # make_store() while a handle is open is a second handle

        @pytest.fixture
        def make_store(self, tmp_path):
            return lambda: FileStore(tmp_path / "store", durability="none")

Capabilities (class attributes, all off by default):

* ``reopen``: tests that take the ``cycle`` fixture run twice, once on the live
  store and once after ``close()`` and reopening; everything they check must
  survive (histories, id chains, cross-run links, the ready index, backoff and
  ``blocked`` text, heartbeat details, visibility).
* ``shared``: two handles open at once on the same data (as two worker
  processes) see each other's appends and never own the same run.
* ``crashes``: the backend overrides ``tear_last_batch`` to simulate a crash in
  the middle of writing a batch; the torn batch must be dropped whole.

Hook: ``kill_owner(store, owner, lease=...)`` makes an owner dead; the default
sleeps past its lease, a backend whose liveness comes from the OS overrides it.

Only the ``stores.Store`` protocol is used; events are built from
``engine.events`` with fixed UTC times.  Rules the suite pins down where the
protocol's prose is open: ``read(after=i)`` returns events with index >= i;
``list`` filters on start time with ``since <= start < until`` and its counts
are per status over every filter except ``status``, and its pages hold still
while new runs start; a closed store raises ``RuntimeError`` (and ``close`` is
idempotent); a non-string id refuses a whole ``append`` call with
``TypeError``; a continue-as-new whose next run cannot start fails its batch
whole; only a pending activity keeps heartbeat details; a rejected or failed
operation changes nothing stored.
"""

from __future__ import annotations

import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine._errors import (
    ConflictError,
    WorkflowAlreadyClosedError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
)
from engine._info import IdReusePolicy, Status, WorkflowInfo
from engine.events import (
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    CancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    Event,
    Failure,
    Json,
    Link,
    MarkerRecorded,
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
    with_index,
)
from stores import AppendBatch, RunRef, Store

__all__ = ["MakeStore", "StoreConformance"]

MakeStore = Callable[[], Store]

T0: Final = datetime(2026, 1, 1, tzinfo=UTC)
NULL: Final = Json(text="null")
BOOM: Final = Failure(type="ValueError", message="boom")
CLOSED_RUNS: Final = 2000

#: Ids that break naive path, case or normalisation handling; all distinct workflows.
NASTY_IDS: Final = [
    "",
    " ",
    ".",
    "..",
    "../x",
    "../../etc/passwd",
    "/abs",
    "a/b",
    "a\\b",
    "a%2Fb",
    "a_b",
    "a%5Fb",
    "\x00",
    "a\x00b",
    "\n",
    "CON",
    "con",
    "NUL",
    "aux.txt",
    "COM1",
    "trailing.",
    "trailing ",
    "A",
    "a",
    "\u00e9",  # é, NFC
    "e\u0301",  # é, NFD
    "\u212a",  # KELVIN SIGN, NFKC-equal to "K"
    "K",
    "\ufb01",  # the "fi" ligature
    "fi",
    "stra\u00dfe",
    "STRASSE",
    "\U0001f600",
    "x" * 255,
    "x" * 256,
    "\u00e9" * 200,
    "x" * 10_000,
    "x" * 9_999 + "y",
]
assert unicodedata.normalize("NFC", "e\u0301") == "\u00e9"


# --------------------------------------------------------------------------- event builders


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def started(
    workflow_id: str = "w",
    *,
    run_id: str | None = None,
    type: str = "wf",
    queue: str = "default",
    time: datetime = T0,
    parent: Link | None = None,
    continued_from: Link | None = None,
) -> WorkflowStarted:
    return WorkflowStarted(
        time=time,
        workflow_type=type,
        workflow_id=workflow_id,
        run_id=run_id or uuid.uuid4().hex,
        input=NULL,
        task_queue=queue,
        parent=parent,
        continued_from=continued_from,
    )


def wtc(seen: int, batch_id: str = "") -> WorkflowTaskCompleted:
    return WorkflowTaskCompleted(time=T0, seen=seen, batch_id=batch_id or uuid.uuid4().hex)


def signal(name: str = "go", request_id: str = "") -> SignalReceived:
    return SignalReceived(time=T0, name=name, payload=NULL, request_id=request_id)


def scheduled(seq: int) -> ActivityScheduled:
    return ActivityScheduled(time=T0, seq=seq, activity_type="act", args=NULL, args_digest=0)


def timer(seq: int, fire_at: datetime) -> TimerStarted:
    return TimerStarted(time=T0, seq=seq, duration=fire_at - T0, fire_at=fire_at)


def child_started(seq: int, workflow_id: str) -> ChildWorkflowStarted:
    return ChildWorkflowStarted(
        time=T0, seq=seq, workflow_type="child", workflow_id=workflow_id, args=NULL, args_digest=0
    )


def closer(status: Status, when: datetime = T0) -> Event:
    """The event that closes a run with ``status`` (not continue-as-new)."""
    closers: dict[Status, Event] = {
        Status.COMPLETED: WorkflowCompleted(time=when, result=Json(text='"done"')),
        Status.FAILED: WorkflowFailed(time=when, error=BOOM),
        Status.CANCELLED: WorkflowCancelled(time=when, reason="asked to"),
        Status.TERMINATED: WorkflowTerminated(time=when, reason="by ops"),
    }
    return closers[status]


CLOSED: Final = [Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.TERMINATED]


# --------------------------------------------------------------------------- store helpers


def ref(s: WorkflowStarted) -> RunRef:
    return RunRef(workflow_id=s.workflow_id, run_id=s.run_id)


def link(s: WorkflowStarted, seq: int = 0) -> Link:
    return Link(workflow_id=s.workflow_id, run_id=s.run_id, seq=seq)


def batch(
    s: WorkflowStarted,
    *events: Event,
    expected: int | None = None,
    starts: Sequence[WorkflowStarted] = (),
) -> AppendBatch:
    return AppendBatch(
        workflow_id=s.workflow_id,
        run_id=s.run_id,
        events=list(events),
        expected_length=expected,
        starts=list(starts),
    )


def append_ok(store: Store, b: AppendBatch) -> int:
    [result] = store.append([b])
    assert result.ok, result.error
    return result.index


def append_fails(store: Store, b: AppendBatch, error: type[Exception]) -> Exception:
    [result] = store.append([b])
    assert isinstance(result.error, error), result
    return result.error


def history(store: Store, s: WorkflowStarted) -> list[Event]:
    return store.read(s.workflow_id, s.run_id)


def length(store: Store, s: WorkflowStarted) -> int:
    return len(history(store, s))


def decide(store: Store, s: WorkflowStarted, *events: Event, **kw: Any) -> int:
    """Append a decision made on the run's current length; returns where it landed."""
    n = length(store, s)
    return append_ok(store, batch(s, wtc(n), *events, expected=n, **kw))


def close(store: Store, s: WorkflowStarted, status: Status, when: datetime = T0) -> None:
    if status is Status.TERMINATED:
        append_ok(store, batch(s, closer(status, when)))  # termination comes from outside
    else:
        decide(store, s, closer(status, when))


def stamped(events: Sequence[Event], start: int) -> list[Event]:
    return [with_index(ev, start + i) for i, ev in enumerate(events)]


def kinds(events: Sequence[Event]) -> list[str]:
    return [type(ev).__name__ for ev in events]


def claimed(store: Store, owner: str, now: datetime = T0, **kw: Any) -> set[RunRef]:
    return set(store.claim(owner, now=now, **kw).runs)


def all_runs(store: Store) -> set[tuple[str, str]]:
    return {(info.id, info.run_id) for info in store.runs()}


def snapshot(store: Store) -> tuple[list[WorkflowInfo], dict[tuple[str, str], list[Event]]]:
    """Everything visible, to check that a refused operation changed nothing."""
    infos = sorted(store.runs(), key=lambda i: (i.id, i.run_id))
    return infos, {(i.id, i.run_id): store.read(i.id, i.run_id) for i in infos}


def pages(store: Store, page_size: int, **filters: Any) -> list[list[WorkflowInfo]]:
    out: list[list[WorkflowInfo]] = []
    token: str | None = None
    while True:
        page = store.list(page_size=page_size, page_token=token, **filters)
        out.append(page.items)
        token = page.next_page_token
        if token is None:
            return out
        assert len(out) < 10_000, "pagination does not terminate"


def nonzero(counts: dict[Status, int]) -> dict[Status, int]:
    return {k: v for k, v in counts.items() if v}


# --------------------------------------------------------------------------- the suite


class StoreConformance:
    """Subclass as ``TestXxxStore`` and provide a ``make_store`` fixture (see the module)."""

    reopen: ClassVar[bool] = False
    shared: ClassVar[bool] = False
    crashes: ClassVar[bool] = False

    def kill_owner(self, store: Store, owner: str, *, lease: float) -> None:
        """Make ``owner`` (which claimed with ``lease``) dead as far as ``store`` can tell.

        The default outlives the lease, for backends whose liveness is the lease
        alone.  Backends told of death by the OS (a lock file's ``flock``, held
        for life by this very process) override it to drop that signal instead.
        """
        time.sleep(lease * 3)

    def tear_last_batch(self, store: Store, run: RunRef) -> None:
        """Crash hook: ``store`` is closed; leave ``run``'s last batch half-written.

        Backends with ``crashes = True`` override this (cut the file inside the
        last batch, drop the commit record, ...); reopening must then recover.
        """
        raise NotImplementedError

    # ------------------------------------------------------------ fixtures

    @pytest.fixture
    def opened(self, make_store: MakeStore) -> Iterator[MakeStore]:
        """Opens stores with ``make_store`` and closes every one at teardown."""
        handles: list[Store] = []

        def open_store() -> Store:
            handle = make_store()
            handles.append(handle)
            return handle

        yield open_store
        for handle in handles:
            handle.close()

    @pytest.fixture
    def store(self, opened: MakeStore) -> Store:
        return opened()

    @pytest.fixture(params=["live", "reopened"])
    def cycle(self, request: pytest.FixtureRequest, opened: MakeStore) -> Callable[[Store], Store]:
        """``store = cycle(store)``: the same store, or (``reopen``) it closed and reopened."""
        if request.param == "live":
            return lambda store: store
        if not self.reopen:
            pytest.skip(f"{type(self).__name__} does not reopen (reopen = False)")

        def reopened(store: Store) -> Store:
            store.close()
            return opened()

        return reopened

    def test_is_a_store(self, store: Store) -> None:
        assert isinstance(store, Store)

    # ------------------------------------------------------------ create

    def test_create_history_is_workflow_started_at_index_0(
        self, store: Store, cycle: Callable[[Store], Store]
    ) -> None:
        s = started("w", type="billing", queue="q1", time=at(5))
        store.create(s)
        store = cycle(store)
        assert store.read("w") == [with_index(s, 0)]
        assert store.read("w", s.run_id) == [with_index(s, 0)]
        assert store.read("w")[0].index == 0
        info = store.describe("w")
        assert (info.id, info.run_id, info.type, info.task_queue) == (
            "w",
            s.run_id,
            "billing",
            "q1",
        )
        assert info.status is Status.RUNNING
        assert info.start_time == at(5)
        assert info.close_time is None
        assert info.history_length == 1
        assert info.parent is None
        assert info.due is not None and info.due <= T0
        assert store.describe("w", s.run_id) == info
        page = store.list()
        assert page.items == [info]
        assert page.next_page_token is None
        assert nonzero(page.counts) == {Status.RUNNING: 1}
        assert list(store.runs()) == [info]
        assert claimed(store, "A", task_queues=("q1",)) == {ref(s)}

    def test_create_needs_a_workflow_started(self, store: Store) -> None:
        with pytest.raises(TypeError):
            store.create(signal())  # type: ignore[arg-type]
        assert list(store.runs()) == []

    def test_unknown_ids_and_runs_are_not_found(self, store: Store) -> None:
        with pytest.raises(WorkflowNotFoundError):
            store.read("nope")
        with pytest.raises(WorkflowNotFoundError):
            store.describe("nope")
        s = started("w")
        store.create(s)
        with pytest.raises(WorkflowNotFoundError):
            store.read("w", "no-such-run")
        with pytest.raises(WorkflowNotFoundError):
            store.describe("w", "no-such-run")
        with pytest.raises(WorkflowNotFoundError):
            store.heartbeat(RunRef(workflow_id="w", run_id="no-such-run"), 1)

    def test_nasty_ids_are_distinct_workflows(
        self, store: Store, cycle: Callable[[Store], Store]
    ) -> None:
        assert len(set(NASTY_IDS)) == len(NASTY_IDS)
        runs = {wid: started(wid, time=at(i)) for i, wid in enumerate(NASTY_IDS)}
        for s in runs.values():
            store.create(s)
        store = cycle(store)
        for wid, s in runs.items():
            assert store.read(wid) == [with_index(s, 0)], wid[:40]
            assert store.describe(wid).id == wid
        assert all_runs(store) == {(s.workflow_id, s.run_id) for s in runs.values()}
        listed = [i.id for page in pages(store, 7) for i in page]
        assert listed == list(reversed(NASTY_IDS))
        got = claimed(store, "A", limit=len(NASTY_IDS) + 1)
        assert got == {ref(s) for s in runs.values()}
        for wid, s in runs.items():  # appends and heartbeats find the right run too
            append_ok(store, batch(s, signal(name=wid)))
            decide(store, s, scheduled(1))
            store.heartbeat(ref(s), 1, Json(text=str(len(wid))))
        store = cycle(store)
        for wid, s in runs.items():
            assert store.read(wid, after=1)[0] == with_index(signal(name=wid), 1)
            assert store.heartbeat(ref(s), 1) == Json(text=str(len(wid)))

    @settings(
        max_examples=50,
        deadline=None,
        # NB: every backend's class runs this one test body: hypothesis sees several
        # executors, which is what a conformance suite is for
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(ids=st.lists(st.text(), min_size=1, max_size=4, unique=True))
    def test_any_string_is_a_workflow_id(self, store: Store, ids: list[str]) -> None:
        # examples share one store: TERMINATE_IF_RUNNING lets an id come back
        runs = [started(wid) for wid in ids]
        for s in runs:
            store.create(s, id_reuse=IdReusePolicy.TERMINATE_IF_RUNNING)
        for s in runs:
            info = store.describe(s.workflow_id)
            assert (info.id, info.run_id, info.status) == (s.workflow_id, s.run_id, Status.RUNNING)
            assert store.read(s.workflow_id) == [with_index(s, 0)]

    @pytest.mark.parametrize("bad", [123, None, b"w", ("w",)])
    def test_a_workflow_id_must_be_a_string(self, store: Store, bad: Any) -> None:
        good = started("good")
        store.create(good)
        before = snapshot(store)
        with pytest.raises(TypeError):
            store.create(started(bad))
        with pytest.raises(TypeError):
            store.read(bad)
        with pytest.raises(TypeError):
            store.describe(bad)
        bad_batch = AppendBatch(workflow_id=bad, run_id="r", events=[signal()])
        with pytest.raises(TypeError):  # the whole call is refused, the good batch too
            store.append([batch(good, signal()), bad_batch])
        assert snapshot(store) == before

    # ------------------------------------------------------------ id reuse

    @pytest.mark.parametrize(
        "policy",
        [
            IdReusePolicy.ALLOW_DUPLICATE,
            IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            IdReusePolicy.REJECT_DUPLICATE,
        ],
    )
    def test_a_running_id_is_rejected(self, store: Store, policy: IdReusePolicy) -> None:
        s = started("w")
        store.create(s)
        append_ok(store, batch(s, signal()))
        before = snapshot(store)
        with pytest.raises(WorkflowAlreadyStartedError):
            store.create(started("w"), id_reuse=policy)
        assert snapshot(store) == before
        assert claimed(store, "A") == {ref(s)}

    def test_the_default_policy_is_allow_duplicate(self, store: Store) -> None:
        s1 = started("w")
        store.create(s1)
        with pytest.raises(WorkflowAlreadyStartedError):
            store.create(started("w"))
        close(store, s1, Status.COMPLETED)
        s2 = started("w", time=at(1))
        store.create(s2)
        assert store.describe("w").run_id == s2.run_id

    @pytest.mark.parametrize("status", CLOSED)
    @pytest.mark.parametrize("policy", list(IdReusePolicy))
    def test_id_reuse_policy_after_a_closed_run(
        self, store: Store, policy: IdReusePolicy, status: Status
    ) -> None:
        allowed = {
            IdReusePolicy.ALLOW_DUPLICATE: True,
            IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY: status is not Status.COMPLETED,
            IdReusePolicy.REJECT_DUPLICATE: False,
            IdReusePolicy.TERMINATE_IF_RUNNING: True,
        }[policy]
        s1 = started("w")
        store.create(s1)
        close(store, s1, status)
        before = snapshot(store)
        s2 = started("w", time=at(1))
        if not allowed:
            with pytest.raises(WorkflowAlreadyStartedError):
                store.create(s2, id_reuse=policy)
            assert snapshot(store) == before
            return
        store.create(s2, id_reuse=policy)
        assert store.describe("w").run_id == s2.run_id
        assert store.describe("w", s1.run_id) == before[0][0]  # the old run is untouched
        assert all_runs(store) == {("w", s1.run_id), ("w", s2.run_id)}

    def test_allow_duplicate_failed_only_refuses_after_continue_as_new(self, store: Store) -> None:
        s1 = started("w")
        store.create(s1)
        s2 = started("w", continued_from=link(s1))
        decide(
            store,
            s1,
            WorkflowContinuedAsNew(time=T0, input=NULL, new_run_id=s2.run_id),
            starts=[s2],
        )
        close(store, s2, Status.COMPLETED)
        with pytest.raises(WorkflowAlreadyStartedError):
            store.create(started("w"), id_reuse=IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY)

    def test_terminate_if_running(self, store: Store, cycle: Callable[[Store], Store]) -> None:
        s1 = started("w")
        store.create(s1)
        decide(store, s1, scheduled(1))
        store.heartbeat(ref(s1), 1, Json(text="1"))
        s2 = started("w", time=at(10))
        store.create(s2, id_reuse=IdReusePolicy.TERMINATE_IF_RUNNING)
        store = cycle(store)
        old = history(store, s1)
        assert kinds(old) == [
            "WorkflowStarted",
            "WorkflowTaskCompleted",
            "ActivityScheduled",
            "WorkflowTerminated",
        ]
        assert old[-1].index == 3
        assert store.describe("w", s1.run_id).status is Status.TERMINATED
        assert store.describe("w", s1.run_id).close_time is not None
        assert store.describe("w").run_id == s2.run_id
        assert store.describe("w").status is Status.RUNNING
        assert store.read("w") == [with_index(s2, 0)]
        assert store.heartbeat(ref(s1), 1) is None
        assert claimed(store, "A", now=at(3600)) == {ref(s2)}

    def test_older_runs_stay_readable(self, store: Store, cycle: Callable[[Store], Store]) -> None:
        chain = []
        for i, status in enumerate(CLOSED):
            s = started("w", time=at(i))
            store.create(s)
            append_ok(store, batch(s, signal(name=str(i))))
            close(store, s, status)
            chain.append((s, status))
        last = started("w", time=at(99))
        store.create(last)
        store = cycle(store)
        assert store.describe("w").run_id == last.run_id
        assert store.read("w") == [with_index(last, 0)]
        for i, (s, status) in enumerate(chain):
            assert store.describe("w", s.run_id).status is status
            assert store.read("w", s.run_id)[1] == with_index(signal(name=str(i)), 1)
        assert len(all_runs(store)) == len(CLOSED) + 1

    def test_reusing_a_run_id_is_refused_and_changes_nothing(self, store: Store) -> None:
        s1 = started("w")
        store.create(s1)
        before = snapshot(store)
        for policy in IdReusePolicy:
            with pytest.raises(WorkflowAlreadyStartedError):
                store.create(started("w", run_id=s1.run_id, time=at(1)), id_reuse=policy)
            assert snapshot(store) == before
        close(store, s1, Status.FAILED)
        before = snapshot(store)
        with pytest.raises(WorkflowAlreadyStartedError):
            store.create(started("w", run_id=s1.run_id, time=at(1)))
        assert snapshot(store) == before

    # ------------------------------------------------------------ append

    def test_append_sets_indices_and_read_after(
        self, store: Store, cycle: Callable[[Store], Store]
    ) -> None:
        s = started("w")
        store.create(s)
        events = [signal("a"), signal("b"), CancelRequested(time=T0, reason="r")]
        assert append_ok(store, batch(s, *events[:2])) == 1
        assert append_ok(store, batch(s, events[2])) == 3
        store = cycle(store)
        whole = store.read("w")
        assert whole == [with_index(s, 0), *stamped(events, 1)]
        assert [ev.index for ev in whole] == [0, 1, 2, 3]
        assert store.read("w", after=0) == whole
        assert store.read("w", after=2) == whole[2:]
        assert store.read("w", s.run_id, after=4) == []
        assert store.read("w", after=100) == []
        assert store.describe("w").history_length == 4
        got = store.read("w")
        got.clear()  # a caller's list is its own
        assert store.read("w") == whole
        assert append_ok(store, batch(s, signal("c"))) == 4

    def test_append_to_unknown_runs(self, store: Store) -> None:
        append_fails(store, batch(started("nope"), signal()), WorkflowNotFoundError)
        s = started("w")
        store.create(s)
        other = started("w")  # same id, a run id the store never saw
        append_fails(store, batch(other, signal()), WorkflowNotFoundError)
        append_fails(store, batch(other, wtc(1), expected=1), WorkflowNotFoundError)
        assert store.read("w") == [with_index(s, 0)]
        with pytest.raises(WorkflowNotFoundError):
            store.describe("nope")

    @pytest.mark.parametrize("status", CLOSED)
    def test_append_to_a_closed_run_changes_nothing(self, store: Store, status: Status) -> None:
        s = started("w")
        store.create(s)
        close(store, s, status)
        before = snapshot(store)
        n = length(store, s)
        append_fails(store, batch(s, signal()), WorkflowAlreadyClosedError)
        append_fails(store, batch(s, wtc(n), scheduled(9), expected=n), WorkflowAlreadyClosedError)
        append_fails(store, batch(s, WorkflowTerminated(time=T0)), WorkflowAlreadyClosedError)
        assert snapshot(store) == before

    def test_a_decision_on_the_exact_length_lands(self, store: Store) -> None:
        s = started("w")
        store.create(s)
        assert append_ok(store, batch(s, wtc(1), scheduled(1), expected=1)) == 1
        assert append_ok(store, batch(s, ActivityCompleted(time=T0, seq=1, result=NULL))) == 3
        assert append_ok(store, batch(s, wtc(4), timer(2, at(60)), expected=4)) == 4
        assert kinds(history(store, s))[-2:] == ["WorkflowTaskCompleted", "TimerStarted"]

    def test_a_decision_lands_after_external_events(
        self, store: Store, cycle: Callable[[Store], Store]
    ) -> None:
        s = started("w")
        store.create(s)
        append_ok(store, batch(s, signal("a"), signal("b")))  # came in while deciding on 1
        store = cycle(store)
        d = [wtc(1), scheduled(1)]
        assert append_ok(store, batch(s, *d, expected=1)) == 3
        assert history(store, s) == [
            with_index(s, 0),
            *stamped([signal("a"), signal("b")], 1),
            *stamped(d, 3),
        ]
        # the second decision made on the same length lost
        append_fails(store, batch(s, wtc(1), timer(2, at(9)), expected=1), ConflictError)
        append_fails(store, batch(s, wtc(3), timer(2, at(9)), expected=3), ConflictError)
        assert length(store, s) == 5
        store = cycle(store)
        append_fails(store, batch(s, wtc(1), expected=1), ConflictError)
        assert append_ok(store, batch(s, wtc(5), expected=5)) == 5

    def test_a_coalesced_batch_must_be_exact(self, store: Store) -> None:
        s = started("w")
        store.create(s)
        decide(store, s, scheduled(1))  # length 3
        done = ActivityCompleted(time=T0, seq=1, result=NULL)
        append_ok(store, batch(s, signal()))  # length 4
        before = snapshot(store)
        append_fails(store, batch(s, done, wtc(4), expected=3), ConflictError)
        assert snapshot(store) == before
        assert append_ok(store, batch(s, done, wtc(5), expected=4)) == 4
        assert kinds(history(store, s))[-2:] == ["ActivityCompleted", "WorkflowTaskCompleted"]

    def test_a_decision_beyond_the_history_conflicts(self, store: Store) -> None:
        s = started("w")
        store.create(s)
        append_fails(store, batch(s, wtc(5), expected=5), ConflictError)
        assert length(store, s) == 1

    def test_one_call_many_runs(self, store: Store) -> None:
        a, b, gone = started("a"), started("b"), started("gone")
        for s in (a, b, gone):
            store.create(s)
        close(store, gone, Status.COMPLETED)
        results = store.append(
            [
                batch(a, signal("1")),
                batch(started("unknown"), signal()),
                batch(gone, signal()),
                batch(b, wtc(1), scheduled(1), expected=1),
                batch(a, wtc(1), expected=1),  # lands after a's signal from this very call
                batch(b, wtc(1), expected=1),  # lost to b's decision from this very call
                batch(a, signal("2")),
            ]
        )
        assert [r.ok for r in results] == [True, False, False, True, True, False, True]
        assert isinstance(results[1].error, WorkflowNotFoundError)
        assert isinstance(results[2].error, WorkflowAlreadyClosedError)
        assert isinstance(results[5].error, ConflictError)
        assert [results[i].index for i in (0, 3, 4, 6)] == [1, 1, 2, 3]
        assert kinds(history(store, a)) == [
            "WorkflowStarted",
            "SignalReceived",
            "WorkflowTaskCompleted",
            "SignalReceived",
        ]
        assert kinds(history(store, b)) == [
            "WorkflowStarted",
            "WorkflowTaskCompleted",
            "ActivityScheduled",
        ]
        assert store.append([]) == []

    def test_a_failing_batch_leaves_nothing(self, store: Store) -> None:
        s = started("w")
        store.create(s)
        decide(store, s)
        before = snapshot(store)
        big = [
            wtc(1),
            scheduled(1),
            scheduled(2),
            timer(3, at(5)),
            MarkerRecorded(time=T0, name="m"),
        ]
        child = started("kid", parent=link(s, 4))
        results = store.append([batch(s, *big, expected=1, starts=[child])])
        assert isinstance(results[0].error, ConflictError)
        assert snapshot(store) == before
        with pytest.raises(WorkflowNotFoundError):
            store.describe("kid")

    # ------------------------------------------------------------ cross-run effects

    def test_a_batch_starts_a_child(self, store: Store, cycle: Callable[[Store], Store]) -> None:
        p = started("parent")
        store.create(p)
        kid = started("kid", type="child", queue="kids", parent=link(p, 1))
        decide(store, p, child_started(1, "kid"), starts=[kid])
        store = cycle(store)
        assert store.read("kid") == [with_index(kid, 0)]
        info = store.describe("kid")
        assert info.parent == link(p, 1)
        assert info.status is Status.RUNNING
        assert (info.type, info.task_queue) == ("child", "kids")
        assert claimed(store, "A", task_queues=("kids",)) == {ref(kid)}
        # repeating the same start (a retried or recovered decision) changes nothing
        before = snapshot(store)
        decide(store, p, starts=[kid])
        append_ok(store, batch(p, starts=[kid]))
        after = snapshot(store)
        assert after[1][("kid", kid.run_id)] == before[1][("kid", kid.run_id)]
        assert all_runs(store) == {("parent", p.run_id), ("kid", kid.run_id)}
        assert not any(isinstance(ev, ChildWorkflowFailed) for ev in history(store, p))

    def test_a_child_whose_id_is_running_fails_its_parent(
        self, store: Store, cycle: Callable[[Store], Store]
    ) -> None:
        busy = started("kid")
        store.create(busy)
        p = started("parent")
        store.create(p)
        claimed(store, "A")
        kid = started("kid", parent=link(p, 7))
        at_ = decide(store, p, child_started(7, "kid"), starts=[kid])
        store = cycle(store)
        events = history(store, p)
        assert kinds(events) == [
            "WorkflowStarted",
            "WorkflowTaskCompleted",
            "ChildWorkflowStarted",
            "ChildWorkflowFailed",
        ]
        failed = events[-1]
        assert isinstance(failed, ChildWorkflowFailed)
        assert (failed.index, failed.seq) == (at_ + 2, 7)
        assert failed.error.type == "WorkflowAlreadyStartedError"
        assert store.describe("kid").run_id == busy.run_id
        assert store.read("kid") == [with_index(busy, 0)]
        assert all_runs(store) == {("kid", busy.run_id), ("parent", p.run_id)}

    @pytest.mark.parametrize("status", CLOSED)
    def test_a_closing_child_notifies_its_parent(
        self, store: Store, cycle: Callable[[Store], Store], status: Status
    ) -> None:
        p = started("parent")
        store.create(p)
        kid = started("kid", parent=link(p, 3))
        decide(store, p, child_started(3, "kid"), starts=[kid])
        assert claimed(store, "A") == {ref(kid)}  # the parent waits: not due
        close(store, kid, status, when=at(30))
        store = cycle(store)
        notice = history(store, p)[-1]
        assert notice.index == 3
        if status is Status.COMPLETED:
            assert isinstance(notice, ChildWorkflowCompleted)
            assert notice.result == Json(text='"done"')
        else:
            assert isinstance(notice, ChildWorkflowFailed)
            if status is Status.FAILED:
                assert notice.error == BOOM
        assert (notice.seq, notice.run_id) == (3, kid.run_id)
        assert store.describe("kid").status is status
        assert claimed(store, "B") == {ref(p)}  # the parent needs a decision now

    def test_a_child_terminated_by_a_new_start_notifies_its_parent(self, store: Store) -> None:
        p = started("parent")
        store.create(p)
        kid = started("kid", parent=link(p, 2))
        decide(store, p, child_started(2, "kid"), starts=[kid])
        store.create(started("kid"), id_reuse=IdReusePolicy.TERMINATE_IF_RUNNING)
        notice = history(store, p)[-1]
        assert isinstance(notice, ChildWorkflowFailed)
        assert (notice.seq, notice.run_id) == (2, kid.run_id)

    def test_a_child_of_a_closed_parent_closes_quietly(self, store: Store) -> None:
        p = started("parent")
        store.create(p)
        kid = started("kid", parent=link(p, 1))
        decide(store, p, child_started(1, "kid"), starts=[kid])
        close(store, p, Status.COMPLETED)
        before = history(store, p)
        close(store, kid, Status.COMPLETED)
        assert history(store, p) == before
        assert store.describe("kid").status is Status.COMPLETED

    def test_continue_as_new(self, store: Store, cycle: Callable[[Store], Store]) -> None:
        s1 = started("w", time=T0)
        store.create(s1)
        s2 = started("w", time=at(60), continued_from=link(s1))
        can = WorkflowContinuedAsNew(time=at(60), input=Json(text="2"), new_run_id=s2.run_id)
        decide(store, s1, can, starts=[s2])
        store = cycle(store)
        old = store.describe("w", s1.run_id)
        assert old.status is Status.CONTINUED_AS_NEW
        assert old.close_time == at(60)
        assert kinds(history(store, s1))[-1] == "WorkflowContinuedAsNew"
        new = store.describe("w")
        assert (new.run_id, new.status) == (s2.run_id, Status.RUNNING)
        assert store.read("w") == [with_index(s2, 0)]
        assert claimed(store, "A") == {ref(s2)}
        assert all_runs(store) == {("w", s1.run_id), ("w", s2.run_id)}

    def test_a_child_continued_as_new_still_reports_to_its_parent(self, store: Store) -> None:
        p = started("parent")
        store.create(p)
        k1 = started("kid", parent=link(p, 1))
        decide(store, p, child_started(1, "kid"), starts=[k1])
        k2 = started("kid", parent=link(p, 1), continued_from=link(k1))
        can = WorkflowContinuedAsNew(time=T0, input=NULL, new_run_id=k2.run_id)
        decide(store, k1, can, starts=[k2])
        assert store.describe("kid").run_id == k2.run_id
        assert kinds(history(store, p))[-1] == "ChildWorkflowStarted"  # nothing yet
        close(store, k2, Status.COMPLETED)
        notice = history(store, p)[-1]
        assert isinstance(notice, ChildWorkflowCompleted)
        assert (notice.seq, notice.run_id) == (1, k2.run_id)

    def test_a_continue_as_new_that_cannot_start_fails_whole(self, store: Store) -> None:
        s1 = started("w")
        store.create(s1)
        decide(store, s1)
        before = snapshot(store)
        n = length(store, s1)
        # the next run's id is taken by this very run: refused, and the old run stays open
        s2 = started("w", run_id=s1.run_id, continued_from=link(s1))
        can = WorkflowContinuedAsNew(time=T0, input=NULL, new_run_id=s1.run_id)
        append_fails(
            store, batch(s1, wtc(n), can, expected=n, starts=[s2]), WorkflowAlreadyStartedError
        )
        assert snapshot(store) == before
        # a start of a running id that the batch does not close is refused too
        s3 = started("w", continued_from=link(s1))
        append_fails(store, batch(s1, wtc(n), expected=n, starts=[s3]), WorkflowAlreadyStartedError)
        assert snapshot(store) == before
        assert store.describe("w").status is Status.RUNNING

    # ------------------------------------------------------------ ready index and claims

    def test_new_runs_are_due_and_claimed_once(self, store: Store) -> None:
        s = started("w")
        store.create(s)
        got = store.claim("A", now=T0)
        assert got.runs == [ref(s)]
        assert store.claim("B", now=at(10**6)).runs == []
        assert store.renew("A") == [ref(s)]
        assert store.renew("B") == []

    def test_a_run_waiting_on_a_signal_is_not_due(
        self, store: Store, cycle: Callable[[Store], Store]
    ) -> None:
        s = started("w")
        store.create(s)
        decide(store, s)
        store = cycle(store)
        got = store.claim("A", now=at(10**6))
        assert (got.runs, got.next_due) == ([], None)
        assert store.describe("w").due is None
        append_ok(store, batch(s, signal()))
        assert claimed(store, "A") == {ref(s)}

    @pytest.mark.parametrize(
        "wake",
        [
            signal(),
            CancelRequested(time=T0),
            ActivityCompleted(time=T0, seq=1, result=NULL),
            ActivityFailed(time=T0, seq=1, error=BOOM),
            TimerFired(time=T0, seq=2),
            ChildWorkflowCompleted(time=T0, seq=3, result=NULL),
            ChildWorkflowFailed(time=T0, seq=3, error=BOOM),
        ],
        ids=lambda ev: type(ev).__name__,
    )
    def test_an_input_after_what_the_decision_saw_is_due(self, store: Store, wake: Event) -> None:
        s = started("w")
        store.create(s)
        decide(store, s, scheduled(1), timer(2, at(3600)), child_started(3, "kid"))
        n = length(store, s)
        append_ok(store, batch(s, TimerCancelled(time=T0, seq=2)))  # not an input
        append_ok(store, batch(s, wake))  # arrives while the next decision is made on n
        assert append_ok(store, batch(s, wtc(n), expected=n)) == n + 2
        assert claimed(store, "A", now=T0) == {ref(s)}  # it did not see the input

    def test_pending_activities_are_due_until_their_outcome(self, store: Store) -> None:
        s = started("w")
        store.create(s)
        decide(store, s, scheduled(1), scheduled(2))
        assert claimed(store, "A") == {ref(s)}
        store.release("A", ref(s))
        n = length(store, s)
        done = ActivityCompleted(time=T0, seq=1, result=NULL)
        append_ok(store, batch(s, done, wtc(n + 1), expected=n))  # coalesced, seq 2 pending
        assert claimed(store, "A") == {ref(s)}
        store.release("A", ref(s))
        n = length(store, s)
        append_ok(
            store, batch(s, ActivityFailed(time=T0, seq=2, error=BOOM), wtc(n + 1), expected=n)
        )
        got = store.claim("A", now=at(10**6))
        assert (got.runs, got.next_due) == ([], None)

    def test_retries_are_due_at_retry_at(
        self, store: Store, cycle: Callable[[Store], Store]
    ) -> None:
        s = started("w")
        store.create(s)
        decide(store, s, scheduled(1))
        retry = ActivityAttemptFailed(time=T0, seq=1, attempt=1, error=BOOM, retry_at=at(10))
        append_ok(store, batch(s, retry))
        store = cycle(store)
        got = store.claim("A", now=at(9))
        assert (got.runs, got.next_due) == ([], at(10))
        assert store.describe("w").due == at(10)
        assert claimed(store, "A", now=at(10)) == {ref(s)}

    def test_timers_are_due_at_fire_at(self, store: Store, cycle: Callable[[Store], Store]) -> None:
        s = started("w")
        store.create(s)
        decide(store, s, timer(1, at(3600)), timer(2, at(60)))
        store = cycle(store)
        got = store.claim("A", now=T0)
        assert (got.runs, got.next_due) == ([], at(60))
        assert claimed(store, "A", now=at(60)) == {ref(s)}
        store.release("A", ref(s))
        n = length(store, s)
        append_ok(store, batch(s, TimerFired(time=at(60), seq=2), wtc(n + 1), expected=n))
        got = store.claim("A", now=at(60))
        assert (got.runs, got.next_due) == ([], at(3600))
        decide(store, s, TimerCancelled(time=at(60), seq=1))
        got = store.claim("A", now=at(10**6))
        assert (got.runs, got.next_due) == ([], None)

    def test_closed_runs_are_never_due(self, store: Store) -> None:
        runs = [started(f"w{i}") for i in range(len(CLOSED))]
        for s, status in zip(runs, CLOSED, strict=True):
            store.create(s)
            decide(store, s, scheduled(1), timer(2, at(5)))
            close(store, s, status)
        got = store.claim("A", now=at(10**6))
        assert (got.runs, got.next_due) == ([], None)
        assert all(store.describe(s.workflow_id).due is None for s in runs)

    def test_claim_ignores_closed_runs(self, store: Store) -> None:
        for i in range(CLOSED_RUNS):
            s = started(f"done-{i}")
            store.create(s)
            append_ok(store, batch(s, WorkflowTerminated(time=T0)))
        live = started("live")
        store.create(live)
        got = store.claim("A", now=at(10**6), limit=CLOSED_RUNS)
        assert got.runs == [ref(live)]
        assert store.list(page_size=1).counts[Status.TERMINATED] == CLOSED_RUNS

    def test_two_owners_never_share_a_run(self, store: Store) -> None:
        runs = [started(f"w{i}") for i in range(10)]
        for s in runs:
            store.create(s)
            append_ok(store, batch(s, signal()))  # touched again before anyone claims it
            append_ok(store, batch(s, signal()))
        a: set[RunRef] = set()
        b: set[RunRef] = set()
        first = claimed(store, "A", limit=4)
        assert 0 < len(first) <= 4
        a |= first
        while True:  # alternate (a store may grant partitions, not single runs)
            more_b = claimed(store, "B", limit=100)
            more_a = claimed(store, "A", limit=4)
            assert more_a.isdisjoint(a) and more_b.isdisjoint(b)
            a |= more_a
            b |= more_b
            if not (more_a or more_b):
                break
        assert a.isdisjoint(b)
        assert a | b == {ref(s) for s in runs}
        assert claimed(store, "C") == set()
        assert set(store.renew("A")) == a
        assert set(store.renew("B")) == b

    def test_limit_is_honoured(self, store: Store) -> None:
        runs = [started(f"w{i}") for i in range(7)]
        for s in runs:
            store.create(s)
        got: list[RunRef] = []
        for _ in range(3):
            batch_ = store.claim("A", now=T0, limit=3).runs
            assert len(batch_) <= 3
            got.extend(batch_)
        assert sorted(got, key=lambda r: r.workflow_id) == sorted(
            (ref(s) for s in runs), key=lambda r: r.workflow_id
        )

    def test_task_queues_filter(self, store: Store) -> None:
        q1, q2, dflt = started("a", queue="q1"), started("b", queue="q2"), started("c")
        for s in (q1, q2, dflt):
            store.create(s)
        assert claimed(store, "A", task_queues=("q1",)) == {ref(q1)}
        assert claimed(store, "B", task_queues=("nothing",)) == set()
        assert claimed(store, "B", task_queues=("q1", "q2")) == {ref(q2)}
        assert claimed(store, "C") == {ref(dflt)}

    def test_release_gives_a_run_back(self, store: Store) -> None:
        s = started("w")
        store.create(s)
        assert claimed(store, "A") == {ref(s)}
        store.release("B", ref(s))  # not B's to give
        assert claimed(store, "C") == set()
        store.release("A", ref(s))
        assert store.renew("A") == []
        assert claimed(store, "B") == {ref(s)}

    def test_release_not_before_delays_and_says_why(
        self, store: Store, cycle: Callable[[Store], Store]
    ) -> None:
        s = started("w")
        store.create(s)
        claimed(store, "A")
        why = "workflow type 'wf' is not registered with this worker"
        store.release("A", ref(s), not_before=at(30), blocked=why)
        store = cycle(store)
        assert store.describe("w").blocked == why
        got = store.claim("B", now=at(29))
        assert (got.runs, got.next_due) == ([], at(30))
        assert claimed(store, "B", now=at(30)) == {ref(s)}
        decide(store, s)  # progress: no longer blocked
        store.release("B", ref(s))
        assert store.describe("w").blocked is None

    def test_a_run_appended_to_while_claimed_is_offered_after_release(self, store: Store) -> None:
        s = started("w")
        store.create(s)
        claimed(store, "A")
        decide(store, s)  # A decides: nothing left to do
        append_ok(store, batch(s, signal()))  # ...but a signal came in meanwhile
        assert claimed(store, "B") == set()
        store.release("A", ref(s))
        assert claimed(store, "B") == {ref(s)}
        decide(store, s)
        store.release("B", ref(s))
        assert claimed(store, "A", now=at(10**6)) == set()

    def test_a_run_closed_while_claimed_is_not_offered(self, store: Store) -> None:
        s = started("w")
        store.create(s)
        claimed(store, "A")
        close(store, s, Status.COMPLETED)
        store.release("A", ref(s))
        assert claimed(store, "B", now=at(10**6)) == set()

    def test_renew_keeps_claims(self, store: Store) -> None:
        s = started("w")
        store.create(s)
        assert store.claim("A", now=T0, lease=0.3).runs == [ref(s)]
        assert store.renew("A", lease=30) == [ref(s)]
        time.sleep(0.4)
        assert claimed(store, "B") == set()
        assert store.renew("A") == [ref(s)]

    def test_a_dead_owners_claims_expire(self, store: Store) -> None:
        s = started("w")
        store.create(s)
        assert store.claim("A", now=T0, lease=0.05).runs == [ref(s)]
        self.kill_owner(store, "A", lease=0.05)
        assert claimed(store, "B") == {ref(s)}
        assert store.renew("A") == []
        store.release("A", ref(s))  # too late: it is B's now
        assert claimed(store, "C") == set()
        assert store.renew("B") == [ref(s)]

    # ------------------------------------------------------------ heartbeats

    def test_heartbeats(self, store: Store, cycle: Callable[[Store], Store]) -> None:
        s = started("w")
        store.create(s)
        r = ref(s)
        decide(store, s, scheduled(1), scheduled(2), scheduled(3))
        assert store.heartbeat(r, 1) is None
        assert store.heartbeat(r, 1, Json(text="10")) == Json(text="10")
        assert store.heartbeat(r, 1, Json(text="11")) == Json(text="11")
        assert store.heartbeat(r, 2, Json(text="20")) == Json(text="20")
        store = cycle(store)
        assert store.heartbeat(r, 1) == Json(text="11")
        assert store.heartbeat(r, 2) == Json(text="20")
        assert store.heartbeat(r, 3) is None
        retry = ActivityAttemptFailed(time=T0, seq=1, attempt=1, error=BOOM, retry_at=at(1))
        append_ok(store, batch(s, retry))  # kept for the next attempt
        assert store.heartbeat(r, 1) == Json(text="11")
        append_ok(store, batch(s, ActivityCompleted(time=T0, seq=1, result=NULL)))
        assert store.heartbeat(r, 1) is None
        assert store.heartbeat(r, 2) == Json(text="20")
        append_ok(store, batch(s, ActivityFailed(time=T0, seq=2, error=BOOM)))
        assert store.heartbeat(r, 2) is None
        store.heartbeat(r, 3, Json(text="30"))
        close(store, s, Status.CANCELLED)
        store = cycle(store)
        assert store.heartbeat(r, 3) is None

    def test_a_late_heartbeat_is_not_kept(self, store: Store) -> None:
        s = started("w")
        store.create(s)
        r = ref(s)
        decide(store, s, scheduled(1))
        append_ok(store, batch(s, ActivityCompleted(time=T0, seq=1, result=NULL)))
        store.heartbeat(r, 1, Json(text="late"))  # a slow activity thread, after its result
        assert store.heartbeat(r, 1) is None
        close(store, s, Status.COMPLETED)
        store.heartbeat(r, 1, Json(text="later"))
        assert store.heartbeat(r, 1) is None

    # ------------------------------------------------------------ visibility

    def _population(self, store: Store) -> dict[str, WorkflowStarted]:
        plan = [
            ("a1", "a", Status.COMPLETED),
            ("a2", "a", Status.FAILED),
            ("a3", "a", Status.RUNNING),
            ("b1", "b", Status.RUNNING),
            ("b2", "b", Status.CANCELLED),
            ("b3", "b", Status.TERMINATED),
        ]
        runs = {}
        for i, (wid, type_, status) in enumerate(plan, start=1):
            s = started(wid, type=type_, time=at(i))
            store.create(s)
            if status is not Status.RUNNING:
                close(store, s, status, when=at(100 + i))
            runs[wid] = s
        return runs

    def test_list_filters_and_counts(self, store: Store, cycle: Callable[[Store], Store]) -> None:
        runs = self._population(store)
        store = cycle(store)

        def ids(**filters: Any) -> list[str]:
            return [i.id for i in store.list(**filters).items]

        everything = {
            Status.COMPLETED: 1,
            Status.FAILED: 1,
            Status.RUNNING: 2,
            Status.CANCELLED: 1,
            Status.TERMINATED: 1,
        }
        assert ids() == ["b3", "b2", "b1", "a3", "a2", "a1"]
        assert nonzero(store.list().counts) == everything
        assert ids(status=Status.RUNNING) == ["b1", "a3"]
        assert nonzero(store.list(status=Status.RUNNING).counts) == everything
        assert ids(type="a") == ["a3", "a2", "a1"]
        a_counts = {Status.COMPLETED: 1, Status.FAILED: 1, Status.RUNNING: 1}
        assert nonzero(store.list(type="a", status=Status.FAILED).counts) == a_counts
        assert ids(type="a", status=Status.FAILED) == ["a2"]
        assert ids(since=at(2), until=at(5)) == ["b1", "a3", "a2"]
        assert ids(since=at(5)) == ["b3", "b2"]
        assert ids(until=at(2)) == ["a1"]
        assert ids(type="b", since=at(3), status=Status.TERMINATED) == ["b3"]
        assert ids(type="nope") == []
        assert nonzero(store.list(type="nope").counts) == {}
        info = store.describe("a2")
        assert (info.status, info.start_time, info.close_time) == (Status.FAILED, at(2), at(102))
        assert info == store.list(type="a", status=Status.FAILED).items[0]
        assert {i.id: i for i in store.runs()}["a2"] == info
        assert info.run_id == runs["a2"].run_id

    def test_list_lists_every_run_of_an_id(self, store: Store) -> None:
        s1 = started("w", time=at(1))
        store.create(s1)
        close(store, s1, Status.FAILED)
        s2 = started("w", time=at(2))
        store.create(s2)
        assert [i.run_id for i in store.list().items] == [s2.run_id, s1.run_id]
        assert [i.run_id for i in store.list(status=Status.FAILED).items] == [s1.run_id]

    def test_pagination_yields_every_run_once_newest_first(
        self, store: Store, cycle: Callable[[Store], Store]
    ) -> None:
        runs = [started(f"w{i:02}", time=at(i // 3)) for i in range(23)]  # ties in start time
        for s in runs:
            store.create(s)
        for s in runs[::4]:
            close(store, s, Status.COMPLETED)
        store = cycle(store)
        for size in (1, 5, 23, 100):
            got = pages(store, size)
            assert all(len(page) <= size for page in got)
            assert all(got[:-1]), "only the last page may be short"
            flat = [i for page in got for i in page]
            assert sorted(i.id for i in flat) == [s.workflow_id for s in runs]
            starts = [i.start_time for i in flat]
            assert starts == sorted(starts, reverse=True)
        page = store.list(page_size=5)
        assert nonzero(page.counts) == {Status.COMPLETED: 6, Status.RUNNING: 17}
        assert page.next_page_token is not None
        second = store.list(page_size=5, page_token=page.next_page_token)
        assert second.counts == page.counts
        completed = [i.id for p in pages(store, 4, status=Status.COMPLETED) for i in p]
        assert sorted(completed) == [s.workflow_id for s in runs[::4]]

    def test_pagination_is_stable_while_runs_start(self, store: Store) -> None:
        old = [started(f"old{i}", time=at(i)) for i in range(10)]
        for s in old:
            store.create(s)
        first = store.list(page_size=4)
        seen = [i.id for i in first.items]
        for j in range(5):  # newer runs start between the pages
            store.create(started(f"new{j}", time=at(100 + j)))
        token = first.next_page_token
        while token is not None:
            page = store.list(page_size=4, page_token=token)
            seen.extend(i.id for i in page.items)
            token = page.next_page_token
        assert sorted(seen) == sorted(s.workflow_id for s in old)

    @pytest.mark.parametrize("size", [0, -1])
    def test_bad_page_size(self, store: Store, size: int) -> None:
        with pytest.raises(ValueError):
            store.list(page_size=size)

    @pytest.mark.parametrize("token", ["garbage", "-1", "\x00", "[1,2,3]", "x" * 1000])
    def test_bad_page_token(self, store: Store, token: str) -> None:
        for i in range(3):
            store.create(started(f"w{i}", time=at(i)))
        with pytest.raises(ValueError):
            store.list(page_token=token)

    def test_runs_iterates_every_run(self, store: Store, cycle: Callable[[Store], Store]) -> None:
        assert list(store.runs()) == []
        expected = set()
        p = started("p")
        store.create(p)
        kid = started("kid", parent=link(p, 1))
        decide(store, p, child_started(1, "kid"), starts=[kid])
        s1 = started("w")
        store.create(s1)
        s2 = started("w", continued_from=link(s1))
        decide(
            store,
            s1,
            WorkflowContinuedAsNew(time=T0, input=NULL, new_run_id=s2.run_id),
            starts=[s2],
        )
        s3 = started("w")
        store.create(s3, id_reuse=IdReusePolicy.TERMINATE_IF_RUNNING)
        expected = {(s.workflow_id, s.run_id) for s in (p, kid, s1, s2, s3)}
        store = cycle(store)
        infos = list(store.runs())
        assert len(infos) == len(expected)
        assert {(i.id, i.run_id) for i in infos} == expected
        by_run = {i.run_id: i for i in infos}
        assert by_run[s1.run_id].status is Status.CONTINUED_AS_NEW
        assert by_run[s2.run_id].status is Status.TERMINATED
        assert by_run[s3.run_id].status is Status.RUNNING
        assert by_run[kid.run_id].parent == link(p, 1)

    # ------------------------------------------------------------ lifecycle

    def test_context_manager_and_close(self, make_store: MakeStore) -> None:
        with make_store() as store:
            s = started("w")
            store.create(s)
        calls: list[Callable[[], object]] = [
            lambda: store.create(started("x")),
            lambda: store.append([batch(s, signal())]),
            lambda: store.read("w"),
            lambda: store.describe("w"),
            lambda: store.list(),
            lambda: list(store.runs()),
            lambda: store.claim("A", now=T0),
            lambda: store.renew("A"),
            lambda: store.release("A", ref(s)),
            lambda: store.heartbeat(ref(s), 1),
        ]
        for call in calls:
            with pytest.raises(RuntimeError):
                call()
        store.close()  # closing twice is harmless

    def test_enter_returns_the_store(self, store: Store) -> None:
        with store as entered:
            assert entered is store

    # ------------------------------------------------------------ concurrency

    def test_concurrent_signals_and_decisions(self, store: Store) -> None:
        s = started("w")
        store.create(s)
        signallers, per_signaller, deciders, rounds = 4, 40, 3, 25

        def signaller(t: int) -> int:
            for i in range(per_signaller):
                append_ok(store, batch(s, signal(request_id=f"{t}-{i}")))
            return 0

        def decider(t: int) -> int:
            won = 0
            for i in range(rounds):
                n = length(store, s)
                bid = f"d{t}-{i}"
                mark = MarkerRecorded(time=T0, name="m", change_id=bid)
                [r] = store.append([batch(s, wtc(n, bid), mark, expected=n)])
                if r.ok:
                    won += 1
                else:
                    assert isinstance(r.error, ConflictError), r.error
            return won

        with ThreadPoolExecutor(signallers + deciders) as pool:
            sig = [pool.submit(signaller, t) for t in range(signallers)]
            dec = [pool.submit(decider, t) for t in range(deciders)]
            won = sum(f.result() for f in dec) + sum(f.result() for f in sig)
        events = history(store, s)
        assert [ev.index for ev in events] == list(range(len(events)))
        ids = [ev.request_id for ev in events if isinstance(ev, SignalReceived)]
        assert sorted(ids) == sorted(
            f"{t}-{i}" for t in range(signallers) for i in range(per_signaller)
        )
        decisions = [ev for ev in events if isinstance(ev, WorkflowTaskCompleted)]
        assert len(decisions) == won >= 1
        previous = -1
        for d in decisions:
            assert d.seen > previous, "a decision landed without seeing the one before it"
            assert d.seen <= d.index
            after = events[d.index + 1]  # the batch is whole and contiguous
            assert isinstance(after, MarkerRecorded) and after.change_id == d.batch_id
            previous = d.index

    def test_exactly_one_decision_wins_per_length(self, store: Store) -> None:
        s = started("w")
        store.create(s)
        racers = 6
        with ThreadPoolExecutor(racers) as pool:
            for round_ in range(10):
                n = length(store, s)
                barrier = threading.Barrier(racers)

                def race(
                    i: int, n: int = n, barrier: threading.Barrier = barrier, round_: int = round_
                ) -> bool:
                    barrier.wait()
                    events: list[Event] = [wtc(n)]
                    if i == 0:  # one racer coalesces an input: it must land exactly
                        events.insert(0, signal(request_id=str(round_)))
                    [r] = store.append([batch(s, *events, expected=n)])
                    assert r.ok or isinstance(r.error, ConflictError), r.error
                    return r.ok

                assert sum(pool.map(race, range(racers))) == 1
        assert sum(isinstance(ev, WorkflowTaskCompleted) for ev in history(store, s)) == 10

    def test_concurrent_claims_never_overlap(self, store: Store) -> None:
        runs = set()
        for i in range(120):
            s = started(f"w{i}")
            store.create(s)
            runs.add(ref(s))

        def claimer(owner: str) -> list[RunRef]:
            got: list[RunRef] = []
            while True:
                more = store.claim(owner, now=T0, limit=5).runs
                if not more:
                    return got
                got.extend(more)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(claimer, [f"owner-{i}" for i in range(8)]))
        flat = [r for got in results for r in got]
        assert len(flat) == len(set(flat)) == len(runs)
        assert set(flat) == runs

    # ------------------------------------------------------------ shared handles, crashes

    def test_two_handles_share_the_data(self, opened: MakeStore) -> None:
        if not self.shared:
            pytest.skip(f"{type(self).__name__} has no second handle (shared = False)")
        a, b = opened(), opened()
        s = started("w")
        a.create(s)
        assert b.read("w") == [with_index(s, 0)]
        with pytest.raises(WorkflowAlreadyStartedError):
            b.create(started("w"))
        append_ok(b, batch(s, signal()))
        assert length(a, s) == 2
        assert claimed(a, "A") == {ref(s)}
        assert claimed(b, "B") == set()
        append_ok(a, batch(s, wtc(2), expected=2))
        append_fails(b, batch(s, wtc(2), expected=2), ConflictError)
        a.release("A", ref(s))
        append_ok(a, batch(s, signal()))
        assert claimed(b, "B") == {ref(s)}

    def test_a_torn_batch_is_dropped_whole(self, opened: MakeStore) -> None:
        if not (self.crashes and self.reopen):
            pytest.skip(f"{type(self).__name__} simulates no crashes (crashes = False)")
        store = opened()
        s = started("w")
        store.create(s)
        first = [signal("a"), signal("b")]
        append_ok(store, batch(s, *first))
        append_ok(store, batch(s, wtc(3), scheduled(1), timer(2, at(9)), expected=3))
        store.close()
        self.tear_last_batch(store, ref(s))
        store = opened()
        assert history(store, s) == [with_index(s, 0), *stamped(first, 1)]
        assert store.describe("w").history_length == 3
        assert claimed(store, "A") == {ref(s)}
        assert append_ok(store, batch(s, wtc(3), expected=3)) == 3
