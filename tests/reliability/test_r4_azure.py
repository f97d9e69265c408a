"""R4 on Azurite: racing conditional appends and competing workers on ``AzureBlobStore``.

**Racing rounds.**  One run; each round 2 to 5 writers (threads, each with its
own store handle, as separate processes would have) read the history through
their handle, as a decider does, and, released together by a barrier, append
the next decision to it, all with the same expected length (the history's
length before the round): ``WorkflowTaskCompleted(seen=n)`` and
a marker, both carrying the writer's batch id.  In a third of the rounds a
signaller appends an external event at the same moment, and a quarter of the
batches are larger than the handles' ``max_block`` (256 bytes), so they are
written as several blocks that other writers can cut in between.  Must hold:

* per round exactly one writer succeeds, every other gets ``ConflictError``,
  and the signal lands;
* the final history (read by a fresh handle) is indices 0..n-1: the start, then
  per round the winner's two events side by side (no interleaving), its
  ``seen`` no less than the round's expected length, the round's signal once;
  no loser's batch id anywhere, nothing twice, no gap;
* the append blob's raw bytes parse into whole frames, and the complete batches
  in it, in order, are exactly the history (a batch torn by a racing writer may
  stand in the bytes, as the store's design allows, but is never read; they are
  counted and printed).

The seed (``random.Random``) fixes each round's writers, signal and batch sizes;
which writer wins is the race's.

**Competing workers.**  3 workers (threads, each with its own handle) run the
same 100 ``crashkit.crash_chain`` workflows (3 activities each) to the end:
each completes exactly once with the crash-free result, and every activity is
scheduled and completed exactly once (``crashkit.check``).

Tiers: default 100 rounds (seed 4100) and 100 workflows; ci 1,000 rounds and
500 workflows; soak ``TPP_ROUNDS`` (10,000) and ``TPP_WORKFLOWS`` (5,000).
"""

from __future__ import annotations

import dataclasses
import pathlib
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import msgspec
import pytest

pytest.importorskip("azure.storage.blob", reason="the azure extra is not installed")

from engine import Client, ConflictError, Status, Worker
from engine.events import (
    Event,
    Json,
    MarkerRecorded,
    SignalReceived,
    WorkflowStarted,
    WorkflowTaskCompleted,
)
from stores import _azure_format as fmt
from stores.azure import AzureBlobStore
from tests import crashkit
from tests.azurite import Azurite
from tests.reliability._seeds import count, replaying, seeds
from tests.store_conformance import T0, append_ok, batch, signal, started, wtc

MAX_WRITERS: Final = 5
OPTIONS: Final[dict[str, Any]] = {"partitions": 2, "lease_seconds": 15, "max_block": 256}


def _bare(ev: Event) -> Event:
    return msgspec.structs.replace(ev, index=-1)


@dataclasses.dataclass
class Rounds:
    """What a racing run did."""

    seed: int
    rounds: int = 0
    appends: int = 0
    conflicts: int = 0
    signals: int = 0
    large: int = 0
    torn: int = 0  # frames of torn batches left in the blob (never read)


