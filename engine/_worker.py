"""The worker: claims runs from a store, makes their decisions, runs their activities.

The worker only loads, calls, appends and dispatches; every rule about which
command matches which event is the interpreter's.  One driver thread owns the
interpreters and all appends; activities run on a thread pool (``def``) or an
event loop (``async def``) and hand their outcomes back through a queue.
``run_until_idle`` drives the same machinery in one thread, deterministically.

Per run the worker keeps a live interpreter in an LRU cache, so a long workflow
is replayed only on a cache miss.  An activity's outcome and the decision it
triggers go to the store as one batch: a sequential workflow costs one durable
write per activity.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import queue
import random
import signal
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec

from stores._protocol import AppendBatch, AppendResult, RunRef, Store

from ._clock import Clock, SystemClock, VirtualClock
from ._codec import Codec
from ._context import ActivityContext, reset_context, set_context
from ._defs import ActivityDefinition, activity_definition, workflow_definition
from ._errors import (
    ConflictError,
    CorruptionError,
    NonDeterminismError,
    PayloadError,
    StoreError,
    WorkflowAlreadyClosedError,
    WorkflowError,
)
from ._events import (
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    ChildWorkflowStarted,
    Event,
    Link,
    Payload,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowContinuedAsNew,
    WorkflowStarted,
    map_payloads,
)
from ._failures import failure_from
from ._interpreter import Interpreter
from ._payloads import BlobStore, PayloadCodec, Payloads
from ._retry import RetryPolicy

__all__ = ["Worker"]

log = logging.getLogger("temporalpp.worker")

_DEFAULT_RETRY = RetryPolicy()


class _Activity:
    """A scheduled activity without an outcome yet."""

    __slots__ = ("attempts", "event", "retry_at")

    def __init__(self, event: ActivityScheduled) -> None:
        self.event = event
        self.attempts = 0  # failed attempts so far
        self.retry_at: datetime | None = None


class _Attempt:
    """An attempt running now (in a thread, on the event loop, or inline)."""

    __slots__ = ("context", "event", "started")

    def __init__(self, event: ActivityScheduled, context: ActivityContext) -> None:
        self.event = event
        self.context = context
        self.started = time.monotonic()


class _Entry:
    """A cached run: its live interpreter and what it has pending."""

    __slots__ = ("activities", "interp", "length", "ref", "started", "timers")

    def __init__(self, ref: RunRef, started: WorkflowStarted, interp: Interpreter) -> None:
        self.ref = ref
        self.started = started
        self.interp = interp
        self.length = 0
        self.activities: dict[int, _Activity] = {}
        self.timers: dict[int, datetime] = {}

    def feed(self, events: Sequence[Event]) -> None:
        """Feed the interpreter and note what the events leave pending."""
        self.interp.feed(events)
        self.note(events)

    def note(self, events: Sequence[Event]) -> None:
        """Note appended events the interpreter has already taken."""
        self.length += len(events)
        for ev in events:
            match ev:
                case ActivityScheduled(seq=seq):
                    self.activities[seq] = _Activity(ev)
                case ActivityAttemptFailed(seq=seq, attempt=attempt, retry_at=retry_at):
                    act = self.activities.get(seq)
                    if act is not None:
                        act.attempts = max(act.attempts, attempt)
                        act.retry_at = retry_at
                case ActivityCompleted(seq=seq) | ActivityFailed(seq=seq):
                    self.activities.pop(seq, None)
                case TimerStarted(seq=seq, fire_at=fire_at):
                    self.timers[seq] = fire_at
                case TimerFired(seq=seq) | TimerCancelled(seq=seq):
                    self.timers.pop(seq, None)
                case _:
                    pass
        if self.interp.closing is not None:
            self.timers.clear()
            self.activities.clear()


class _Prepared:
    """A run's batch, decided and not yet appended.

    ``events`` hold plain payloads (the interpreter gets them back); the batch
    holds them sealed (compressed, encrypted, offloaded), as the store keeps them.
    """

    __slots__ = ("batch", "entry", "events", "fed")

    def __init__(
        self,
        payloads: Payloads,
        entry: _Entry,
        events: list[Event],
        expected: int | None,
        *,
        starts: Sequence[WorkflowStarted] = (),
        fed: int | None = None,
    ) -> None:
        self.entry = entry
        self.events = events
        self.fed = fed  # inputs at the head of ``events``; None: appended alone, unconditionally
        ref = entry.ref
        self.batch = AppendBatch(
            workflow_id=ref.workflow_id,
            run_id=ref.run_id,
            events=payloads.seal_events(events, ref.workflow_id),
            expected_length=expected,
            starts=[_seal_start(payloads, s) for s in starts],
        )


def _seal_start(payloads: Payloads, started: WorkflowStarted) -> WorkflowStarted:
    """A new run's start, its input sealed for its own workflow id (its own data key)."""
    if payloads.idle:
        return started
    return map_payloads(started, lambda p: payloads.seal(p, started.workflow_id))  # type: ignore[return-value]


