"""Pipelines run as workflows: results along edges, parallel waves, fan-out, failures, re-runs.

Task types used by the small pipelines here are this module's functions
(``tests.test_pipeline_run:...``); the reindex example brings its own.
"""

from __future__ import annotations

import dataclasses
import pathlib
import threading
import time
from collections import Counter
from typing import Any

import pytest

from engine import (
    Client,
    NonDeterminismError,
    Status,
    VirtualClock,
    Worker,
    WorkflowFailedError,
    activity_context,
)
from engine._apps import load_app
from engine.events import (
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityScheduled,
    WorkflowTaskCompleted,
)
from engine.pipeline import (
    Pipeline,
    RunView,
    TaskStatsCollector,
    load,
    loads,
    run,
    scan,
    start,
)
from engine.testing import assert_deterministic, replay
from examples.pipelines import reindex_tasks
from examples.pipelines.reindex_tasks import ReindexRequest, SearchService
from stores import MemoryStore

ROOT = pathlib.Path(__file__).resolve().parent.parent
REINDEX = ROOT / "examples" / "pipelines" / "reindex.toml"
HERE = "tests.test_pipeline_run"

CALLS: Counter[str] = Counter()
SPANS: dict[str, tuple[float, float]] = {}
BROKEN: set[str] = set()
LOCK = threading.Lock()


@pytest.fixture(autouse=True)
def _clean() -> Any:
    CALLS.clear()
    SPANS.clear()
    BROKEN.clear()
    SearchService.clear_memory()
    yield
    SearchService.clear_memory()


def _note(name: str) -> None:
    with LOCK:
        CALLS[name] += 1
    if name in BROKEN:
        raise RuntimeError(f"{name} is broken")


# ---------------------------------------------------------------------- task types


def source(x: int) -> int:
    _note("source")
    return x


def plus_one(x: int) -> int:
    _note("plus_one")
    return x + 1


def twice(x: int) -> int:
    _note("twice")
    return 2 * x


def letter(name: str) -> Any:
    def task() -> str:
        _note(name)
        return name

    return task


tag_a, tag_b, tag_c = letter("a"), letter("b"), letter("c")


def collect(*args: Any) -> list[Any]:
    _note("collect")
    return list(args)


def sleeper(name: str) -> Any:
    def task() -> str:
        start = time.monotonic()
        time.sleep(0.3)
        SPANS[name] = (start, time.monotonic())
        return name

    return task


slow_a, slow_b, slow_c = sleeper("a"), sleeper("b"), sleeper("c")


@dataclasses.dataclass(frozen=True)
class Item:
    n: int


def items(count: int) -> list[Item]:
    return [Item(i) for i in range(count)]


def square(item: Item) -> int:
    assert isinstance(item, Item)  # decoded to the annotated type
    _note(f"square {item.n}")
    return item.n * item.n


def not_a_list(count: int) -> dict[str, int]:
    return {"count": count}


def total(values: list[int]) -> int:
    return sum(values)


def flaky_once(x: int) -> int:
    """Fails its first attempt (the run then waits for a retry)."""
    if activity_context().attempt == 1:
        raise ConnectionError("try again")
    return x


def pipeline(graph: str, *tasks: tuple[str, ...], extra: str = "", name: str = "demo") -> Pipeline:
    """A pipeline of ``(name, function[, option lines])`` tasks from this module."""
    body = "".join(
        f'[[task]]\nname = "{n}"\ntype = "{HERE}:{fn}"\n{"".join(more)}\n' for n, fn, *more in tasks
    )
    text = f'[pipeline]\nname = "{name}"\ngraph = "{graph}"\n'
    text += f'[message]\nretry_delay = "10ms"\n{extra}\n{body}'
    return loads(text, source=f"{name}.toml")


def harness(p: Pipeline) -> tuple[Client, Worker, VirtualClock]:
    clock = VirtualClock()
    store = MemoryStore()
    return (
        Client(store, clock=clock),
        Worker(store, p.workflows, p.activities, clock=clock),
        clock,
    )


def scheduled(client: Client, wid: str) -> list[str]:
    return [ev.activity_type for ev in client.history(wid) if isinstance(ev, ActivityScheduled)]


# ---------------------------------------------------------------------- the reindex example


