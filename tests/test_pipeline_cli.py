"""``tpp pipeline run|graph`` and ``tpp workflow graph``, invoked through click's test runner.

The commands are mounted on a root like ``tpp``'s (a ``TppGroup``: one-line
errors, resources closed), as ``engine/cli/__init__.py`` registers them.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from engine import Client, Worker
from engine.cli._common import State, TppGroup, pass_state
from engine.cli.pipeline import pipeline, workflow_graph
from engine.events import ActivityScheduled
from engine.pipeline import load
from examples.pipelines.reindex_tasks import SearchService

ROOT = pathlib.Path(__file__).resolve().parent.parent
REINDEX = ROOT / "examples" / "pipelines" / "reindex.toml"
GOLDEN = ROOT / "tests" / "data" / "pipelines"


@click.group(cls=TppGroup)
@click.option("--store", "store_url", default=None)
@click.option("-o", "--output", default="table")
@pass_state
def tpp(state: State, store_url: str | None, output: str) -> None:
    state.store_url = store_url
    state.output = output


@click.group()
def workflow() -> None:
    pass


tpp.add_command(pipeline)
workflow.add_command(workflow_graph)
tpp.add_command(workflow)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(tpp, list(args), catch_exceptions=False)


@pytest.fixture
def store_url(tmp_path: pathlib.Path) -> str:
    return f"file:{tmp_path / 'store'}?durability=none"


@pytest.fixture
def quick(tmp_path: pathlib.Path) -> pathlib.Path:
    """reindex.toml with quick, few retries (a failing batch fails the run at once)."""
    text = REINDEX.read_text().replace('"250ms"', '"10ms"').replace("retry = 5", "retry = 1")
    path = tmp_path / "reindex.toml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def _clean() -> Any:
    SearchService.clear_memory()
    yield
    SearchService.clear_memory()


def test_graph_prints_the_pipeline() -> None:
    result = invoke("pipeline", "graph", str(REINDEX))
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / "reindex.mmd").read_text()
    result = invoke("pipeline", "graph", str(REINDEX.with_name("Project.toml")))
    assert result.stdout == (GOLDEN / "project.mmd").read_text()
    result = invoke("pipeline", "graph", str(REINDEX.with_name("Project.toml")), "-p", "reindex")
    assert result.stdout == (GOLDEN / "reindex.mmd").read_text()
    result = invoke("pipeline", "graph", str(REINDEX), "--direction", "lr", "-o", "json")
    assert json.loads(result.stdout)["mermaid"].startswith("flowchart LR\n")


def test_graph_of_a_bad_file_names_every_line(tmp_path: pathlib.Path) -> None:
    bad = GOLDEN / "bad" / "cycle.toml"
    result = invoke("pipeline", "graph", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:7: the graph has a cycle: A --> B --> C --> A" in result.stderr
    assert "Traceback" not in result.output
    result = invoke("pipeline", "graph", str(tmp_path / "missing.toml"))
    assert result.exit_code == 1 and "missing.toml:1: no such file" in result.stderr
    result = invoke("pipeline", "graph", str(REINDEX), "-p", "other")
    assert result.exit_code == 1 and "is pipeline 'reindex', not 'other'" in result.stderr


def test_run_prints_the_result_and_progress(store_url: str, tmp_path: pathlib.Path) -> None:
    index = tmp_path / "index"
    request = json.dumps({"products": 50, "batch_size": 20, "index_dir": str(index)})
    result = invoke(
        "--store", store_url, "pipeline", "run", str(REINDEX), "-i", request, "-w", "r1"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"before": 0, "indexed": 50, "batches": 3, "retried": []}
    assert "r1: task index completed 3/3" in result.stderr
    assert "r1: task report completed" in result.stderr
    assert SearchService(str(index)).count() == 50
    result = invoke(
        "pipeline", "run", str(REINDEX), "-i", request, "--store", store_url, "-o", "json"
    )
    data = json.loads(result.stdout)
    assert data["status"] == "COMPLETED" and data["result"]["before"] == 50


def test_a_failed_run_says_which_task_and_a_rerun_reuses(
    store_url: str, quick: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    index = tmp_path / "index"
    request = json.dumps({"products": 60, "batch_size": 20, "index_dir": str(index)})
    SearchService(str(index)).set_outage([1])
    args = ("--store", store_url, "pipeline", "run", str(quick), "-i", request, "-w", "nightly")
    result = invoke(*args)
    assert result.exit_code == 1
    assert "an item of task 'index'" in result.stderr
    assert "503 Service Unavailable (batch 1, attempt 2)" in result.stderr
    assert "run it again with -w nightly to reuse the finished tasks" in result.stderr
    assert "nightly: task index failed" in result.stderr
    SearchService(str(index)).set_outage([])
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["indexed"] == 60
    assert "nightly: task fetch reused" in result.stderr
    graph = invoke("--store", store_url, "workflow", "graph", "-w", "nightly")
    assert graph.exit_code == 0
    assert 'index[["index<br/>index_batch<br/>3/3 done (2 reused)"]]' in graph.stdout
    assert "class snapshot,fetch,split reused" in graph.stdout


def test_detach_starts_a_run_for_workers(store_url: str, tmp_path: pathlib.Path) -> None:
    request = json.dumps({"products": 10, "batch_size": 5})
    result = invoke(
        "--store", store_url, "pipeline", "run", str(REINDEX), "-i", request, "-w", "d1", "--detach"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "d1\n"
    assert "started pipeline:reindex 'd1'" in result.stderr
    graph = invoke("--store", store_url, "workflow", "graph", "-w", "d1", "-o", "json")
    data = json.loads(graph.stdout)
    assert data["workflow_id"] == "d1" and 'start(["pipeline:reindex"])' in data["mermaid"]
    again = invoke("--store", store_url, "pipeline", "run", str(REINDEX), "-w", "d1", "--detach")
    assert again.exit_code == 1 and "d1" in again.stderr  # it is running
    import stores

    p = load(REINDEX)
    with stores.open(store_url) as store:
        Worker(store, p.workflows, p.activities).run_until_idle()
        history = Client(store).history("d1")
    assert sum(isinstance(ev, ActivityScheduled) for ev in history) == 3 + 2 + 1
    graph = invoke("--store", store_url, "workflow", "graph", "-w", "d1")
    assert "%% d1: pipeline:reindex (COMPLETED)" in graph.stdout


def test_workflow_graph_of_an_unknown_id(store_url: str) -> None:
    invoke("--store", store_url, "pipeline", "run", str(REINDEX), "--detach", "-w", "x")
    result = invoke("--store", store_url, "workflow", "graph", "-w", "nope")
    assert result.exit_code == 1 and "nope" in result.stderr
    assert "Traceback" not in result.output


def test_bad_input_is_a_usage_error(store_url: str) -> None:
    result = invoke("--store", store_url, "pipeline", "run", str(REINDEX), "-i", "{products: 1}")
    assert result.exit_code == 2 and "is not valid JSON" in result.stderr


def test_stats_counts_pipeline_tasks(tmp_path: pathlib.Path) -> None:
    from engine import VirtualClock
    from engine.pipeline import run
    from examples.pipelines.reindex_tasks import ReindexRequest
    from stores.file import FileStore

    from .clikit import ROOT, as_json, ok, tpp

    pipeline = load(ROOT / "examples" / "pipelines" / "reindex.toml")
    with FileStore(tmp_path / "s") as store:
        run(
            pipeline,
            ReindexRequest(products=30, flaky={1: 1}),
            store=store,
            id="nightly",
            clock=VirtualClock(),
        )
    got = as_json(tpp("--store", f"file:{tmp_path / 's'}", "stats", "-o", "json"))
    tasks = got["pipelines"]["reindex"]
    assert set(tasks) >= {"fetch", "split", "index", "report"}
    assert tasks["report"]["completed"] == 1 and tasks["index"]["retried"] == 1
    assert all(t["failed"] == 0 and t["in_flight"] == 0 for t in tasks.values())
    table = ok(tpp("--store", f"file:{tmp_path / 's'}", "stats")).stdout
    assert "Pipeline tasks" in table and "reindex" in table
