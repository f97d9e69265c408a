"""R9's deterministic simulation: real workers, a virtual clock, a seeded scheduler, faults.

One ``Sim(seed)`` runs a few real ``engine.Worker`` objects ("processes") in this
thread against one ``MemoryStore`` behind a ``FaultStore``.  Everything that
could differ between two runs of a seed is the seed's: ``random.Random(seed)``
picks every scheduler decision and fault, workflow time is a ``VirtualClock``,
the store's lease clock (``stores.memory``'s ``time.monotonic``) is a virtual
one the scheduler advances, and run ids come from the seed (``uuid4`` in
``engine._worker`` and ``engine._client`` is patched while a sim runs).

The scheduler's steps: one ``_round`` of a worker (the pass ``run_until_idle``
repeats: claim, decide, run activities inline, append, release); a client
starting, signalling or cancelling a workflow; the workflow clock moving; the
lease clock moving past the lease (a dead owner's claims free up, as they do
in ``MemoryStore`` when an owner stops renewing).

Faults, at the worker's store calls:

* crash: ``Crash`` (a ``BaseException``) before the call reaches the store or
  after it landed; the worker object and its cache are dropped, its claims
  stay with its identity until the lease clock passes them; it restarts later
  under a new identity, as a new process would;
* torn tail: an ``append`` call stores a prefix of its batches (each batch
  whole or not at all, maybe none) and raises ``StoreError``;
* lost reply: the ``append`` landed whole, the caller gets ``StoreError``;
* store outage: ``read``/``claim``/``heartbeat`` raise ``StoreError``;
* pause (``pause=p``, off by default): a slow call during which the lease
  clock passes the lease, so other workers take the caller's runs while it is
  still alive (a zombie): its appends then conflict or meet a closed run;
* slow I/O: before the call goes through, other workers step, the client acts
  and the clock moves (one level deep), so decisions race signals, cancels and
  other workers, and conditional appends conflict.

By default a worker that gets a ``StoreError`` is treated as a process that
exits (it releases what it owns, best effort) and is restarted; with
``ride_out=True`` the same worker object carries on, as ``Worker.run`` does:
it drops its cached interpreters, keeps unrecorded outcomes for the next append
and renews its claims before the next round.

Invariants, after every step (``check``): no run holds a closing event twice or
an activity scheduled/completed twice; a closed workflow id has the crash-free
status and result; every event an append acknowledged is at its index; indexes
are 0..n-1; no activity attempt started after its completion was durable (the
ledger; with pauses such late runs are counted in ``late_runs`` instead, as a
zombie cannot know).  At the end (``finish``): faults off, everyone restarted, run to the
end; every workflow id ends as in the crash-free run; ``assert_deterministic``
on every run's history.  ``trace`` hashes the scheduler's decisions and every
appended batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import types
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

import engine._client
import engine._worker
import stores.memory
from engine import (
    All,
    CancelledError,
    Client,
    ContinueAsNew,
    RetryPolicy,
    ScheduleActivity,
    StartChildWorkflow,
    Status,
    StoreError,
    Timer,
    WaitSignal,
    Worker,
    WorkflowError,
    activity,
    activity_context,
    workflow,
)
from engine.events import (
    CLOSING_EVENTS,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    Event,
    with_index,
)
from engine.testing import VirtualClock, assert_deterministic
from stores import AppendBatch, AppendResult, MemoryStore

__all__ = ["Crash", "Sim", "reference"]

T0: Final = datetime(2026, 3, 1, tzinfo=UTC)
LEASE: Final = 30.0

_CURRENT: list[Sim] = []


class Crash(BaseException):
    """The worker's process dies here."""


# ---------------------------------------------------------------------- workload


@activity
def step(tag: str) -> str:
    """Note the attempt in the running sim's ledger; return a value derived from ``tag``."""
    ctx = activity_context()
    _CURRENT[-1].ran(ctx.workflow_id, ctx.run_id, ctx.seq, ctx.attempt)
    return f"{tag}!"


