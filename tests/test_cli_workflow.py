"""``tpp workflow ...`` through the CLI runner, on a SQLite store filled on a virtual clock."""

from __future__ import annotations

import json
import pathlib

import pytest

from engine import Client, Status, VirtualClock, Worker
from engine.events import decode_history, encode_history
from engine.testing import replay
from stores.sqlite import SQLiteStore

from . import cliapp
from .clikit import APP, APP_FIXED, as_json, fill, ok, tpp


@pytest.fixture
def url(tmp_path: pathlib.Path) -> str:
    with SQLiteStore(tmp_path / "db.sqlite", durability="none") as store:
        fill(store)
    return f"sqlite:{tmp_path / 'db.sqlite'}?durability=none"


def test_start_prints_the_id_and_inputs_are_json(url: str) -> None:
    wid = ok(
        tpp(
            "--store",
            url,
            "workflow",
            "start",
            "--type",
            "checkout",
            "-w",
            "o-9",
            "-i",
            '"o-9"',
            "-i",
            "1250",
            "-t",
            "shop",
        )
    ).stdout
    assert wid == "o-9\n"
    info = as_json(tpp("--store", url, "workflow", "describe", "-w", "o-9", "-o", "json"))
    assert (info["status"], info["task_queue"], info["type"]) == ("RUNNING", "shop", "checkout")
    with SQLiteStore(url.split(":", 1)[1].split("?")[0]) as store:
        started = store.read("o-9")[0]
        assert Client(store).decode(started.input) == ["o-9", 1250]  # type: ignore[union-attr]
    new = as_json(tpp("--store", url, "workflow", "start", "--type", "greeter", "-o", "json"))
    assert set(new) == {"workflow_id", "run_id", "type"} and len(new["workflow_id"]) == 36


def test_start_id_reuse(url: str) -> None:
    again = tpp("--store", url, "workflow", "start", "--type", "greeter", "-w", "greet-dee")
    assert again.exit_code == 1 and "already running" in again.stderr
    refused = tpp(
        "--store",
        url,
        "workflow",
        "start",
        "--type",
        "greeter",
        "-w",
        "order-2",
        "--id-reuse",
        "reject_duplicate",
    )
    assert refused.exit_code == 1 and "REJECT_DUPLICATE" in refused.stderr
    ok(
        tpp(
            "--store",
            url,
            "workflow",
            "start",
            "--type",
            "greeter",
            "-w",
            "greet-dee",
            "--id-reuse",
            "TERMINATE_IF_RUNNING",
            "-i",
            '"dee"',
        )
    )


def test_show_one_line_per_event_and_json_is_the_history_file(
    url: str, tmp_path: pathlib.Path
) -> None:
    lines = ok(tpp("--store", url, "workflow", "show", "-w", "order-1")).stdout.splitlines()
    kinds = [line.split()[2] for line in lines]
    assert kinds[0] == "WorkflowStarted" and kinds[-1] == "WorkflowFailed"
    assert [int(line.split()[0]) for line in lines] == list(range(len(lines)))
    assert "ActivityError: activity 'charge' failed" in lines[-1]
    assert any("activity_type=charge" in line and 'args=["o-1",999]' in line for line in lines)
    detailed = ok(tpp("--store", url, "workflow", "show", "-w", "order-1", "--detailed")).stdout
    assert "args_digest=" in detailed and "batch_id=" in detailed
    assert "caused by tests.cliapp.CardDeclined: card for o-1 declined (999 cents)" in detailed
    exported = ok(tpp("--store", url, "workflow", "show", "-w", "order-1", "-o", "json")).stdout
    with SQLiteStore(url.split(":", 1)[1].split("?")[0]) as store:
        history = store.read("order-1")
        assert exported.encode() == encode_history(history) + b"\n"
    path = tmp_path / "order-1.json"
    path.write_text(exported)
    assert decode_history(path.read_bytes()) == history
    assert replay(cliapp.checkout, path) == []  # the file engine.testing.replay reads


def test_show_a_run_by_id(url: str) -> None:
    runs = as_json(tpp("--store", url, "workflow", "list", "-o", "json"))["workflows"]
    rid = next(w["run_id"] for w in runs if w["id"] == "order-2")
    lines = ok(tpp("--store", url, "workflow", "show", "-w", "order-2", "-r", rid)).stdout
    assert "WorkflowCompleted" in lines
    bad = tpp("--store", url, "workflow", "show", "-w", "order-2", "-r", "nope")
    assert bad.exit_code == 1 and "has no run 'nope'" in bad.stderr


