"""R1 random mode, ci and soak tiers: ``tests/crashkit.py`` SIGKILLs worker processes.

The default tier runs 50 kills per local store (``tests/test_store_file.py``,
``tests/test_store_sqlite.py``: ``test_crash_kill``) and ci adds 150-kill runs
there; this module raises ci to 300 kills per local store, and soak to
``$TPP_KILLS`` (default 10,000).  The seed is ``$TPP_CRASH_SEED`` or fixed
here; a failure names it.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from tests import crashkit

URLS = {
    "file": "file:{d}/store?durability=fsync",
    "sqlite": "sqlite:{d}/tpp.db?durability=fsync",
}


def _kill(
    url: str, directory: pathlib.Path, kills: int, seed: int, workflows: int | None = None
) -> crashkit.Report:
    seed = int(os.environ.get("TPP_CRASH_SEED") or seed)
    try:
        report = crashkit.run(
            url.format(d=directory),
            directory,
            seed=seed,
            workflows=workflows or max(20, kills // 5),
            steps=8,
            workers=3,
            concurrency=2,
            kills=kills,
            pause=0.1,
            timeout=60 + kills * 1.5,
        )
    except AssertionError as exc:
        raise AssertionError(
            f"crash-kill failed; replay with TPP_CRASH_SEED={seed}\n{exc}"
        ) from None
    print(report)
    assert report.kills >= kills, report
    return report


@pytest.mark.ci
@pytest.mark.parametrize("store", URLS)
def test_crash_kill_300(tmp_path: pathlib.Path, store: str) -> None:
    # NB: enough work that the kills land while workflows run, on a fast machine too
    # (60 workflows finished after 120 of 300 kills on one CI run)
    report = _kill(URLS[store], tmp_path, 300, seed=3000, workflows=150)
    assert report.kills_while_busy >= 150, report


@pytest.mark.soak
@pytest.mark.parametrize("store", URLS)
def test_crash_kill_soak(tmp_path: pathlib.Path, store: str) -> None:
    _kill(URLS[store], tmp_path, int(os.environ.get("TPP_KILLS") or 10_000), seed=3001)
