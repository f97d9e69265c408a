"""R8: Azure faults while 200 workflows run, and the workers never restart.

Two worker processes run ``Worker(AzureBlobStore(...)).run()`` once each, talking
to Azurite through a loopback proxy that drops about 1 reply in 50 (the request
was served, the client's connection dies).  Meanwhile a seeded schedule stops
Azurite with SIGTERM and restarts it every 2-5 s, and pauses it with SIGSTOP
(then SIGCONT).  Must hold:

* every workflow completes exactly once with the fault-free result: one
  ``WorkflowCompleted``, each activity scheduled and completed once, each ran at
  least once (an activity ledger), every history replays;
* the worker processes ride every outage out: they are alive at the end and exit
  0 on SIGTERM;
* an outage surfaces as a retriable ``StoreError`` within 5 s, stopped or paused
  (the parent times a call each time).

Default tier: 10 restarts, 5 pauses, >= 20 lost replies, 200 workflows; ci: 30
restarts and 10 pauses; soak: ``TPP_RESTARTS`` (200).  Replay a schedule with
``TPP_SEED``.
"""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

pytest.importorskip("azure.storage.blob", reason="the azure extra is not installed")

from engine import Client, Status, StoreError
from stores.azure import AzureBlobStore
from tests import crashkit
from tests.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from tests.reliability._seeds import count, replaying, seeds
from tests.test_store_azure_faults import DroppingProxy

ROOT = pathlib.Path(__file__).resolve().parents[2]

# NB: when the proxy cuts a reply off, urllib3 sometimes lets go of the socket unclosed
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

WORKER = """
import sys
from engine import Worker
from stores.azure import AzureBlobStore
from tests import crashkit
with AzureBlobStore(sys.argv[1], sys.argv[2], partitions=8, lease_seconds=15,
                    poll_interval=0.25) as store:
    print("ready", flush=True)
    Worker(store, workflows=crashkit.WORKFLOWS, activities=crashkit.ACTIVITIES,
           poll_interval=0.1, max_concurrent_activities=8).run()
print("worker stopped", flush=True)
"""

WORKFLOWS, STEPS, PAUSE = 200, 4, 0.5
OUTAGE_SURFACES = 5.0


def _probe(store: AzureBlobStore) -> float | None:
    """Seconds until a call fails with ``StoreError``, or None if it succeeded."""
    began = time.monotonic()
    try:
        store.list(page_size=1)
    except StoreError:
        return time.monotonic() - began
    return None


def _stuck(store: AzureBlobStore, ids: list[str]) -> str:
    """What the workflows still open are waiting for (for a failure message)."""
    lines = []
    for wid in ids:
        info = store.describe(wid)
        if info.status is not Status.COMPLETED:
            last = [type(ev).__name__ for ev in store.read(wid)[-3:]]
            lines.append(f"{wid}: {info.status.value} blocked={info.blocked} last={last}")
    return f"{len(lines)} not completed:\n" + "\n".join(lines[:20]) + "\n"


def _completed(store: AzureBlobStore) -> int:
    try:
        return store.list(page_size=1).counts.get(Status.COMPLETED, 0)
    except StoreError:
        return -1