def test_list_filters_limits_and_counts(url: str) -> None:
    table = ok(tpp("--store", url, "workflow", "list")).stdout
    assert table.splitlines()[0].split() == [
        "WORKFLOW",
        "ID",
        "RUN",
        "ID",
        "TYPE",
        "STATUS",
        "TASK",
        "QUEUE",
        "START",
        "CLOSE",
    ]
    assert "6 shown" in table and "1 running" in table and "1 failed" in table
    running = as_json(tpp("--store", url, "workflow", "list", "--status", "running", "-o", "json"))
    assert [w["id"] for w in running["workflows"]] == ["greet-dee"]
    assert running["total"] == 6  # counts cover every status
    greeters = as_json(tpp("--store", url, "workflow", "list", "--type", "greeter", "-o", "json"))
    assert {w["id"] for w in greeters["workflows"]} == {
        f"greet-{n}" for n in "ann bo cy dee".split()
    }
    two = as_json(tpp("--store", url, "workflow", "list", "--limit", "2", "-o", "json"))
    assert len(two["workflows"]) == 2
    # the virtual clock of the fill started in 2026-01-01: nothing since an hour ago
    recent = as_json(tpp("--store", url, "workflow", "list", "--since", "1h", "-o", "json"))
    assert recent["workflows"] == [] and recent["counts"] == {}
    old = as_json(
        tpp(
            "--store",
            url,
            "workflow",
            "list",
            "--since",
            "2025-12-31",
            "--until",
            "2026-01-01T00:00:01Z",
            "-o",
            "json",
        )
    )
    assert [w["id"] for w in old["workflows"]] == ["order-1"]


def test_describe_shows_pending_work_and_links(url: str, tmp_path: pathlib.Path) -> None:
    text = ok(tpp("--store", url, "workflow", "describe", "-w", "greet-dee")).stdout
    assert "RUNNING" in text and "Pending timers" in text and "1h" in text
    data = as_json(tpp("--store", url, "workflow", "describe", "-w", "order-1", "-o", "json"))
    assert data["status"] == "FAILED"
    assert "CardDeclined" in data["pending"]["last_failure"]
    # a run waiting on a retry shows its activity, attempts and next retry
    clock = VirtualClock()
    with SQLiteStore(tmp_path / "retry.db") as store:
        Client(store, clock=clock).start(cliapp.checkout, "o-5", 5, id="retrying")
        flaky = Worker(store, [cliapp.checkout], [cliapp.reserve, _flaky_charge], clock=clock)
        flaky.run_until_idle()
    text = ok(
        tpp("--store", f"sqlite:{tmp_path / 'retry.db'}", "workflow", "describe", "-w", "retrying")
    ).stdout
    assert "Pending activities" in text and "ConnectionError: try again" in text


from engine import activity  # noqa: E402


@activity(name="charge")
def _flaky_charge(order: str, cents: int) -> str:
    raise ConnectionError("try again")


def test_signal_query_result(url: str) -> None:
    assert (
        as_json(tpp("--store", url, "workflow", "query", "-w", "greet-dee", "--name", "waiting"))
        is True
    )
    missing = tpp("--store", url, "workflow", "query", "-w", "greet-dee", "--name", "nope")
    assert missing.exit_code == 1 and "published no query 'nope'" in missing.stderr
    running = tpp("--store", url, "workflow", "result", "-w", "greet-dee")
    assert running.exit_code == 3 and "still running" in running.stderr
    timed_out = tpp(
        "--store", url, "workflow", "result", "-w", "greet-dee", "--wait", "--timeout", "0.05"
    )
    assert timed_out.exit_code == 3 and "did not finish" in timed_out.stderr
    sent = tpp(
        "--store", url, "workflow", "signal", "-w", "greet-dee", "-n", "greeting", "-i", '"howdy"'
    )
    assert ok(sent).stderr.startswith("signal 'greeting' sent to greet-dee")
    two = tpp(
        "--store", url, "workflow", "signal", "-w", "greet-dee", "-n", "x", "-i", "1", "-i", "2"
    )
    assert two.exit_code == 2 and "one payload" in two.stderr
    ok(tpp("--store", url, "worker", "--app", APP_FIXED, "--until-idle"))
    assert as_json(tpp("--store", url, "workflow", "result", "-w", "greet-dee")) == "howdy, dee"
    full = as_json(tpp("--store", url, "workflow", "result", "-w", "greet-dee", "-o", "json"))
    assert full["status"] == "COMPLETED" and full["result"] == "howdy, dee"
    closed = tpp("--store", url, "workflow", "signal", "-w", "greet-dee", "-n", "greeting")
    assert closed.exit_code == 1 and "takes no more events" in closed.stderr