def test_reindex_end_to_end_with_a_flaky_service() -> None:
    p = load(REINDEX)
    client, worker, _ = harness(p)
    request = ReindexRequest(products=110, batch_size=25, flaky={1: 1, 3: 2})
    wid = start(client, p, request, id="reindex-1")
    worker.run_until_idle(skip_time=True)
    summary = client.result(wid)
    assert summary == {"before": 0, "indexed": 110, "batches": 5, "retried": [1, 3]}
    assert SearchService(None).count() == 110
    assert client.describe(wid).type == "pipeline:reindex"
    kinds = Counter(scheduled(client, wid))
    assert kinds == {
        "reindex.snapshot": 1,
        "reindex.fetch": 1,
        "reindex.split": 1,
        "reindex.index": 5,
        "reindex.report": 1,
    }
    history = client.history(wid)
    assert sum(isinstance(ev, ActivityAttemptFailed) for ev in history) == 3
    # a fan-out activity's arguments are (index, item): the history says which batch it was
    index_args = [
        client.decode(ev.args)[0]
        for ev in history
        if isinstance(ev, ActivityScheduled) and ev.activity_type == "reindex.index"
    ]
    assert index_args == [0, 1, 2, 3, 4]
    assert client.query(wid, "pipeline")["digest"] == p.digest
    assert_deterministic(p.workflow, history)
    view = scan(history, client.decode)
    assert {name: t.state for name, t in view.tasks.items()} == dict.fromkeys(
        ["snapshot", "fetch", "split", "index", "report"], "completed"
    )
    assert view.tasks["index"].retried == 3 and view.tasks["index"].completed == 5


def test_reindex_in_process_on_files_with_real_threads(tmp_path: pathlib.Path) -> None:
    from stores.file import FileStore

    request = ReindexRequest(products=60, batch_size=10, index_dir=str(tmp_path / "index"))
    views: list[RunView] = []
    with FileStore(tmp_path / "store", durability="none") as store:
        summary = run(REINDEX, request, store=store, id="files", progress=views.append)
        assert summary["indexed"] == 60 and summary["batches"] == 6
        assert Client(store).describe("files").status is Status.COMPLETED
    assert SearchService(str(tmp_path / "index")).count() == 60
    assert views and views[-1].status == "COMPLETED"
    assert {t.state for t in views[-1].tasks.values()} == {"completed"}
    assert any(t.state in ("running", "pending") for v in views for t in v.tasks.values())


def test_the_example_app_serves_tpp_worker() -> None:
    app = load_app("examples.pipelines.app")
    assert list(app.workflows) == ["pipeline:reindex"]
    assert app.activity_names == [
        "reindex.fetch",
        "reindex.index",
        "reindex.report",
        "reindex.snapshot",
        "reindex.split",
    ]


def test_the_example_main_runs(capsys: pytest.CaptureFixture[str]) -> None:
    summary = reindex_tasks.main()
    assert summary.indexed == 120 and summary.retried == [2]
    out = capsys.readouterr().out
    assert "indexed 120 products in 5 batches" in out and "flowchart TD" in out


# ---------------------------------------------------------------------- edges and waves


def test_results_flow_along_edges() -> None:
    p = pipeline("A --> B --> C", ("A", "source"), ("B", "plus_one"), ("C", "twice"))
    assert run(p, 20, clock=VirtualClock()) == 42


def test_independent_tasks_run_in_parallel() -> None:
    p = pipeline(
        "A & B & C --> D", ("A", "slow_a"), ("B", "slow_b"), ("C", "slow_c"), ("D", "collect")
    )
    client_store = MemoryStore()
    assert run(p, store=client_store, id="par") == ["a", "b", "c"]
    starts = [SPANS[n][0] for n in "abc"]
    ends = [SPANS[n][1] for n in "abc"]
    assert max(starts) < min(ends), f"the three tasks did not overlap: {SPANS}"
    # one decision scheduled all three: the first wave is one All
    history = Client(client_store).history("par")
    heads = [i for i, ev in enumerate(history) if isinstance(ev, WorkflowTaskCompleted)]
    first = history[heads[0] : heads[1]]
    assert [ev.activity_type for ev in first if isinstance(ev, ActivityScheduled)] == [
        "demo.A",
        "demo.B",
        "demo.C",
    ]