def _faults(
    azurite_factory: Callable[[], Azurite], tmp_path: pathlib.Path, seed: int, restarts: int,
    pauses: int,
) -> None:  # fmt: skip
    rng = random.Random(seed)
    emulator = azurite_factory()
    proxy = DroppingProxy(emulator.port, every=50, seed=seed)
    direct, container = emulator.connection_string, "r8-faults"
    proxied = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{proxy.port}/{ACCOUNT};"
    )
    log, out = tmp_path / "attempts.log", tmp_path / "workers.out"
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    schedule = ["restart"] * restarts + ["pause"] * pauses
    rng.shuffle(schedule)
    surfaced: list[tuple[str, float]] = []
    procs: list[subprocess.Popen[bytes]] = []
    ids = [f"crash-{i}" for i in range(WORKFLOWS)]
    chunk = -(-WORKFLOWS // len(schedule))  # started before each fault: every fault hits work
    with (
        AzureBlobStore(direct, container, partitions=8, lease_seconds=15) as store,
        open(out, "ab") as output,
    ):
        client = Client(store)

        def start(upto: int) -> None:
            for i in range(upto - chunk, min(upto, WORKFLOWS)):
                client.start(crashkit.crash_chain, i, STEPS, str(log), PAUSE, id=ids[i])

        procs = [
            subprocess.Popen([sys.executable, "-c", WORKER, proxied, container], cwd=ROOT,
                             env=env, stdout=output, stderr=subprocess.STDOUT)
            for _ in range(2)
        ]  # fmt: skip
        try:
            began = time.monotonic()
            for n, fault in enumerate(schedule):
                up = time.monotonic() + rng.uniform(2.0, 5.0)
                start(chunk * (n + 1))
                time.sleep(max(0.0, up - time.monotonic()))
                if fault == "restart":
                    assert emulator.stop() == 0  # SIGTERM: Azurite saves what it acknowledged
                    took = _probe(store)
                    time.sleep(rng.uniform(0.2, 1.0))
                    emulator.start()
                else:
                    assert emulator.pid is not None
                    os.kill(emulator.pid, signal.SIGSTOP)
                    try:
                        took = _probe(store)
                        time.sleep(rng.uniform(0.5, 2.0))
                    finally:
                        os.kill(emulator.pid, signal.SIGCONT)
                assert took is not None, f"{fault} {n}: a call succeeded while Azurite was down"
                surfaced.append((fault, took))
                for proc in procs:
                    assert proc.poll() is None, crashkit._tail(out)
            # NB: from the last fault: the schedule itself takes ~7 s a fault (40 in ci)
            deadline = time.monotonic() + 240
            polls = 0
            # NB: list's status counts come from blob metadata, which a close whose metadata
            # update met an outage leaves stale for a while: describe reads the history
            while _completed(store) < WORKFLOWS and not (
                (polls := polls + 1) % 20 == 0 and _stuck(store, ids).startswith("0 ")
            ):
                assert time.monotonic() < deadline, _stuck(store, ids) + crashkit._tail(out)
                for proc in procs:
                    assert proc.poll() is None, crashkit._tail(out)
                time.sleep(0.5)
            ran = time.monotonic() - began
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                assert proc.wait(timeout=60) == 0, crashkit._tail(out)
            attempts, activities = crashkit.check(
                store, ids, log, STEPS, crashkit.expected(WORKFLOWS, STEPS),
                replay=crashkit.crash_chain,
            )  # fmt: skip
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            proxy.close()
    slowest = max(took for _, took in surfaced)
    assert slowest < OUTAGE_SURFACES, f"an outage took {slowest:.1f} s to surface: {surfaced}"
    lost = sum(proxy.dropped.values())
    assert lost >= 20, f"only {lost} replies dropped of {proxy.served}"
    text = out.read_text()
    print(
        f"\nR8 seed {seed}: {restarts} restarts, {pauses} pauses, {lost} lost replies "
        f"({dict(proxy.dropped)}) of {proxy.served} requests; {WORKFLOWS} workflows "
        f"in {ran:.0f} s, "
        f"{attempts} attempts for {activities} activities; outages surfaced in "
        f"{min(t for _, t in surfaced):.2f}-{slowest:.2f} s; workers logged "
        f"{text.count('store error')} store errors and never restarted"
    )


def test_r8_restarts_pauses_and_lost_replies(
    azurite_factory: Callable[[], Azurite], tmp_path: pathlib.Path
) -> None:
    (seed,) = seeds(8001, 1)
    with replaying(seed, "R8"):
        _faults(azurite_factory, tmp_path, seed, restarts=10, pauses=5)


@pytest.mark.ci
def test_r8_ci(azurite_factory: Callable[[], Azurite], tmp_path: pathlib.Path) -> None:
    (seed,) = seeds(8101, 1)
    with replaying(seed, "R8 ci"):
        _faults(azurite_factory, tmp_path, seed, restarts=30, pauses=10)


@pytest.mark.soak
def test_r8_soak(azurite_factory: Callable[[], Azurite], tmp_path: pathlib.Path) -> None:
    (seed,) = seeds(8201, 1)
    with replaying(seed, "R8 soak"):
        n = count(200, "TPP_RESTARTS")
        _faults(azurite_factory, tmp_path, seed, restarts=n, pauses=n // 4)
