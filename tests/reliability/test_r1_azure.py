"""R1 on Azurite: worker processes sharing an ``AzureBlobStore`` are SIGKILLed at seeded instants.

``tests/crashkit.py`` drives it: ``ledger_chain`` workflows (sequential
``ledger_step`` activities, each appending ``index step attempt`` to an
``fsync``'d ledger) run on 3 worker processes (2 activities at a time each)
opened on an ``azure://`` URL with 15 s partition leases (the shortest the store
takes: Azure's leases are 15-60 s) and 8 partitions.  The parent SIGKILLs a
worker at a seeded random moment of its life (3 to 8 s after its spawn, imports
included) and respawns it; a killed worker's partitions stay leased until the
lease runs out, then the others (or its successor) take them over.  While it
runs, the parent reads the open workflows' histories every 0.5 s and notes,
per activity, the ledger's length when its completion was first seen durable.

Must hold (``crashkit.check``): every workflow completes exactly once (one run,
one ``WorkflowCompleted``) with the result of a crash-free run; every activity
is scheduled and completed exactly once in its history and ran at least once
(the ledger); no attempt is in the ledger after its completion was seen durable;
every history replays (``assert_deterministic``); every kill landed while
workflows were running.

Tiers: default 3 kills (seed 1100, 30 workflows of 8 activities); ci 20 kills
(seed 1101, 100 workflows); soak ``TPP_KILLS`` kills (200).  The seed fixes the
kill schedule (the OS still decides what each kill interrupts); replay one with
``TPP_CRASH_SEED=<seed>``.
"""

from __future__ import annotations

import os
import pathlib
import urllib.parse
from typing import Final

import pytest

pytest.importorskip("azure.storage.blob", reason="the azure extra is not installed")

from tests import crashkit
from tests.azurite import Azurite

LEASE: Final = 15  # the store's (and Azure's) shortest partition lease
PARTITIONS: Final = 8


def url_of(azurite: Azurite, container: str) -> str:
    conn = urllib.parse.quote(azurite.connection_string, safe="")
    return (
        f"azure://{container}?connection_string={conn}&partitions={PARTITIONS}"
        f"&lease_seconds={LEASE}&poll_interval=0.25"
    )


def kill(
    azurite: Azurite, directory: pathlib.Path, *, kills: int, seed: int, workflows: int
) -> crashkit.Report:
    seed = int(os.environ.get("TPP_CRASH_SEED") or seed)
    url = url_of(azurite, azurite.new_container("r1"))
    try:
        report = crashkit.run(
            url,
            directory,
            seed=seed,
            workflows=workflows,
            steps=8,
            workers=3,
            concurrency=2,
            kills=kills,
            life=(3.0, 8.0),
            pause=0.1,
            timeout=120 + kills * 20,
            ledger=True,
            replay=True,
            worker_poll=0.05,
        )
    except AssertionError as exc:
        raise AssertionError(
            f"crash-kill on Azurite failed; replay with TPP_CRASH_SEED={seed}\n{exc}"
        ) from None
    print(report)
    assert report.kills >= kills, report
    assert report.durable_seen == report.activities, report  # the watch saw every completion
    return report


def test_crash_kill_on_azure(azurite: Azurite, tmp_path: pathlib.Path) -> None:
    report = kill(azurite, tmp_path, kills=3, seed=1100, workflows=30)
    assert report.kills_while_busy == 3, report


@pytest.mark.ci
def test_crash_kill_on_azure_20(azurite: Azurite, tmp_path: pathlib.Path) -> None:
    report = kill(azurite, tmp_path, kills=20, seed=1101, workflows=100)
    assert report.kills_while_busy >= 15, report


@pytest.mark.soak
def test_crash_kill_on_azure_soak(azurite: Azurite, tmp_path: pathlib.Path) -> None:
    kills = int(os.environ.get("TPP_KILLS") or 200)
    kill(azurite, tmp_path, kills=kills, seed=1102, workflows=max(100, kills * 5))


def test_the_ledger_check_bites(tmp_path: pathlib.Path) -> None:
    """An attempt logged after its completion was seen durable fails ``check`` (no Azure)."""
    from engine import Client, Worker
    from stores import MemoryStore

    log = tmp_path / "ledger"
    with MemoryStore() as store:
        wid = Client(store).start(crashkit.ledger_chain, 0, 3, str(log), 0.0, id="crash-0")
        durable = crashkit._Durable([wid], log)
        durable.observe(store)
        assert durable.at == {}
        Worker(store, workflows=crashkit.WORKFLOWS, activities=crashkit.ACTIVITIES).run_until_idle()
        durable.observe(store)
        assert durable.at == {(0, 0): 3, (0, 1): 3, (0, 2): 3} and not durable.open
        results = crashkit.expected(1, 3)
        args = (store, [wid], log, 3, results)
        crashkit.check(*args, durable_at=durable.at, replay=crashkit.ledger_chain)
        with open(log, "a") as f:
            f.write("0 1 2\n")  # step 1 ran again after its completion was durable
        with pytest.raises(AssertionError, match=r"after their completion was durable.*0 1 2"):
            crashkit.check(*args, durable_at=durable.at)