def test_several_predecessors_give_arguments_in_task_order() -> None:
    p = pipeline(
        "B --> D; A --> D; C --> D",
        ("C", "tag_c"),
        ("A", "tag_a"),
        ("B", "tag_b"),
        ("D", "collect"),
    )
    assert run(p, clock=VirtualClock()) == ["c", "a", "b"]


def test_several_sinks_give_a_dict_and_roots_share_the_input() -> None:
    p = pipeline(
        "A --> B; A --> C; D", ("A", "source"), ("B", "plus_one"), ("C", "twice"), ("D", "plus_one")
    )
    assert run(p, 5, clock=VirtualClock()) == {"B": 6, "C": 10, "D": 6}


def test_fan_out_maps_over_a_list_in_order() -> None:
    p = pipeline("L --> S --> T", ("L", "items"), ("S", "square", "fan_out = true"), ("T", "total"))
    assert run(p, 6, clock=VirtualClock()) == sum(i * i for i in range(6))
    assert sorted(n for n in CALLS if n.startswith("square")) == [f"square {i}" for i in range(6)]
    assert run(p, 0, clock=VirtualClock()) == 0  # an empty fan-out is an empty list


def test_fan_out_over_something_else_fails_the_run() -> None:
    p = pipeline("L --> S", ("L", "not_a_list"), ("S", "square", "fan_out = true"))
    with pytest.raises(
        WorkflowFailedError, match="fans out over the output of 'L', which is a dict"
    ):
        run(p, 3, clock=VirtualClock())


# ---------------------------------------------------------------------- failures and re-runs


def test_a_failed_task_fails_the_run_with_its_name() -> None:
    BROKEN.add("plus_one")
    p = pipeline(
        "A --> B --> C; A --> D",
        ("A", "source"),
        ("B", "plus_one"),
        ("C", "twice"),
        ("D", "twice"),
        extra="retry = 2",
    )
    client, worker, _ = harness(p)
    wid = start(client, p, 1, id="fails")
    worker.run_until_idle(skip_time=True)
    with pytest.raises(WorkflowFailedError) as info:
        client.result(wid)
    message = str(info.value)
    assert "task 'B' (tests.test_pipeline_run:plus_one) failed after 3 attempt(s)" in message
    assert "RuntimeError: plus_one is broken" in message
    assert info.value.__cause__ is not None
    assert getattr(info.value.__cause__, "type", "") == "engine.pipeline.TaskFailedError"
    assert CALLS["plus_one"] == 3
    assert "demo.C" not in scheduled(client, wid)  # nothing after B
    view = scan(client.history(wid), client.decode)
    states = {n: t.state for n, t in view.tasks.items()}
    assert states == {"A": "completed", "B": "failed", "C": "skipped", "D": "completed"}


def test_a_rerun_reuses_finished_tasks() -> None:
    BROKEN.add("twice")
    p = pipeline(
        "A --> B --> E; A --> D --> E",
        ("A", "source"),
        ("B", "plus_one"),
        ("D", "twice"),
        ("E", "collect"),
        extra="retry = 0",
    )
    client, worker, _ = harness(p)
    start(client, p, 3, id="rerun")
    worker.run_until_idle(skip_time=True)
    assert client.describe("rerun").status is Status.FAILED
    assert CALLS == {"source": 1, "plus_one": 1, "twice": 1}
    BROKEN.clear()  # the bug is fixed
    start(client, p, 3, id="rerun")
    worker.run_until_idle(skip_time=True)
    assert client.result("rerun") == [4, 6]
    assert CALLS == {"source": 1, "plus_one": 1, "twice": 2, "collect": 1}
    assert scheduled(client, "rerun") == ["demo.D", "demo.E"]
    view = scan(client.history("rerun"), client.decode)
    assert view.tasks["A"].state == "reused" and view.tasks["B"].state == "reused"
    assert view.request is not None and view.request.reuse is not None
    assert view.request.reuse.results == {"A": 3, "B": 4}
    # with another input nothing is reused; after a completed run nothing either
    start(client, p, 5, id="rerun")
    worker.run_until_idle(skip_time=True)
    assert client.result("rerun") == [6, 10]
    assert len(scheduled(client, "rerun")) == 4