def test_result_of_failed_terminated_and_cancelled_runs(url: str) -> None:
    failed = tpp("--store", url, "workflow", "result", "-w", "order-1")
    assert failed.exit_code == 1 and "CardDeclined" in failed.stderr
    data = json.loads(
        tpp("--store", url, "workflow", "result", "-w", "order-1", "-o", "json").stdout
    )
    assert data["status"] == "FAILED" and "CardDeclined" in data["cause"]
    terminated = tpp("--store", url, "workflow", "result", "-w", "greet-bo")
    assert terminated.exit_code == 1 and "terminated: not needed" in terminated.stderr
    cancelled = tpp("--store", url, "workflow", "result", "-w", "greet-cy")
    assert cancelled.exit_code == 1 and "cancelled" in cancelled.stderr


def test_cancel_and_terminate(url: str) -> None:
    for name in ("x1", "x2"):
        ok(tpp("--store", url, "workflow", "start", "--type", "greeter", "-w", name, "-i", '"x"'))
    ok(tpp("--store", url, "workflow", "cancel", "-w", "x1", "--reason", "because"))
    out = as_json(tpp("--store", url, "workflow", "terminate", "-w", "x2", "-o", "json"))
    assert out == {"workflow_id": "x2", "terminated": True, "reason": "terminated with tpp"}
    ok(tpp("--store", url, "worker", "--app", APP, "--until-idle"))
    statuses = {
        w["id"]: w["status"]
        for w in as_json(tpp("--store", url, "workflow", "list", "-o", "json"))["workflows"]
    }
    assert statuses["x1"] == "CANCELLED" and statuses["x2"] == "TERMINATED"
    again = tpp("--store", url, "workflow", "terminate", "-w", "x2")
    assert again.exit_code == 1 and "terminated; it takes no more events" in again.stderr


# ---------------------------------------------------------------------- reset


def _boundaries(url: str, wid: str) -> list[int]:
    lines = ok(tpp("--store", url, "workflow", "show", "-w", wid)).stdout.splitlines()
    return [int(line.split()[0]) for line in lines if line.split()[2] == "WorkflowTaskCompleted"]


def test_reset_a_failed_activity_and_fixed_code_completes_it(url: str) -> None:
    """The end-to-end repair: order-1 failed on a declined card; reset to the decision that
    scheduled the charge; a worker with the fixed charge completes the new run."""
    events = as_json(tpp("--store", url, "workflow", "show", "-w", "order-1", "-o", "json"))
    charge_at = next(
        i
        for i, ev in enumerate(events)
        if ev["kind"] == "ActivityScheduled" and ev["activity_type"] == "charge"
    )
    decision = max(b for b in _boundaries(url, "order-1") if b < charge_at)
    old_run = events[0]["run_id"]
    out = as_json(
        tpp(
            "--store",
            url,
            "workflow",
            "reset",
            "-w",
            "order-1",
            "--to-event",
            str(decision),
            "--reason",
            "card processor fixed",
            "-o",
            "json",
        )
    )
    new_run = out["run_id"]
    assert new_run != old_run and out["reset_to_event"] == decision
    info = as_json(tpp("--store", url, "workflow", "describe", "-w", "order-1", "-o", "json"))
    assert info["run_id"] == new_run and info["status"] == "RUNNING"
    assert info["reset_from"] == {
        "workflow_id": "order-1",
        "run_id": old_run,
        "event": decision,
        "reason": "card processor fixed",
    }
    kept = as_json(tpp("--store", url, "workflow", "show", "-w", "order-1", "-o", "json"))
    assert len(kept) == decision
    for a, b in zip(kept[1:], events[1:decision], strict=True):
        assert a == b  # the prefix is kept as it was: indexes, times, payloads
    ok(tpp("--store", url, "worker", "--app", APP_FIXED, "--until-idle"))
    result = as_json(tpp("--store", url, "workflow", "result", "-w", "order-1"))
    assert result == {"slot": "slot-for-o-1", "receipt": "charged 999 for o-1"}
    # reserve ran once, in the old run: the new run replayed it
    final = as_json(tpp("--store", url, "workflow", "show", "-w", "order-1", "-o", "json"))
    assert sum(1 for ev in final if ev.get("activity_type") == "reserve") == 1
    old = as_json(
        tpp("--store", url, "workflow", "describe", "-w", "order-1", "-r", old_run, "-o", "json")
    )
    assert old["status"] == "FAILED"  # the failed run stays as it was


