"""Mermaid drawings compared with golden files under ``tests/data/pipelines/``.

A pipeline's DAG, a project, a pipeline run (failed, re-run, in flight) and
ordinary runs drawn from their events.  To accept a deliberate change of the
drawings, run ``TPP_UPDATE_GOLDEN=1 pytest tests/test_pipeline_mermaid.py``
and review the diff.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Generator
from typing import Any

import pytest

from engine import (
    All,
    Client,
    RetryPolicy,
    ScheduleActivity,
    StartChildWorkflow,
    Timer,
    VirtualClock,
    WaitSignal,
    Worker,
    activity,
    activity_context,
    workflow,
)
from engine.pipeline import history_mermaid, load, load_project, loads, pipeline_mermaid, start
from examples.pipelines.reindex_tasks import ReindexRequest, SearchService
from stores import MemoryStore

ROOT = pathlib.Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "pipelines"
REINDEX = ROOT / "examples" / "pipelines" / "reindex.toml"


def check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TPP_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file {name}: run with TPP_UPDATE_GOLDEN=1 to write it"
    assert text == path.read_text(), f"{name} differs from its golden file"


@pytest.fixture(autouse=True)
def _clean() -> Any:
    SearchService.clear_memory()
    yield
    SearchService.clear_memory()


def harness() -> tuple[Client, MemoryStore, VirtualClock]:
    clock = VirtualClock()
    store = MemoryStore()
    return Client(store, clock=clock), store, clock


# ---------------------------------------------------------------------- pipelines


def test_the_reindex_pipeline() -> None:
    check("reindex.mmd", load(REINDEX).mermaid())


def test_the_issue_example_left_to_right() -> None:
    p = loads(
        '[pipeline]\nname = "abcd"\ngraph = """\n  A --> B;\n  B --> C;\n  C --> D;\n"""\n'
        + "".join(
            f'[[task]]\nname = "{n}"\ntype = "examples.pipelines.reindex_tasks:{fn}"\n{more}'
            for n, fn, more in [
                ("A", "fetch_catalogue", ""),
                ("B", "split_batches", ""),
                ("C", "index_batch", "fan_out = true\n"),
                ("D", "report", ""),
            ]
        )
    )
    check("abcd_lr.mmd", p.mermaid(direction="LR"))
    with pytest.raises(ValueError, match="direction"):
        p.mermaid(direction="up")


def test_a_project() -> None:
    check("project.mmd", load_project(ROOT / "examples" / "pipelines" / "Project.toml").mermaid())


def test_labels_are_escaped() -> None:
    spec = loads(
        '[pipeline]\nname = "q"\ngraph = "A"\n'
        '[[task]]\nname = "A"\ntype = "examples.pipelines.reindex_tasks:snapshot"\n'
    ).spec()
    text = pipeline_mermaid(spec, title='say "hi" <b>#1</b>')
    assert "%% say #quot;hi#quot; #lt;b#gt;#35;1#lt;/b#gt;" in text


# ---------------------------------------------------------------------- pipeline runs


def test_a_failed_run_then_its_rerun() -> None:
    p = load(REINDEX)
    client, store, clock = harness()
    worker = Worker(store, p.workflows, p.activities, clock=clock)
    request = ReindexRequest(products=100, batch_size=20, flaky={0: 1})
    SearchService(None).set_outage([3])
    start(client, p, request, id="reindex-nightly")
    worker.run_until_idle(skip_time=True)
    check("reindex_failed.mmd", history_mermaid(client.history("reindex-nightly"), client.decode))
    SearchService(None).set_outage([])
    start(client, p, request, id="reindex-nightly")
    worker.run_until_idle(skip_time=True)
    check("reindex_rerun.mmd", history_mermaid(client.history("reindex-nightly"), client.decode))


def test_a_run_in_flight() -> None:
    p = load(REINDEX)
    client, store, clock = harness()
    worker = Worker(store, p.workflows, p.activities, clock=clock)
    start(client, p, ReindexRequest(products=60, batch_size=20, flaky={1: 2}), id="reindex-now")
    worker.run_until_idle()  # batch 1 waits for its retry
    check("reindex_in_flight.mmd", history_mermaid(client.history("reindex-now"), client.decode))
    # without a decoder, the same run is drawn from its events alone
    check("reindex_in_flight_events.mmd", history_mermaid(client.history("reindex-now")))


# ---------------------------------------------------------------------- any run


@activity
def reserve(order: str) -> str:
    return f"reserved {order}"


@activity
def charge(order: str) -> str:
    if activity_context().attempt == 1:
        raise ConnectionError("card network busy")
    return f"charged {order}"


@activity
def email(order: str) -> None:
    return None


@activity
def ship(order: str) -> str:
    return f"shipped {order}"


@workflow
def invoice(order: str) -> Generator[Any, Any, str]:
    yield Timer(60)
    return f"invoice for {order}"


@workflow
def order(order_id: str) -> Generator[Any, Any, str]:
    yield ScheduleActivity(reserve, order_id)
    yield ScheduleActivity(charge, order_id, retry=RetryPolicy(maximum_attempts=3))
    yield All(
        ScheduleActivity(ship, order_id),
        ScheduleActivity(email, order_id),
        ScheduleActivity(email, order_id + " (copy)"),
    )
    address = yield WaitSignal("feedback")
    yield StartChildWorkflow(invoice, order_id, id=f"invoice-{order_id}")
    yield ScheduleActivity(email, f"{order_id} thanks {address}")
    return "done"


def test_any_run_from_its_events() -> None:
    client, store, clock = harness()
    worker = Worker(store, [order, invoice], [reserve, charge, email, ship], clock=clock)
    client.start(order, "o-1", id="order-1")
    worker.run_until_idle(skip_time=True)
    check("order_waiting.mmd", history_mermaid(client.history("order-1"), client.decode))
    client.signal("order-1", "feedback", "5 stars")
    worker.run_until_idle(skip_time=True)
    check("order_completed.mmd", history_mermaid(client.history("order-1"), client.decode))
    check("order_child.mmd", history_mermaid(client.history("invoice-o-1")))


def test_a_history_must_start_with_its_start() -> None:
    client, _, _ = harness()
    client.start(order, "o-2", id="order-2")
    with pytest.raises(ValueError, match="begins with WorkflowStarted"):
        history_mermaid(client.history("order-2")[1:])