_OUTCOMES = (ActivityCompleted, ActivityFailed, ActivityAttemptFailed)


def _unsettled(entry: _Entry, ev: Event) -> bool:
    """False for an activity outcome whose attempt the run's history has settled already."""
    if isinstance(ev, _OUTCOMES):
        act = entry.activities.get(ev.seq)
        return act is not None and ev.attempt > act.attempts
    return True


class _Blocked(Exception):
    """This worker cannot make progress on a run (unknown type, non-determinism)."""


class Worker:
    """Runs workflows and activities from ``store``.

    Everything with an effect is injected, so a simulation can drive the real
    worker: the ``store``, the ``clock`` (workflow time: timers, retries,
    ``Now()``), the ``executor`` that runs ``def`` activities in ``run()``, and
    ``run_until_idle()``, which does all due work in the calling thread.
    ``on_decision(seconds)`` is told how long each decision took (metrics).
    ``auto_register=True`` (what ``engine.run`` uses) also runs activities and
    child workflows that the workflow code yields as functions.

    >>> from engine import Worker, Client, workflow, activity, ScheduleActivity
    >>> from stores import MemoryStore
    >>> @activity
    ... def double(x: int) -> int:
    ...     return 2 * x
    >>> @workflow
    ... def twice(x: int):
    ...     return (yield ScheduleActivity(double, x))
    >>> store = MemoryStore()
    >>> client = Client(store)
    >>> wid = client.start(twice, 21)
    >>> Worker(store, workflows=[twice], activities=[double]).run_until_idle()
    >>> client.result(wid)
    42
    """

    def __init__(
        self,
        store: Store | None = None,
        workflows: Iterable[Any] = (),
        activities: Iterable[Any] = (),
        *,
        cas: BlobStore | None = None,
        codec: Codec | None = None,
        task_queue: str = "default",
        clock: Clock | None = None,
        identity: str | None = None,
        max_concurrent_activities: int = 16,
        cache_size: int = 1000,
        lease: float = 30.0,
        poll_interval: float = 1.0,
        check_args: bool = True,
        auto_register: bool = False,
        executor: concurrent.futures.Executor | None = None,
        on_decision: Callable[[float], None] | None = None,
    ) -> None:
        self._owns_store = store is None
        if store is None:  # the embedded default: $TPP_STORE or ./.tpp/store.db
            import stores

            store = stores.open_default()
        self.store = store
        self.cas = cas
        self.codec: Codec = codec if codec is not None else PayloadCodec()
        self._payloads = Payloads(self.codec, cas)
        self.task_queue = task_queue
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.max_concurrent_activities = max_concurrent_activities
        self.cache_size = cache_size
        self.lease = lease
        self.poll_interval = poll_interval
        self.check_args = check_args
        self.auto_register = auto_register
        self._workflows: dict[str, Callable[..., Any]] = {}
        for fn in workflows:
            self._workflows[workflow_definition(fn).name] = fn
        self._activities: dict[str, ActivityDefinition] = {}
        for fn in activities:
            d = activity_definition(fn)
            self._activities[d.name] = d
        self._cache: OrderedDict[RunRef, _Entry] = OrderedDict()
        # NB: a dict, not a set: runs are dispatched and released in claim order, not in
        # the order of str hashes (PYTHONHASHSEED), so a seeded simulation replays
        self._owned: dict[RunRef, None] = {}
        self._running: dict[tuple[RunRef, int], _Attempt] = {}
        # NB: queue.Queue, not SimpleQueue: on CPython 3.11 a signal handler that outlasts
        # a SimpleQueue.get(timeout=...) can turn the wait into an endless one
        self._done: queue.Queue[tuple[RunRef, _Attempt, Event]] = queue.Queue()
        self._backoff: dict[RunRef, int] = {}
        # activity outcomes an append failed to record (the store failed): recorded with
        # the next append that reaches the store, unless the history settled them already
        self._stash: dict[RunRef, list[Event]] = {}
        self._suspect = False  # a StoreError happened: renew before the next round
        self._stopping = threading.Event()
        self._executor = executor
        self.on_decision = on_decision
        self._pool: concurrent.futures.Executor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._progress = False
        self._batch_ids = itertools.count()

    def _batch_id(self) -> str:
        """A unique batch id: this worker's identity and a counter (no uuid per decision)."""
        return f"{self.identity}#{next(self._batch_ids)}"

    # ------------------------------------------------------------------ running

    def run_until_idle(self, skip_time: bool = False) -> None:
        """Do all work due at the clock's current time, in this thread, then return.

        With ``skip_time=True`` and a ``VirtualClock``, jump the clock to each
        next due timer or retry until every run is closed or waits only on
        signals (or is blocked).
        """
        if skip_time and not isinstance(self.clock, VirtualClock):
            raise ValueError("run_until_idle(skip_time=True) needs a VirtualClock")
        while True:
            self._progress = False
            next_due = self._round(inline=True)
            if self._progress:
                continue
            if not skip_time or next_due is None:
                return
            assert isinstance(self.clock, VirtualClock)
            if next_due <= self.clock.now():
                return  # only blocked runs are due: they wait for fixed code
            self.clock.set(next_due)

    def run(self) -> None:
        """Work until SIGINT or SIGTERM (or ``stop()``), then hand back what it holds.

        Graceful: the worker stops claiming, lets running activities finish (their
        outcomes are recorded), and releases every run it owns.

        A failing store (``StoreError``: an outage, a lost reply, a full disk) does
        not end it: the worker logs, backs off with jitter (up to 5 s), drops its
        cached interpreters, keeps the outcomes it could not record, and carries
        on once the store answers, after checking with ``renew`` which runs are
        still its own (an outage longer than the lease hands them to others; an
        outcome of such a run is dropped and its attempt runs again).
        """
        self._stopping.clear()
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: self._stopping.set())
        self._pool = self._executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=self.max_concurrent_activities, thread_name_prefix="tpp-activity"
        )
        self._loop = asyncio.new_event_loop()
        loop_thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        loop_thread.start()
        last_renew = time.monotonic()
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    self._progress = False
                    next_due = self._round(inline=False)
                    if time.monotonic() - last_renew > self.lease / 3:
                        self._renew()
                        last_renew = time.monotonic()
                    if failures:
                        log.warning("worker %s: the store answers again", self.identity)
                        failures = 0
                    if not self._progress:
                        self._wait(next_due)
                except StoreError as exc:  # an outage: ride it out, the store keeps the truth
                    self._forget_cache()
                    failures += 1
                    delay = min(5.0, self.poll_interval * 2 ** min(failures, 8))
                    delay *= random.uniform(0.5, 1.0)  # jitter: workers do not retry in step
                    log.warning(
                        "worker %s: store error (%d in a row), retrying in %.1f s: %s",
                        self.identity, failures, delay, exc,
                    )  # fmt: skip
                    self._stopping.wait(delay)
            give_up: float | None = None
            while self._running or self._stash:  # graceful: let running activities report
                try:
                    self._drain(timeout=0.1)
                    self._check_timeouts()
                except StoreError as exc:  # keep trying for a lease, then leave it to others
                    self._forget_cache()
                    now = time.monotonic()
                    give_up = give_up or now + self.lease
                    if now > give_up:
                        log.warning(
                            "worker %s: stopping with outcomes not recorded (their attempts "
                            "will run again): %s", self.identity, exc,
                        )  # fmt: skip
                        break
                    time.sleep(0.5)
        finally:
            try:
                self._release_all()
            except StoreError as exc:  # the claims lapse with the lease or the process
                log.warning("worker %s: runs not released on stop: %s", self.identity, exc)
            if self._executor is None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            loop_thread.join(timeout=5)
            self._loop.close()
            self._pool = None
            self._loop = None
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def close(self) -> None:
        """Drop cached runs; close the store if this worker opened it (the embedded default)."""
        self._release_all()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self) -> None:
        """Ask ``run()`` to stop (graceful, as on SIGTERM)."""
        self._stopping.set()

    def _wait(self, next_due: datetime | None) -> None:
        timeout = self.poll_interval
        if next_due is not None:
            delta = (next_due - self.clock.now()).total_seconds()
            timeout = max(0.0, min(timeout, delta))
        self._drain(timeout=timeout if timeout > 0 else 0.001)

    def _round(self, inline: bool) -> datetime | None:
        """One pass: claim due runs and advance them, run activities, take outcomes.

        A ``StoreError`` leaves the worker fit to go on (``run`` retries): the
        cached interpreters, which may have decided past what the store has, are
        dropped, and unrecorded activity outcomes wait in ``_stash``.
        """
        try:
            if self._suspect:  # the claims may have lapsed while the store was failing
                self._renew()
                self._suspect = False
            return self._round_once(inline)
        except StoreError:
            self._forget_cache()
            raise

    def _forget_cache(self) -> None:
        """After a ``StoreError``: drop every cached interpreter (the next load replays
        what the store holds) and check the claims before working on them again."""
        self._suspect = True
        for entry in self._cache.values():
            entry.interp.close()
        self._cache.clear()

    def _renew(self) -> None:
        """Keep the claims alive; stop working on runs the store says are no longer ours."""
        held = set(self.store.renew(self.identity, lease=self.lease))
        for ref in list(self._owned):
            if ref not in held:  # lapsed during an outage or a pause: another worker has it
                log.warning(
                    "worker %s lost workflow %s run %s", self.identity, ref.workflow_id, ref.run_id
                )
                self._owned.pop(ref, None)
                self._evict(ref)
                self._stash.pop(ref, None)
                for key, running in list(self._running.items()):
                    if key[0] == ref:  # its outcome is the new owner's to record, not ours
                        running.context.cancel()
                        del self._running[key]
                # NB: a no-op if another worker has it; if the store still counts it ours
                # (its partition not trusted for a moment), this lets it be claimed again
                self.store.release(self.identity, ref)

    def _round_once(self, inline: bool) -> datetime | None:
        free = self.max_concurrent_activities - len(self._running)
        claims = self.store.claim(
            self.identity,
            now=self.clock.now(),
            task_queues=(self.task_queue,),
            limit=max(1, free),
            lease=self.lease,
        )
        self._owned.update(dict.fromkeys(claims.runs))
        self._group({ref: [] for ref in claims.runs})
        while True:  # inline: run activities and record outcomes until none is left
            self._dispatch(inline)
            recorded = self._drain(timeout=0)
            self._check_timeouts()
            if not inline or not recorded:
                break
        # keep what has work in hand (a running activity, or one to start next round):
        # releasing it would cost a release and a claim per activity
        now = self.clock.now()
        busy = {ref for ref, _ in self._running}
        for ref in list(self._owned):
            entry = self._cache.get(ref)
            ready = entry is not None and any(
                a.retry_at is None or a.retry_at <= now for a in entry.activities.values()
            )
            if ref not in busy and not (ready and not inline and not self._stopping.is_set()):
                self._release(ref)
        return claims.next_due

    def _release(self, ref: RunRef, *, blocked: str | None = None) -> None:
        not_before = None
        n = self._backoff.get(ref, 0)
        if blocked is not None:
            not_before = self.clock.now() + timedelta(seconds=min(60.0, 2.0**n))
        # NB: owned until the store took it back: after a StoreError the next round retries
        self.store.release(self.identity, ref, not_before=not_before, blocked=blocked)
        self._owned.pop(ref, None)
        if blocked is not None:
            self._backoff[ref] = n + 1
        else:
            self._backoff.pop(ref, None)

    def _release_all(self) -> None:
        self._forget_cache()
        for ref in list(self._owned):
            self._release(ref)

    # ------------------------------------------------------------------ decisions

    def _load(self, ref: RunRef) -> _Entry:
        entry = self._cache.get(ref)
        if entry is not None and self.cache_size == 0:  # no cache: replay every time
            self._evict(ref)
            entry = None
        if entry is not None:
            self._cache.move_to_end(ref)
            events = self.store.read(ref.workflow_id, ref.run_id, after=entry.length)
            if events:
                entry.feed(self._payloads.open_events(events))
            return entry
        events = self._payloads.open_events(self.store.read(ref.workflow_id, ref.run_id))
        started = events[0]
        assert isinstance(started, WorkflowStarted)
        fn = self._workflows.get(started.workflow_type)
        if fn is None and self.auto_register:
            for other in self._cache.values():
                fn = other.interp.functions.get(started.workflow_type)
                if fn is not None:
                    self._workflows[started.workflow_type] = fn
                    break
        if fn is None:
            raise _Blocked(
                f"workflow type {started.workflow_type!r} is not registered with worker "
                f"{self.identity} (it knows {sorted(self._workflows) or 'none'})"
            )
        interp = Interpreter(fn, codec=self.codec, check_args=self.check_args)
        entry = _Entry(ref, started, interp)
        entry.feed(events)
        self._cache[ref] = entry
        while len(self._cache) > max(1, self.cache_size):
            _, old = self._cache.popitem(last=False)
            if old.ref not in self._owned:
                old.interp.close()
            else:  # pragma: no cover - only with a cache smaller than the in-flight set
                self._cache[old.ref] = old
                break
        return entry

    def _evict(self, ref: RunRef) -> None:
        entry = self._cache.pop(ref, None)
        if entry is not None:
            entry.interp.close()

    def _advance(self, ref: RunRef, inputs: Sequence[Event] = ()) -> None:
        """Bring a run up to date: feed ``inputs`` (activity outcomes), fire due timers,
        decide, append; repeat while a timer falls due."""
        pending = list(inputs)
        for _attempt in range(5):
            try:
                entry = self._load_or_block(ref)
                while True:
                    prepared = self._prepare(entry, pending)
                    if prepared is None:
                        return
                    (result,) = self.store.append([prepared.batch])
                    pending = []  # committed (or refused for good): never append them twice
                    if not self._commit(prepared, result) or not self._timers_due(entry):
                        return
            except _Blocked as exc:
                self._block(ref, pending, str(exc))
                return
            except ConflictError:
                # someone else decided: replay what they wrote, then decide again with
                # the outcomes still to record (a duplicate would be ignored by replay)
                self._evict(ref)
        self._release(ref)  # pragma: no cover - five conflicts in a row: let another try

    def _load_or_block(self, ref: RunRef) -> _Entry:
        try:
            return self._load(ref)
        except NonDeterminismError as exc:
            raise _Blocked(str(exc)) from exc
        except (PayloadError, CorruptionError) as exc:
            # a payload this worker cannot open (no key, no CAS, a lost blob): the run
            # waits, visibly, for a worker configured to read it
            self._evict(ref)
            raise _Blocked(f"cannot read the run's payloads: {exc}") from exc

    def _block(self, ref: RunRef, inputs: Sequence[Event], reason: str) -> None:
        """Give back a run this worker cannot advance, keeping the outcomes it brought."""
        log.warning("workflow %s run %s is blocked: %s", ref.workflow_id, ref.run_id, reason)
        self._evict(ref)
        if inputs:  # the outcomes are facts whatever the code says
            sealed = self._payloads.seal_events(inputs, ref.workflow_id)
            self.store.append(
                [AppendBatch(workflow_id=ref.workflow_id, run_id=ref.run_id, events=sealed)]
            )
        self._release(ref, blocked=reason)

    def _timers_due(self, entry: _Entry) -> bool:
        if entry.interp.closing is not None or self._cache.get(entry.ref) is not entry:
            return False
        now = self.clock.now()
        return any(t <= now for t in entry.timers.values())

    def _prepare(self, entry: _Entry, inputs: list[Event]) -> _Prepared | None:
        """Feed ``inputs`` and due timer firings, decide: the batch to append, if any."""
        interp = entry.interp
        now = self.clock.now()
        if interp.closing is None:
            # an outcome the history already settled (another owner recorded this attempt
            # while this one was paused past its lease) would land as a duplicate: drop it
            inputs = [ev for ev in inputs if _unsettled(entry, ev)]
        inputs = inputs + [
            TimerFired(time=now, seq=seq) for seq, at in entry.timers.items() if at <= now
        ]
        if interp.closing is not None:
            return _Prepared(self._payloads, entry, inputs, None) if inputs else None
        expected = entry.length
        try:
            t0 = time.perf_counter()
            if inputs:
                interp.feed(inputs)
            decision = interp.decide(now, self._batch_id())
            if self.on_decision is not None:
                self.on_decision(time.perf_counter() - t0)
        except NonDeterminismError as exc:
            raise _Blocked(str(exc)) from exc
        if decision is None:  # only retry notices: record them where they were seen
            if not inputs:
                return None
            return _Prepared(self._payloads, entry, inputs, expected, fed=len(inputs))
        events = list(decision.events)
        starts = self._starts(entry, events)
        return _Prepared(
            self._payloads, entry, [*inputs, *events], expected, starts=starts, fed=len(inputs)
        )

    def _starts(self, entry: _Entry, events: list[Event]) -> list[WorkflowStarted]:
        """Runs a decision starts: its children, or the next run of a continue-as-new."""
        starts: list[WorkflowStarted] = []
        s = entry.started
        for i, ev in enumerate(events):
            if isinstance(ev, ChildWorkflowStarted):
                starts.append(
                    WorkflowStarted(
                        time=ev.time,
                        workflow_type=ev.workflow_type,
                        workflow_id=ev.workflow_id,
                        run_id=uuid.uuid4().hex,
                        input=ev.args,
                        task_queue=ev.task_queue or s.task_queue,
                        parent=Link(workflow_id=s.workflow_id, run_id=s.run_id, seq=ev.seq),
                    )
                )
            elif isinstance(ev, WorkflowContinuedAsNew):
                new_run = uuid.uuid4().hex
                events[i] = msgspec.structs.replace(ev, new_run_id=new_run)
                starts.append(
                    WorkflowStarted(
                        time=ev.time,
                        workflow_type=s.workflow_type,
                        workflow_id=s.workflow_id,
                        run_id=new_run,
                        input=ev.input,
                        task_queue=s.task_queue,
                        parent=s.parent,
                        continued_from=Link(workflow_id=s.workflow_id, run_id=s.run_id),
                    )
                )
        return starts

    def _commit(self, prepared: _Prepared, result: AppendResult) -> bool:
        """Take an append's result: feed the interpreter its own batch; False if it is gone."""
        entry = prepared.entry
        if result.error is not None:
            if isinstance(result.error, ConflictError):
                raise result.error
            self._evict(entry.ref)  # closed or gone under us: nothing more to do here
            if isinstance(result.error, WorkflowError):
                return False
            raise result.error  # pragma: no cover - stores raise only WorkflowErrors
        self._progress = True
        if prepared.fed is None:
            return False  # outcomes appended alone: the next load reads the store
        if result.index == entry.length:
            # the interpreter took the inputs already; it gets its own batch back
            entry.interp.feed(prepared.events[prepared.fed :])
            entry.note(prepared.events)
            return True
        self._evict(entry.ref)  # external events landed first: the next load reads them
        return False

    # ------------------------------------------------------------------ activities

    def _dispatch(self, inline: bool) -> None:
        now = self.clock.now()
        for ref in list(self._owned):
            entry = self._cache.get(ref)
            if entry is None:
                continue
            for seq, act in list(entry.activities.items()):
                if (ref, seq) in self._running or (act.retry_at is not None and act.retry_at > now):
                    continue
                if len(self._running) >= self.max_concurrent_activities:
                    return
                self._start_activity(entry, act, inline)

    def _start_activity(self, entry: _Entry, act: _Activity, inline: bool) -> None:
        ev = act.event
        ref = entry.ref
        definition = self._activities.get(ev.activity_type)
        if definition is None and self.auto_register:
            fn = entry.interp.functions.get(ev.activity_type)
            if fn is not None:
                definition = self._activities[ev.activity_type] = activity_definition(fn)
        if definition is None:
            self._block(
                ref,
                (),
                f"activity type {ev.activity_type!r} is not registered with worker "
                f"{self.identity} (it knows {sorted(self._activities) or 'none'})",
            )
            return
        attempt = act.attempts + 1
        stored = self.store.heartbeat(ref, ev.seq)
        ctx = ActivityContext(
            workflow_id=ref.workflow_id,
            run_id=ref.run_id,
            activity_type=ev.activity_type,
            seq=ev.seq,
            attempt=attempt,
            heartbeat_details=self._heartbeat_details(ref, ev.seq, stored),
            record_heartbeat=lambda details: self._heartbeat(ref, ev.seq, details),
        )
        running = self._running[(ref, ev.seq)] = _Attempt(ev, ctx)
        try:
            types, rest = definition.param_types()
            args = self.codec.decode_args(ev.args, types, rest)
        except TypeError as exc:  # arguments that do not fit the signature: no retry helps
            self._done.put((ref, running, self._outcome(act, attempt, error=exc, final=True)))
            return
        job = (ref, act, running, definition, args, attempt)
        if inline:
            self._execute(*job)
        elif definition.is_async:
            assert self._loop is not None
            asyncio.run_coroutine_threadsafe(self._execute_async(*job), self._loop)
        else:
            assert self._pool is not None
            self._pool.submit(self._execute, *job)

    def _heartbeat_details(self, ref: RunRef, seq: int, stored: Payload | None) -> Any:
        if stored is None:
            return None
        try:
            return self._payloads.decode(stored)
        except (PayloadError, CorruptionError, TypeError) as exc:  # progress is a hint
            log.warning("heartbeat of %s activity %d unreadable: %s", ref.workflow_id, seq, exc)
            return None

    def _heartbeat(self, ref: RunRef, seq: int, details: Any) -> None:
        try:
            # NB: never offloaded: the CAS collector marks histories, not heartbeat slots
            encoded = self.codec.encode(details)
            payload = self._payloads.seal(encoded, ref.workflow_id, offload=False)
            self.store.heartbeat(ref, seq, payload)
        except WorkflowAlreadyClosedError:
            pass  # the run closed: the activity's result will be ignored anyway
        except WorkflowError as exc:  # the store failed: the activity carries on regardless
            log.warning("heartbeat of %s activity %d not stored: %s", ref.workflow_id, seq, exc)

    def _execute(
        self,
        ref: RunRef,
        act: _Activity,
        running: _Attempt,
        definition: ActivityDefinition,
        args: list[Any],
        attempt: int,
    ) -> None:
        token = set_context(running.context)
        try:
            if definition.is_async:
                value = asyncio.run(definition.fn(*args))
            else:
                value = definition.fn(*args)
        except Exception as exc:
            running.context.flush()  # the next attempt resumes from the latest heartbeat
            outcome = self._outcome(act, attempt, error=exc)
        else:
            limit = act.event.start_to_close
            elapsed = time.monotonic() - running.started
            if limit is not None and elapsed > limit.total_seconds():
                # NB: a result that comes too late is a timeout, as the caller stopped waiting
                reason = f"start_to_close timeout ({limit}) exceeded"
                outcome = self._outcome(act, attempt, error=TimeoutError(reason))
            else:
                outcome = self._outcome(act, attempt, value=value)
        finally:
            reset_context(token)
        self._done.put((ref, running, outcome))

    async def _execute_async(
        self,
        ref: RunRef,
        act: _Activity,
        running: _Attempt,
        definition: ActivityDefinition,
        args: list[Any],
        attempt: int,
    ) -> None:
        token = set_context(running.context)
        try:
            timeout = act.event.start_to_close
            coro = definition.fn(*args)
            if timeout is not None:
                value = await asyncio.wait_for(coro, timeout.total_seconds())
            else:
                value = await coro
        except Exception as exc:
            running.context.flush()  # the next attempt resumes from the latest heartbeat
            outcome = self._outcome(act, attempt, error=exc)
        else:
            outcome = self._outcome(act, attempt, value=value)
        finally:
            reset_context(token)
        self._done.put((ref, running, outcome))

    def _outcome(
        self,
        act: _Activity,
        attempt: int,
        *,
        value: Any = None,
        error: BaseException | None = None,
        final: bool = False,
    ) -> Event:
        """The event an attempt ends with: completed, failed for good, or retry later."""
        now = self.clock.now()
        ev = act.event
        if error is None:
            try:
                return ActivityCompleted(
                    time=now, seq=ev.seq, result=self.codec.encode(value), attempt=attempt
                )
            except (TypeError, PayloadError) as exc:  # no retry makes it fit
                error, final = exc, True
        failure = failure_from(error)
        if isinstance(error, TimeoutError) and not failure.message:
            failure = msgspec.structs.replace(failure, message="activity timed out")
        policy = ev.retry or _DEFAULT_RETRY
        if not final and policy.retries(attempt, failure.type):
            retry_at = now + policy.delay(attempt)
            deadline = None if ev.schedule_to_close is None else ev.time + ev.schedule_to_close
            if deadline is None or retry_at < deadline:
                return ActivityAttemptFailed(
                    time=now, seq=ev.seq, attempt=attempt, error=failure, retry_at=retry_at
                )
        return ActivityFailed(time=now, seq=ev.seq, error=failure, attempt=attempt)

    def _drain(self, timeout: float) -> int:
        """Record the outcomes of finished activities (waiting up to ``timeout`` for one).

        Group commit: the outcomes that are ready, with the decisions they trigger,
        go to the store in one ``append`` call (one transaction, one fsync).
        Returns how many outcomes were taken.
        """
        block = timeout > 0
        outcomes: dict[RunRef, list[Event]] = {}
        while len(outcomes) < self.max_concurrent_activities:
            try:
                ref, running, outcome = self._done.get(
                    block=block, timeout=timeout if block else None
                )
            except queue.Empty:
                break
            block = False
            key = (ref, running.event.seq)
            if self._running.get(key) is not running:
                continue  # timed out already: its outcome was recorded then
            del self._running[key]
            outcomes.setdefault(ref, []).append(outcome)
        self._group(outcomes)
        return sum(len(events) for events in outcomes.values())

    def _group(self, work: dict[RunRef, list[Event]]) -> None:
        """Advance many runs with one ``append`` call (group commit).

        Outcomes a failed append did not record go first; if the store fails
        again, every outcome of this call waits for the next (a duplicate of one
        that did land is dropped then, as the history has settled it).
        """
        if self._stash:
            stash, self._stash = self._stash, {}
            for ref in [ref for ref in stash if ref not in self._owned]:
                # NB: the run changed hands while the store failed: its new owner may be
                # running the attempt now; a late fact would land under it. Its attempt
                # runs again (at least once), as after a crash.
                log.warning(
                    "worker %s: %d outcome(s) of workflow %s dropped: the run is no longer "
                    "ours", self.identity, len(stash.pop(ref)), ref.workflow_id,
                )  # fmt: skip
            work = {ref: [*stash.pop(ref, []), *events] for ref, events in work.items()} | stash
        try:
            self._group_now(work)
        except StoreError:
            for ref, events in work.items():
                outcomes = [ev for ev in events if isinstance(ev, _OUTCOMES)]
                if outcomes:
                    self._stash.setdefault(ref, []).extend(outcomes)
            raise

    def _group_now(self, work: dict[RunRef, list[Event]]) -> None:
        prepared: list[_Prepared] = []
        for ref, events in work.items():
            try:
                p = self._prepare(self._load_or_block(ref), events)
            except _Blocked as exc:
                self._block(ref, events, str(exc))
                continue
            if p is not None:
                prepared.append(p)
        results = self.store.append([p.batch for p in prepared]) if prepared else []
        for p, result in zip(prepared, results, strict=True):
            ref = p.entry.ref
            try:
                appended = self._commit(p, result)
            except ConflictError:
                self._evict(ref)
                self._advance(ref, p.events[: p.fed])  # decide again on what is there now
                continue
            if appended and self._timers_due(p.entry):
                self._advance(ref)

    def _check_timeouts(self) -> None:
        """Fail attempts past their start-to-close or heartbeat timeout."""
        mono = time.monotonic()
        timed_out: dict[RunRef, list[Event]] = {}
        for key, running in list(self._running.items()):
            ev, ctx = running.event, running.context
            elapsed = mono - running.started
            if ev.start_to_close is not None and elapsed > ev.start_to_close.total_seconds():
                reason = f"start_to_close timeout ({ev.start_to_close}) exceeded"
            elif (
                ev.heartbeat_timeout is not None
                and mono - ctx.last_heartbeat > ev.heartbeat_timeout.total_seconds()
            ):
                reason = f"no heartbeat within heartbeat_timeout ({ev.heartbeat_timeout})"
            else:
                continue
            ctx.cancel()
            ctx.flush()
            del self._running[key]
            ref = key[0]
            entry = self._cache.get(ref)
            act = entry.activities.get(ev.seq) if entry is not None else None
            if act is None:
                act = _Activity(ev)
                act.attempts = ctx.attempt - 1
            timed_out.setdefault(ref, []).append(
                self._outcome(act, ctx.attempt, error=TimeoutError(reason))
            )
        if timed_out:
            self._group(timed_out)