def test_reset_a_running_run_terminates_it(url: str) -> None:
    first = _boundaries(url, "greet-dee")[0]
    new_run = ok(tpp("--store", url, "workflow", "reset", "-w", "greet-dee", "--to", "first"))
    new_run_id = new_run.stdout.strip()
    runs = as_json(tpp("--store", url, "workflow", "list", "--type", "greeter", "-o", "json"))
    dee = [w for w in runs["workflows"] if w["id"] == "greet-dee"]
    assert {w["status"] for w in dee} == {"TERMINATED", "RUNNING"}
    old = next(w for w in dee if w["status"] == "TERMINATED")
    lines = ok(tpp("--store", url, "workflow", "show", "-w", "greet-dee", "-r", old["run_id"]))
    assert f"reset to event {first}" in lines.stdout and new_run_id in lines.stdout
    assert (
        len(as_json(tpp("--store", url, "workflow", "show", "-w", "greet-dee", "-o", "json"))) == 1
    )


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--to-event", "2"], "is a ActivityScheduled, not a WorkflowTaskCompleted", 1),
        (["--to-event", "0"], "the next after it is 1", 1),
        (["--to-event", "99"], "event 99 does not exist", 1),
        ([], "exactly one of --to-event", 2),
        (["--to-event", "1", "--to", "last"], "exactly one of --to-event", 2),
    ],
)
def test_reset_refuses_points_that_are_not_decisions(
    url: str, args: list[str], message: str, code: int
) -> None:
    before = ok(tpp("--store", url, "workflow", "show", "-w", "order-2", "-o", "json")).stdout
    result = tpp("--store", url, "workflow", "reset", "-w", "order-2", *args)
    assert result.exit_code == code and message in result.stderr, result.stderr
    after = ok(tpp("--store", url, "workflow", "show", "-w", "order-2", "-o", "json")).stdout
    assert before == after


def test_reset_library_refuses_open_children_and_running_parents() -> None:
    from engine._reset import ResetError, decision_boundaries, reset
    from stores import MemoryStore

    from .test_store_copy import ACTIVITIES, WORKFLOWS, parent

    store = MemoryStore()
    clock = VirtualClock()
    client = Client(store, clock=clock)
    worker = Worker(store, WORKFLOWS, ACTIVITIES, clock=clock)
    client.start(parent, 1, True, id="p")
    worker.run_until_idle()
    client.signal("p", "finish")  # a decision while the child still runs
    worker.run_until_idle()
    history = store.read("p")
    assert [type(ev).__name__ for ev in history][2:4] == ["ChildWorkflowStarted", "SignalReceived"]
    assert decision_boundaries(history) == [1, 4]
    with pytest.raises(ResetError, match=r"child workflow\(s\) 'p/.*/1'.*outcome comes after"):
        reset(store, "p", 4)
    child = next(i for i in store.runs() if i.parent is not None)
    with pytest.raises(ResetError, match="still running; reset the parent instead"):
        reset(store, child.id, 1)
    assert store.describe("p").status is Status.RUNNING
    assert len(list(store.runs())) == 2  # nothing was written
    new_run = reset(store, "p", 1, reason="from the top")  # before the child: fine
    assert store.describe("p").run_id == new_run


def test_reset_doctest() -> None:
    import doctest

    import engine._reset

    result = doctest.testmod(engine._reset)
    assert result.failed == 0 and result.attempted > 0


def test_client_reset_repairs_a_failed_run() -> None:
    from engine import Client, VirtualClock, Worker, WorkflowFailedError
    from engine.events import WorkflowTaskCompleted
    from stores import MemoryStore

    store = MemoryStore()
    clock = VirtualClock()
    client = Client(store, clock=clock)
    client.start(cliapp.checkout, "o-9", 100, id="o-9")
    Worker(store, cliapp.app.workflows, cliapp.app.activities, clock=clock).run_until_idle()
    with pytest.raises(WorkflowFailedError, match="declined"):
        client.result("o-9")
    old = client.describe("o-9").run_id
    decisions = [e.index for e in client.history("o-9") if isinstance(e, WorkflowTaskCompleted)]
    with pytest.raises(ValueError):
        client.reset("o-9", decisions[1] + 1)  # not a decision boundary: nothing written
    assert client.describe("o-9").run_id == old
    new = client.reset("o-9", decisions[1], reason="card processor fixed")
    started = client.history("o-9")[0]
    assert new != old and started.reset_from is not None  # type: ignore[union-attr]
    assert started.reset_from.run_id == old  # type: ignore[union-attr]
    fixed = Worker(store, cliapp.app_fixed.workflows, cliapp.app_fixed.activities, clock=clock)
    fixed.run_until_idle()
    assert client.result("o-9")["receipt"] == "charged 100 for o-9"