@activity
def flaky(tag: str, fails: int) -> str:
    """Fail the first ``fails`` attempts, then succeed."""
    ctx = activity_context()
    _CURRENT[-1].ran(ctx.workflow_id, ctx.run_id, ctx.seq, ctx.attempt)
    if ctx.attempt <= fails:
        raise RuntimeError(f"{tag}: attempt {ctx.attempt} fails")
    return f"{tag}@{ctx.attempt}"


_FAST: Final = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)


@workflow
def sim_chain(n: int) -> Generator[Any, Any, list[str]]:
    out = []
    for i in range(n):
        out.append((yield ScheduleActivity(step, f"s{i}")))
    return out


@workflow
def sim_timer_signal() -> Generator[Any, Any, str]:
    first = yield ScheduleActivity(step, "before")
    yield Timer(timedelta(minutes=10))
    payload = yield WaitSignal("go")
    last = yield ScheduleActivity(step, f"after-{payload}")
    return f"{first}|{last}"


@workflow
def sim_all() -> Generator[Any, Any, list[str]]:
    got = yield All(
        ScheduleActivity(step, "a"),
        ScheduleActivity(flaky, "b", 2, retry=_FAST),
        ScheduleActivity(step, "c"),
    )
    return list(got)


@workflow
def sim_child(n: int) -> Generator[Any, Any, int]:
    total = 0
    for i in range(n):
        total += len((yield ScheduleActivity(step, f"child{i}")))
    return total


@workflow
def sim_parent(round: int) -> Generator[Any, Any, str]:
    if round == 0:
        got = yield StartChildWorkflow(sim_child, 2, id="child")
        yield ScheduleActivity(step, f"parent{got}")
        yield ContinueAsNew(1)
    last = yield ScheduleActivity(step, "second-run")
    return str(last)


@workflow
def sim_waiter() -> Generator[Any, Any, str]:
    got = yield WaitSignal("never")
    return str(got)


WORKFLOWS: Final = [sim_chain, sim_timer_signal, sim_all, sim_child, sim_parent, sim_waiter]
ACTIVITIES: Final = [step, flaky]
BY_NAME: Final = {fn.__name__: fn for fn in WORKFLOWS}

# (id, workflow, args): what the client starts; signals and cancels follow
STARTS: Final[list[tuple[str, Callable[..., Any], tuple[Any, ...]]]] = [
    ("chain", sim_chain, (4,)),
    ("ts", sim_timer_signal, ()),
    ("all", sim_all, ()),
    ("parent", sim_parent, (0,)),
    ("waiter", sim_waiter, ()),
]


Outcome = tuple[tuple[Status, ...], str]


def _outcome(store: MemoryStore, workflow_id: str) -> Outcome:
    infos = [i for i in store.runs() if i.id == workflow_id]
    infos.sort(key=lambda i: (i.start_time, i.status is not Status.CONTINUED_AS_NEW))
    statuses = tuple(i.status for i in infos)
    if statuses[-1] is Status.RUNNING:
        return statuses, ""
    try:
        return statuses, repr(Client(store).result(workflow_id, timeout=0))
    except CancelledError:
        return statuses, "cancelled"
    except WorkflowError as exc:
        return statuses, f"{type(exc).__name__}"


_REFERENCE: dict[str, Outcome] = {}


def reference() -> dict[str, Outcome]:
    """Every workflow id's crash-free outcome (one worker, no faults), computed once."""
    if not _REFERENCE:
        sim = Sim(0, faults=False)
        with sim.patched():
            store, clock = sim.store, sim.clock
            client = Client(store, clock=clock)
            for wid, fn, args in STARTS:
                client.start(fn, *args, id=wid)
            client.signal("ts", "go", "yes")
            client.cancel("waiter")
            Worker(
                store, workflows=WORKFLOWS, activities=ACTIVITIES, clock=clock, identity="ref"
            ).run_until_idle(skip_time=True)
            ids = {i.id for i in store.runs()}
            _REFERENCE.update({wid: _outcome(store, wid) for wid in sorted(ids)})
    return _REFERENCE


# ---------------------------------------------------------------------- the store


