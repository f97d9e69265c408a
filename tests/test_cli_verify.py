"""``tpp verify`` catches 10 of 10 non-deterministic variants of an example; the original passes.

Histories of ``examples.subscription`` (cancelled in the trial, cancelled in
month 3, and all 36 months) are recorded on a virtual clock in a SQLite store
and exported with ``tpp workflow show --output json``; ``tpp verify`` then
replays them with the variants of ``tests/cli_variants.py``.
"""

from __future__ import annotations

import json
import pathlib
from datetime import timedelta

import pytest

from engine import Client, VirtualClock, Worker
from examples import subscription
from stores.sqlite import SQLiteStore

from . import cli_variants
from .clikit import ROOT, as_json, ok, tpp

VARIANTS_FILE = str(ROOT / "tests" / "cli_variants.py")
ACTIVITIES = [
    subscription.onboard_to_free_trial,
    subscription.upgrade_from_trial_to_paid,
    subscription.charge_monthly_fee,
    subscription.process_cancellation,
]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """(store URL, history files): three subscriptions, recorded with the example's code."""
    root = tmp_path_factory.mktemp("verify")
    db = root / "db.sqlite"
    day = timedelta(days=1)
    with SQLiteStore(db, durability="none") as store:
        clock = VirtualClock()
        client = Client(store, clock=clock)
        worker = Worker(store, [subscription.subscription], ACTIVITIES, clock=clock)
        for wid in ("trial-cancel", "month-3-cancel", "full-term"):
            client.start(subscription.subscription, f"cust-{wid}", id=wid)
        worker.run_until_idle()
        client.signal("trial-cancel", "cancel")
        worker.run_until_idle()
        clock.advance(61 * day)  # the trial ends: upgrade and the first charge
        worker.run_until_idle()
        for _ in range(2):
            clock.advance(30 * day)
            worker.run_until_idle()
        client.signal("month-3-cancel", "cancel")
        worker.run_until_idle(skip_time=True)  # full-term runs to its end
        for wid in ("trial-cancel", "month-3-cancel", "full-term"):
            assert client.describe(wid).status.value == "COMPLETED", wid
        assert client.result("month-3-cancel")["months_charged"] == 3
    url = f"sqlite:{db}"
    files = []
    for wid in ("trial-cancel", "month-3-cancel", "full-term"):
        text = ok(tpp("--store", url, "workflow", "show", "-w", wid, "-o", "json")).stdout
        path = root / f"{wid}.json"
        path.write_text(text)
        files.append(str(path))
    return url, files


def test_the_unchanged_workflow_passes(recorded: tuple[str, list[str]]) -> None:
    url, files = recorded
    for app in ("examples.subscription", f"{VARIANTS_FILE}:base"):
        result = ok(tpp("verify", "--app", app, *files))
        lines = result.stdout.splitlines()
        assert [line.split()[0] for line in lines[:3]] == ["OK", "OK", "OK"]
        assert lines[-1] == "3 histories: 3 ok"
    assert ok(tpp("verify", "--app", "examples.subscription", "--strict", *files))
    # a store URL as the source: every run in it
    data = as_json(tpp("verify", "--app", "examples.subscription", url, "-o", "json"))
    assert data["counts"] == {"ok": 3, "diverged": 0, "error": 0, "skipped": 0}
    # no source: the store in use
    assert ok(tpp("--store", url, "verify", "--app", "examples.subscription"))


@pytest.mark.parametrize("name", sorted(cli_variants.VARIANTS))
def test_every_variant_is_caught(recorded: tuple[str, list[str]], name: str) -> None:
    _, files = recorded
    result = tpp("verify", "--app", f"{VARIANTS_FILE}:{name}", *files)
    assert result.exit_code == 1, result.stdout
    assert "DIVERGED" in result.stdout
    assert "is not deterministic" in result.stdout
    data = json.loads(
        tpp("verify", "--app", f"{VARIANTS_FILE}:{name}", *files, "-o", "json").stdout
    )
    diverged = [r for r in data["results"] if r["status"] == "diverged"]
    assert diverged, data
    first = diverged[0]["detail"]
    assert "sequence number" in first
    assert "cli_variants.py:" in first or "the end of the workflow" in first or "returned" in first


def test_ten_of_ten(recorded: tuple[str, list[str]]) -> None:
    _, files = recorded
    assert len(cli_variants.VARIANTS) == 10
    caught = [
        name
        for name in cli_variants.VARIANTS
        if tpp("verify", "--app", f"{VARIANTS_FILE}:{name}", *files).exit_code == 1
    ]
    assert len(caught) == 10


def test_a_divergence_names_seq_recorded_yielded_and_the_line(
    recorded: tuple[str, list[str]],
) -> None:
    _, files = recorded
    data = json.loads(
        tpp(
            "verify", "--app", f"{VARIANTS_FILE}:v01_swapped_activities", files[0], "-o", "json"
        ).stdout
    )
    (only,) = data["results"]
    detail = only["detail"]
    assert only["status"] == "diverged" and only["workflow_id"] == "trial-cancel"
    assert "sequence number 1" in detail
    assert "onboard_to_free_trial" in detail and "upgrade_from_trial_to_paid" in detail
    assert "cli_variants.py:" in detail


def test_unknown_types_unreadable_files_and_ignore_unknown(
    recorded: tuple[str, list[str]], tmp_path: pathlib.Path
) -> None:
    _, files = recorded
    other = tpp("verify", "--app", "examples.expense_approval", files[0])
    assert other.exit_code == 1 and "SKIPPED" in other.stdout
    assert "not in app" in other.stdout
    ok(tpp("verify", "--app", "examples.expense_approval", "--ignore-unknown", files[0]))
    junk = tmp_path / "junk.json"
    junk.write_text('{"not": "a history"}')
    bad = tpp("verify", "--app", "examples.subscription", str(junk), str(tmp_path / "none.json"))
    assert bad.exit_code == 1
    assert bad.stdout.count("ERROR") == 2 and "not a history file" in bad.stdout
    assert "no such history file" in bad.stdout