def race_rounds(azurite: Azurite, seed: int, rounds: int) -> Rounds:
    rng = random.Random(seed)
    report = Rounds(seed)
    container = azurite.new_container("r4")
    handles = [
        AzureBlobStore(azurite.connection_string, container, **OPTIONS)
        for _ in range(MAX_WRITERS + 1)
    ]
    s = started("race", run_id=uuid.UUID(int=rng.getrandbits(128)).hex)
    winners: list[str] = []
    sent: list[str] = []
    try:
        handles[0].create(s)
        expected = 1
        with ThreadPoolExecutor(MAX_WRITERS + 1) as pool:
            for r in range(rounds):
                writers = rng.randint(2, MAX_WRITERS)
                with_signal = rng.random() < 1 / 3
                jobs: list[tuple[AzureBlobStore, Any]] = []
                for w in range(writers):
                    bid = f"r{r}-w{w}"
                    large = rng.random() < 1 / 4
                    report.large += large
                    text = '"' + ("x" * rng.randrange(300, 1200) if large else bid) + '"'
                    mark = MarkerRecorded(time=T0, name="m", change_id=bid, value=Json(text=text))
                    jobs.append((handles[w], batch(s, wtc(expected, bid), mark, expected=expected)))
                if with_signal:
                    sent.append(f"s{r}")
                    jobs.append((handles[MAX_WRITERS], batch(s, signal(request_id=f"s{r}"))))
                barrier = threading.Barrier(len(jobs))

                def go(job: tuple[AzureBlobStore, Any], barrier: Any = barrier) -> Any:
                    if job[1].expected_length is not None:  # a decider reads, then decides
                        assert len(job[0].read("race")) == job[1].expected_length
                    barrier.wait(timeout=60)
                    [result] = job[0].append([job[1]])
                    return result

                results = list(pool.map(go, jobs))
                decisions = results[:writers]
                won = [i for i, x in enumerate(decisions) if x.ok]
                lost = [x.error for x in decisions if not x.ok]
                where = f"round {r} ({writers} writers{', a signal' if with_signal else ''})"
                assert len(won) == 1, f"{where}: winners {won}: {decisions}"
                assert all(isinstance(e, ConflictError) for e in lost), f"{where}: {lost}"
                if with_signal:
                    assert results[-1].ok, f"{where}: the signal: {results[-1].error}"
                winners.append(f"r{r}-w{won[0]}")
                report.rounds += 1
                report.appends += len(jobs)
                report.conflicts += len(lost)
                report.signals += with_signal
                expected = len(handles[MAX_WRITERS].read("race"))
        with AzureBlobStore(azurite.connection_string, container, **OPTIONS) as fresh:
            history = fresh.read("race")
            report.torn = check_history(fresh, s, history, winners, sent)
    finally:
        for h in handles:
            h.close()
    return report


def check_history(
    store: AzureBlobStore,
    s: WorkflowStarted,
    history: list[Event],
    winners: list[str],
    sent: list[str],
) -> int:
    """The history's shape (see the module docstring); returns the torn frames in the blob."""
    assert [ev.index for ev in history] == list(range(len(history)))
    assert _bare(history[0]) == _bare(s)
    decisions = [ev for ev in history if isinstance(ev, WorkflowTaskCompleted)]
    assert [d.batch_id for d in decisions] == winners
    seen = 0
    for d in decisions:
        mark = history[d.index + 1]
        assert isinstance(mark, MarkerRecorded) and mark.change_id == d.batch_id, d
        assert seen <= d.seen <= d.index, d  # decided on a prefix of what stood before
        seen = d.seen
    signals = [ev.request_id for ev in history if isinstance(ev, SignalReceived)]
    assert signals == sent
    assert len(history) == 1 + 2 * len(winners) + len(sent)
    # the raw bytes: whole frames; the complete batches are exactly the history
    names = store._names
    raw: list[Event] = []
    torn = 0
    segments = sorted(
        p.name for p in store._blobs.list(names.id_dir(s.workflow_id))
    )  # segment 0, then .0001, ...
    for name in segments:
        got = store._blobs.read(name)
        assert got is not None, name
        done, resume = fmt.frames(got.data, 0, lambda name=name: name)  # type: ignore[misc]
        assert resume == len(got.data), f"{name}: an unfinished batch at byte {resume}"
        frames = list(fmt.parse_frames(got.data, 0, lambda name=name: name))  # type: ignore[misc]
        whole = {(b.start, b.end) for b in done}
        torn += sum(not any(a <= f.start < b for a, b in whole) for f in frames)
        for b in done:
            raw += fmt.decode_events(b.payload)
    expected = [_bare(ev) for ev in history]
    if raw and isinstance(raw[0], WorkflowStarted):
        assert [_bare(ev) for ev in raw] == expected
    else:  # the start lives in segment 0's metadata
        assert [_bare(ev) for ev in raw] == expected[1:]
    return torn


def test_racing_conditional_appends(azurite: Azurite) -> None:
    """100 rounds of 2-5 writers (and sometimes a signal) racing for the next decision."""
    for seed in seeds(4100, 1):
        with replaying(seed, "R4 racing appends on Azurite"):
            report = race_rounds(azurite, seed, 100)
            print(report)
            assert report.rounds == 100 and report.conflicts >= 100