class FaultStore:
    """The worker's view of the store: faults and slow calls, drawn from the sim's rng."""

    def __init__(self, sim: Sim, index: int) -> None:
        self._sim = sim
        self._index = index
        self._inner = sim.store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _enter(self, call: str) -> str | None:
        """Before a call: maybe interleave others, maybe crash; the fault to apply after."""
        sim = self._sim
        if not sim.faults:
            return None
        r = sim.rng.random()
        if r < sim.p_slow:
            sim.note(f"slow {self._index} {call}")
            sim.interleave(self._index)
        elif r < sim.p_slow + sim.p_pause and sim.depth <= 1:
            # paused past the lease (a GC pause, a stopped VM): others take its runs
            sim.note(f"pause {self._index} {call}")
            sim.mono.now += LEASE + 1
            sim.interleave(self._index)
        r = sim.rng.random()
        if r < sim.p_crash:
            side = sim.rng.choice(("before", "after"))
            sim.note(f"crash-{side} {self._index} {call}")
            if side == "before":
                raise Crash(f"before {call}")
            return "crash"
        r -= sim.p_crash
        if call == "append":
            if r < sim.p_torn:
                return "torn"
            r -= sim.p_torn
            if r < sim.p_lost:
                return "lost"
        elif r < sim.p_outage:
            sim.note(f"outage {self._index} {call}")
            raise StoreError(f"simulated outage in {call}")
        return None

    def _after(self, fault: str | None, call: str) -> None:
        if fault == "crash":
            raise Crash(f"after {call}")

    def append(self, batches: Sequence[AppendBatch]) -> list[AppendResult]:
        fault = self._enter("append")
        if fault == "torn":
            keep = self._sim.rng.randrange(len(batches)) if batches else 0
            self._sim.note(f"torn {self._index} {keep}/{len(batches)}")
            self._sim.landed(batches[:keep], self._inner.append(batches[:keep]), acked=False)
            raise StoreError("simulated torn tail: the batches after the cut were lost")
        results = self._inner.append(batches)
        self._sim.landed(batches, results, acked=fault is None)
        if fault == "lost":
            self._sim.note(f"lost {self._index}")
            raise StoreError("simulated lost reply: the append landed")
        self._after(fault, "append")
        return results

    def read(self, *args: Any, **kw: Any) -> list[Event]:
        fault = self._enter("read")
        out = self._inner.read(*args, **kw)
        self._after(fault, "read")
        return out

    def claim(self, *args: Any, **kw: Any) -> Any:
        fault = self._enter("claim")
        out = self._inner.claim(*args, **kw)
        self._after(fault, "claim")
        return out

    def release(self, *args: Any, **kw: Any) -> None:
        fault = self._enter("release") if self._sim.rng.random() < 0.5 else None
        self._inner.release(*args, **kw)
        self._after(fault, "release")

    def heartbeat(self, *args: Any, **kw: Any) -> Any:
        fault = self._enter("heartbeat")
        out = self._inner.heartbeat(*args, **kw)
        self._after(fault, "heartbeat")
        return out


# ---------------------------------------------------------------------- the sim