def test_a_rerun_of_reindex_indexes_only_the_batches_that_failed() -> None:
    p = load(REINDEX)
    client, worker, _ = harness(p)
    request = ReindexRequest(products=100, batch_size=20)
    SearchService(None).set_outage([2, 3])
    start(client, p, request, id="nightly")
    worker.run_until_idle(skip_time=True)
    with pytest.raises(WorkflowFailedError, match=r"an item of task 'index' .* after 6 attempt"):
        client.result("nightly")
    SearchService(None).set_outage([])  # the outage is over
    start(client, p, request, id="nightly")
    worker.run_until_idle(skip_time=True)
    assert client.result("nightly") == {"before": 0, "indexed": 100, "batches": 5, "retried": []}
    history = client.history("nightly")
    again = [
        client.decode(ev.args)[0]
        for ev in history
        if isinstance(ev, ActivityScheduled) and ev.activity_type == "reindex.index"
    ]
    assert again == [2, 3]
    assert scheduled(client, "nightly") == ["reindex.index"] * 2 + ["reindex.report"]
    view = scan(history, client.decode)
    assert view.tasks["index"].reused == 3 and view.tasks["index"].state == "completed"
    assert view.tasks["fetch"].state == "reused"


def test_a_changed_task_type_reruns_it_and_what_follows(tmp_path: pathlib.Path) -> None:
    BROKEN.add("twice")
    p1 = pipeline(
        "A --> B --> C", ("A", "source"), ("B", "plus_one"), ("C", "twice"), extra="retry = 0"
    )
    client, worker, _ = harness(p1)
    start(client, p1, 1, id="edit")
    worker.run_until_idle(skip_time=True)
    assert client.describe("edit").status is Status.FAILED
    p2 = pipeline(
        "A --> B --> C", ("A", "source"), ("B", "twice"), ("C", "plus_one"), extra="retry = 0"
    )
    worker2 = Worker(worker.store, p2.workflows, p2.activities, clock=worker.clock)
    BROKEN.clear()
    start(client, p2, 1, id="edit")
    worker2.run_until_idle(skip_time=True)
    assert client.result("edit") == 3  # A reused (1), B = 2 * 1, C = 2 + 1
    assert scheduled(client, "edit") == ["demo.B", "demo.C"]


# ---------------------------------------------------------------------- determinism


def test_a_changed_dag_blocks_runs_in_flight_until_the_old_file_is_back() -> None:
    v1 = pipeline("A --> B", ("A", "flaky_once"), ("B", "plus_one"))
    client, worker, clock = harness(v1)
    start(client, v1, 1, id="inflight")
    worker.run_until_idle()  # A's first attempt fails: the run waits for its retry
    assert client.describe("inflight").status is Status.RUNNING
    v2 = pipeline("A --> B; A --> C", ("A", "flaky_once"), ("B", "plus_one"), ("C", "twice"))
    worker_v2 = Worker(worker.store, v2.workflows, v2.activities, clock=clock)
    worker_v2.run_until_idle(skip_time=True)
    info = client.describe("inflight")
    assert info.status is Status.RUNNING
    assert info.blocked is not None
    assert "the definition of pipeline 'demo' changed since this run started" in info.blocked
    with pytest.raises(NonDeterminismError, match="changed since this run started"):
        replay(v2.workflow, client.history("inflight"))
    # tuning retries is not a change of the DAG
    v1b = pipeline("A --> B", ("A", "flaky_once"), ("B", "plus_one"), extra="retry = 7")
    assert replay(v1b.workflow, client.history("inflight")) is not None
    worker_v1 = Worker(worker.store, v1b.workflows, v1b.activities, clock=clock)
    clock.advance(60)  # past the blocked run's backoff
    worker_v1.run_until_idle(skip_time=True)
    assert client.result("inflight") == 2


def test_run_resumes_a_run_of_the_same_id() -> None:
    p = pipeline("A --> B", ("A", "flaky_once"), ("B", "plus_one"))
    store = MemoryStore()
    clock = VirtualClock()
    client = Client(store, clock=clock)
    start(client, p, 4, id="resume")
    Worker(store, p.workflows, p.activities, clock=clock).run_until_idle()
    run_id = client.describe("resume").run_id
    assert run(p, 999, store=store, clock=clock, id="resume") == 5  # its own input, not 999
    assert client.describe("resume").run_id == run_id