@pytest.mark.ci
def test_racing_conditional_appends_ci(azurite: Azurite) -> None:
    for seed in seeds(4101, 1):
        with replaying(seed, "R4 racing appends on Azurite, ci"):
            print(race_rounds(azurite, seed, 1000))


@pytest.mark.soak
def test_racing_conditional_appends_soak(azurite: Azurite) -> None:
    for seed in seeds(4102, 1):
        with replaying(seed, "R4 racing appends on Azurite, soak"):
            print(race_rounds(azurite, seed, count(10_000, "TPP_ROUNDS")))


# --------------------------------------------------------------------------- competing workers


def compete(azurite: Azurite, directory: pathlib.Path, workflows: int, steps: int = 3) -> None:
    """3 workers, each on its own handle, race for the same ``workflows`` workflows."""
    container = azurite.new_container("r4w")
    log = directory / "attempts.log"

    def make() -> AzureBlobStore:
        return AzureBlobStore(
            azurite.connection_string, container, partitions=8, lease_seconds=15,
            poll_interval=0.1,
        )  # fmt: skip

    first = make()
    try:
        client = Client(first)
        ids = [
            client.start(crashkit.crash_chain, i, steps, str(log), 0.0, id=f"crash-{i}")
            for i in range(workflows)
        ]
        errors: list[BaseException] = []
        appends = [0, 0, 0]  # Append Block requests per worker's handle
        done = threading.Event()
        deadline = time.monotonic() + 120 + workflows

        def work(k: int) -> None:
            store = make()
            try:
                worker = Worker(
                    store,
                    workflows=crashkit.WORKFLOWS,
                    activities=crashkit.ACTIVITIES,
                    identity=f"worker-{k}",
                )
                while not done.is_set():
                    worker.run_until_idle()
                    if not store.list(page_size=1).counts.get(Status.RUNNING):
                        done.set()
                    elif time.monotonic() > deadline:
                        raise AssertionError(f"worker {k}: workflows still running")
                    time.sleep(0.02)
            except BaseException as exc:
                errors.append(exc)
                done.set()
            finally:
                appends[k] = store.requests.snapshot().get("Append Block", 0)
                store.close()

        threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        attempts, activities = crashkit.check(
            first, ids, log, steps, crashkit.expected(workflows, steps)
        )
        assert activities == workflows * steps and attempts >= activities
        print(f"{workflows} workflows; appends per worker: {appends}")
    finally:
        first.close()


def test_three_workers_compete_for_a_hundred_workflows(
    azurite: Azurite, tmp_path: pathlib.Path
) -> None:
    compete(azurite, tmp_path, 100)


@pytest.mark.ci
def test_three_workers_compete_ci(azurite: Azurite, tmp_path: pathlib.Path) -> None:
    compete(azurite, tmp_path, 500)


@pytest.mark.soak
def test_three_workers_compete_soak(azurite: Azurite, tmp_path: pathlib.Path) -> None:
    compete(azurite, tmp_path, count(5000, "TPP_WORKFLOWS"))


# --------------------------------------------------------------------------- found


# found by R4 (seed 4100, round 5, before the writers read first): a handle that had
# not read since another handle appended refused expected_length=N, N the true length,
# with a spurious ConflictError; fixed, a handle behind the decision refreshes first
def test_a_decision_on_the_true_length_lands_through_a_handle_that_is_behind(
    azurite: Azurite,
) -> None:
    """The protocol: a decision batch appends unless a decision was appended at or after N."""
    container = azurite.new_container("r4behind")
    with (
        AzureBlobStore(azurite.connection_string, container, **OPTIONS) as a,
        AzureBlobStore(azurite.connection_string, container, **OPTIONS) as b,
    ):
        s = started("behind")
        a.create(s)
        append_ok(b, batch(s, signal(request_id="from-b")))  # the run has 2 events now
        [result] = a.append([batch(s, wtc(2), expected=2)])  # decided on those 2 (read elsewhere)
        assert result.ok, result.error
        assert len(b.read("behind")) == 3