class _Mono:
    """The store's lease clock: real ``time.monotonic`` replaced by a number the sim moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class Sim:
    """One seeded simulation (see the module docstring)."""

    def __init__(
        self,
        seed: int,
        *,
        workers: int = 3,
        faults: bool = True,
        ride_out: bool = False,
        steps: int = 120,
        pause: float = 0.0,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults
        self.ride_out = ride_out
        self.steps = steps
        self.clock = VirtualClock(start=T0)
        self.mono = _Mono()
        self.store = MemoryStore()
        self.client = Client(self.store, clock=self.clock)
        self.workers: list[Worker | None] = [None] * workers
        self.lives = [0] * workers
        self.depth = 0
        self._hash = hashlib.sha256()
        self.decisions = 0
        self.faults_seen: dict[str, int] = {}
        # fault rates per store call
        self.p_slow = 0.08
        self.p_crash = 0.02
        self.p_torn = 0.03
        self.p_lost = 0.03
        self.p_outage = 0.01
        self.p_pause = pause
        # what the checks need
        self.acked: list[tuple[str, str, Event]] = []
        self.durable: set[tuple[str, str, int]] = set()
        self.ledger: list[tuple[str, str, int, int]] = []
        self.violations: list[str] = []
        self.late_runs: list[str] = []
        self.pending = list(STARTS)
        self.signalled = False
        self.cancelled = False
        self._uuids = random.Random(seed ^ 0x5EED)

    # -- determinism

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        """Seeded run ids and the virtual lease clock, while the sim runs."""
        fake_uuid = types.SimpleNamespace(
            uuid4=lambda: uuid.UUID(int=self._uuids.getrandbits(128), version=4)
        )
        saved = (engine._worker.uuid, engine._client.uuid, stores.memory.time)
        engine._worker.uuid = fake_uuid  # type: ignore[attr-defined]
        engine._client.uuid = fake_uuid  # type: ignore[attr-defined]
        stores.memory.time = self.mono  # type: ignore[attr-defined]
        _CURRENT.append(self)
        try:
            yield
        finally:
            _CURRENT.pop()
            engine._worker.uuid, engine._client.uuid, stores.memory.time = saved  # type: ignore[attr-defined]

    def note(self, what: str) -> None:
        """A scheduler decision or fault, into the trace."""
        self.decisions += 1
        kind = what.split(" ", 1)[0]
        self.faults_seen[kind] = self.faults_seen.get(kind, 0) + 1
        self._hash.update(what.encode() + b"\n")

    @property
    def trace(self) -> str:
        return self._hash.hexdigest()

    # -- what the store saw

    def landed(
        self, batches: Sequence[AppendBatch], results: list[AppendResult], *, acked: bool
    ) -> None:
        for b, r in zip(batches, results, strict=True):
            if not r.ok:
                kind = f"refused-{type(r.error).__name__}"
                self.faults_seen[kind] = self.faults_seen.get(kind, 0) + 1
                self._hash.update(f"{kind} {b.workflow_id}\n".encode())
                continue
            for i, ev in enumerate(b.events):
                stamped = with_index(ev, r.index + i)
                self._hash.update(msgspec.json.encode(stamped) + b"\n")
                if acked:
                    self.acked.append((b.workflow_id, b.run_id, stamped))
                if isinstance(ev, ActivityCompleted | ActivityFailed):
                    self.durable.add((b.workflow_id, b.run_id, ev.seq))

    def ran(self, wid: str, rid: str, seq: int, attempt: int) -> None:
        self.ledger.append((wid, rid, seq, attempt))
        self._hash.update(f"ran {wid} {seq} {attempt}\n".encode())
        if (wid, rid, seq) in self.durable:
            late = f"{wid} seq {seq} attempt {attempt} ran after its completion was durable"
            if self.p_pause:  # a paused owner past its lease cannot know (no fencing): counted
                self.late_runs.append(late)
            else:
                self.violations.append(late)

    # -- the scheduler

    def _worker(self, i: int) -> Worker:
        w = self.workers[i]
        if w is None:
            self.lives[i] += 1
            w = self.workers[i] = Worker(
                FaultStore(self, i),  # type: ignore[arg-type]
                workflows=WORKFLOWS,
                activities=ACTIVITIES,
                clock=self.clock,
                identity=f"w{i}.{self.lives[i]}",
                lease=LEASE,
            )
        return w

    def step_worker(self, i: int) -> None:
        w = self._worker(i)
        self.depth += 1
        try:
            w._round(inline=True)
        except Crash:
            self.workers[i] = None  # killed: its cache is gone, its claims wait for the lease
        except StoreError:
            if not self.ride_out:  # Worker.run() raises it: the process exits, is restarted
                self.workers[i] = None
                with self.quiet():
                    w._release_all()
        finally:
            self.depth -= 1

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        saved, self.faults = self.faults, False
        try:
            yield
        finally:
            self.faults = saved

    def client_action(self) -> None:
        rng = self.rng
        choices = []
        if self.pending:
            choices.append("start")
        if not self.signalled and all(wid != "ts" for wid, _, _ in self.pending):
            choices.append("signal")
        if not self.cancelled and all(wid != "waiter" for wid, _, _ in self.pending):
            choices.append("cancel")
        if not choices:
            return
        what = rng.choice(choices)
        if what == "start":
            wid, fn, args = self.pending.pop(rng.randrange(len(self.pending)))
            self.note(f"start {wid}")
            self.client.start(fn, *args, id=wid)
            self.acked.append((wid, self.store.describe(wid).run_id, self.store.read(wid)[0]))
        elif what == "signal":
            self.signalled = True
            self.note("signal ts")
            self._external("ts", lambda: self.client.signal("ts", "go", "yes"))
        else:
            self.cancelled = True
            self.note("cancel waiter")
            self._external("waiter", lambda: self.client.cancel("waiter"))

    def _external(self, wid: str, send: Callable[[], None]) -> None:
        rid = self.store.describe(wid).run_id
        before = len(self.store.read(wid, rid))
        send()
        for ev in self.store.read(wid, rid, after=before):
            self._hash.update(msgspec.json.encode(ev) + b"\n")
            self.acked.append((wid, rid, ev))

    def advance(self) -> None:
        seconds = self.rng.choice((0.5, 1, 2, 5, 60, 700))
        self.note(f"clock {seconds}")
        self.clock.advance(seconds)

    def action(self, exclude: int | None = None) -> None:
        """One scheduler decision."""
        rng = self.rng
        r = rng.random()
        n = len(self.workers)
        if r < 0.6:
            i = rng.randrange(n)
            if i == exclude:
                return
            self.note(f"step {i}")
            self.step_worker(i)
        elif r < 0.72:
            self.client_action()
        elif r < 0.92:
            self.advance()
        elif exclude is None:  # leases pass only between steps: live workers hold nothing then
            self.note("lease")
            self.mono.now += LEASE + 1

    def interleave(self, exclude: int) -> None:
        """Slow I/O: others act while a call of worker ``exclude`` is on its way."""
        if self.depth > 1:
            return
        for _ in range(self.rng.randint(1, 3)):
            self.action(exclude)

    # -- checks

    def check(self) -> None:
        assert not self.violations, self.violations
        store = self.store
        want = reference()
        for info in store.runs():
            history = store.read(info.id, info.run_id)
            for pos, ev in enumerate(history):
                assert ev.index == pos, f"{info.id}: event {pos} has index {ev.index}"
            closing = [ev for ev in history if type(ev) in CLOSING_EVENTS]
            assert len(closing) <= 1, f"{info.id}: closed twice: {closing}"
            for kind in (ActivityScheduled, ActivityCompleted):
                seqs = [ev.seq for ev in history if isinstance(ev, kind)]  # type: ignore[attr-defined]
                assert len(seqs) == len(set(seqs)), f"{info.id}: {kind.__name__} twice: {seqs}"
        for wid in {i.id for i in store.runs()}:
            got = _outcome(store, wid)
            if got[0][-1] is not Status.RUNNING:
                assert got == want[wid], f"{wid}: {got} != crash-free {want[wid]}"
        for wid, rid, ev in self.acked:
            history = store.read(wid, rid)
            assert len(history) > ev.index and history[ev.index] == ev, f"{wid}: lost {ev}"

    def run(self) -> str:
        """The whole simulation; returns the trace hash."""
        with self.patched():
            for _ in range(self.steps):
                self.action()
                self.check()
            self.finish()
        return self.trace

    def finish(self) -> None:
        """Faults off, the lease clock past every dead owner, run everything to its end."""
        self.faults = False
        while self.pending or not self.signalled or not self.cancelled:
            self.client_action()
        self.mono.now += LEASE + 1
        for _ in range(200):
            for i in range(len(self.workers)):
                self.step_worker(i)
                self.check()
            if not self.store.list(status=Status.RUNNING, page_size=1).counts.get(Status.RUNNING):
                break
            nxt = self.store.claim("probe", now=self.clock.now(), limit=0).next_due
            if nxt is not None and nxt > self.clock.now():
                self.clock.set(nxt)
        want = reference()
        got = {wid: _outcome(self.store, wid) for wid in sorted({i.id for i in self.store.runs()})}
        assert got == want, f"final outcome {got} != crash-free {want}"
        for info in self.store.runs():
            assert_deterministic(BY_NAME[info.type], self.store.read(info.id, info.run_id))