def test_stats_per_task_over_runs() -> None:
    BROKEN.add("twice")
    p = pipeline(
        "A --> B; A --> C", ("A", "source"), ("B", "plus_one"), ("C", "twice"), extra="retry = 1"
    )
    client, worker, _ = harness(p)
    start(client, p, 1, id="fails-then-works")
    worker.run_until_idle(skip_time=True)
    BROKEN.clear()
    start(client, p, 1, id="fails-then-works")  # reuses A and B
    start(client, p, 2, id="works")
    worker.run_until_idle(skip_time=True)
    # a run of another version waits for A's retry: B and C are pending
    slow = pipeline("A --> B; A --> C", ("A", "flaky_once"), ("B", "plus_one"), ("C", "twice"))
    start(client, slow, 3, id="in-flight")
    Worker(worker.store, slow.workflows, slow.activities, clock=worker.clock).run_until_idle()
    client.start("pipeline:demo", id="not-started-yet")
    collector = TaskStatsCollector(client.decode)
    for info in worker.store.runs():
        collector.add(client.history(info.id, info.run_id))
    collector.add([])
    stats = collector.result()["demo"]
    assert list(stats) == ["A", "B", "C"]
    assert (stats["A"].completed, stats["A"].reused, stats["A"].in_flight) == (2, 1, 1)
    assert (stats["A"].retried, stats["C"].retried) == (1, 1)
    assert (stats["C"].failed, stats["C"].completed) == (1, 2)
    assert (stats["B"].pending, stats["C"].pending, stats["A"].pending) == (1, 1, 0)
    assert (stats["B"].reused, stats["B"].completed) == (1, 2)


def test_history_is_complete_per_activity() -> None:
    p = load(REINDEX)
    client, worker, _ = harness(p)
    wid = start(client, p, ReindexRequest(products=30, batch_size=10, flaky={0: 1}))
    worker.run_until_idle(skip_time=True)
    history = client.history(wid)
    done = Counter(ev.seq for ev in history if isinstance(ev, ActivityCompleted))
    assert set(done.values()) == {1} and len(done) == 1 + 1 + 1 + 3 + 1


def test_every_history_a_pipeline_can_make_replays() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from engine.pipeline import RunInput
    from engine.testing import histories

    p = pipeline(
        "A --> B --> C; A --> D",
        ("A", "items"),
        ("B", "square", "fan_out = true"),
        ("C", "total"),
        ("D", "twice"),
    )
    results = {
        "demo.A": st.lists(st.builds(dict, n=st.integers(0, 5)), max_size=3),
        "demo.B": st.integers(),
        "demo.C": st.integers(),
        "demo.D": st.integers(),
    }

    @settings(max_examples=40, deadline=None)
    @given(histories(p.workflow, RunInput(args=[2]), results=results, activities=p.activities))
    def replays(history: list[Any]) -> None:
        assert_deterministic(p.workflow, history)

    replays()


def test_a_rerun_reads_encrypted_offloaded_histories() -> None:
    import cas as cas_package
    from engine import Keyring, PayloadCodec
    from engine.events import Json

    codec = PayloadCodec(compression="zstd", keys=Keyring({"k1": bytes(32)}), offload_above=256)
    blobs = cas_package.MemoryCAS()
    p = load(REINDEX)
    store, clock = MemoryStore(), VirtualClock()
    client = Client(store, clock=clock, codec=codec, cas=blobs)
    worker = Worker(store, p.workflows, p.activities, clock=clock, codec=codec, cas=blobs)
    request = ReindexRequest(products=60, batch_size=20)
    SearchService(None).set_outage([1])
    start(client, p, request, id="sealed")
    worker.run_until_idle(skip_time=True)
    assert client.describe("sealed").status is Status.FAILED
    history = client.history("sealed")
    assert not any(isinstance(getattr(ev, "result", None), Json) for ev in history)  # sealed
    SearchService(None).set_outage([])
    start(client, p, request, id="sealed")
    worker.run_until_idle(skip_time=True)
    assert client.result("sealed")["indexed"] == 60
    assert scheduled(client, "sealed") == ["reindex.index", "reindex.report"]
