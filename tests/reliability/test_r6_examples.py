"""R6: golden histories of every example workflow replay against the current code.

``tests/reliability/data/examples.json`` holds the histories of every run that
each ``examples/*.py`` ``main()`` makes (children and continued runs included),
recorded once by running the examples on ``MemoryStore``s.  Every test run
replays each of them with ``engine.testing.assert_deterministic`` against the
example's current code, and checks that every ``@workflow`` in ``examples/``
has at least one golden history.  Regenerate after a deliberate change::

    python -m tests.reliability.test_r6_examples --regenerate
    python -m tests.reliability.test_r6_examples --regenerate-pipelines

The example pipelines (``examples/pipelines/Project.toml``) have their own
golden runs in ``data/pipelines.json``.

The 10 deliberately non-deterministic variants are ``tests/cli_variants.py``,
caught 10/10 by ``tests/test_cli_verify.py::test_ten_of_ten``.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import sys
from typing import Any

import pytest

from engine._defs import workflow_definition
from engine.events import decode_history, encode_history
from engine.testing import VirtualClock, assert_deterministic, replay

DATA = pathlib.Path(__file__).parent / "data" / "examples.json"
MODULES = ["batch_indexing", "expense_approval", "money_transfer", "repair_order", "subscription"]


def example_workflows() -> dict[str, Any]:
    """Every ``@workflow`` defined in ``examples/*.py``, by type name."""
    out: dict[str, Any] = {}
    for name in MODULES:
        module = importlib.import_module(f"examples.{name}")
        for value in vars(module).values():
            try:
                d = workflow_definition(value)
            except (TypeError, ValueError, AttributeError):
                continue
            if getattr(value, "__module__", "") == module.__name__:
                out[d.name] = value
    return out


def _golden() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(DATA.read_text())
    return data


def test_every_example_workflow_has_a_golden_history() -> None:
    recorded = {g["type"] for g in _golden()}
    assert set(example_workflows()) <= recorded, set(example_workflows()) - recorded
    assert {p.stem for p in pathlib.Path("examples").glob("*.py")} - {"__init__"} == set(MODULES)


@pytest.mark.parametrize("index", range(len(json.loads(DATA.read_text()))) if DATA.exists() else [])
def test_golden_example_history_replays(index: int) -> None:
    g = _golden()[index]
    fn = example_workflows()[g["type"]]
    history = decode_history(g["history"].encode())
    replay(fn, history)
    assert_deterministic(fn, history)


# ----------------------------------------------------------------------- pipelines

PIPELINES = DATA.with_name("pipelines.json")
PROJECT = pathlib.Path(__file__).resolve().parents[2] / "examples" / "pipelines" / "Project.toml"


def test_every_example_pipeline_has_a_golden_history_that_replays() -> None:
    """The pipelines of ``examples/pipelines`` (a run with retried fan-out batches):
    a pipeline is a workflow built from its TOML, so a changed task graph or
    engine shows here (a changed graph blocks the run through its digest)."""
    from engine.pipeline import load_project

    project = load_project(PROJECT)
    golden = json.loads(PIPELINES.read_text())
    assert {g["pipeline"] for g in golden} == set(project.pipelines)
    for g in golden:
        fn = project[g["pipeline"]].workflow
        history = decode_history(g["history"].encode())
        assert len(replay(fn, history)) == 0  # complete: nothing left to decide
        assert_deterministic(fn, history)


def regenerate_pipelines() -> None:
    from engine import Client, Worker
    from engine.pipeline import load_project, start
    from examples.pipelines.reindex_tasks import ReindexRequest
    from stores.memory import MemoryStore

    inputs = {"reindex": ReindexRequest(products=110, batch_size=25, flaky={1: 1, 3: 2})}
    out = []
    for pipeline in load_project(PROJECT):
        store, clock = MemoryStore(), VirtualClock()
        client = Client(store, clock=clock)
        worker = Worker(
            store, workflows=pipeline.workflows, activities=pipeline.activities, clock=clock
        )
        wid = start(client, pipeline, inputs[pipeline.name], id=f"{pipeline.name}-golden")
        worker.run_until_idle(skip_time=True)
        client.result(wid)
        root = str(PROJECT.parents[2]) + "/"  # tracebacks hold no local paths
        history = encode_history(store.read(wid)).decode().replace(root, "")
        out.append({"pipeline": pipeline.name, "id": wid, "history": history})
    PIPELINES.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(out)} pipeline histories to {PIPELINES}")


def regenerate() -> None:
    from stores.memory import MemoryStore

    made: list[Any] = []
    init = MemoryStore.__init__

    def recording(self: Any, *a: Any, **kw: Any) -> None:
        init(self, *a, **kw)
        made.append(self)

    MemoryStore.__init__ = recording  # type: ignore[method-assign]
    out = []
    root = str(pathlib.Path(__file__).resolve().parents[2]) + "/"
    try:
        for name in MODULES:
            module = importlib.import_module(f"examples.{name}")
            made.clear()
            params = module.main.__code__.co_varnames[: module.main.__code__.co_argcount]
            kwargs: dict[str, Any] = {"clock": VirtualClock()} if "clock" in params else {}
            if "store" in params:
                kwargs["store"] = MemoryStore()
            module.main(**kwargs)
            for store in made:
                for info in sorted(store.runs(), key=lambda i: (i.id, i.start_time)):
                    history = store.read(info.id, info.run_id)
                    out.append(
                        {
                            "example": name,
                            "type": info.type,
                            "id": info.id,
                            # tracebacks hold no local paths
                            "history": encode_history(history).decode().replace(root, ""),
                        }
                    )
    finally:
        MemoryStore.__init__ = init  # type: ignore[method-assign]
    DATA.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(out)} histories to {DATA}")


if __name__ == "__main__" and sys.argv[1:] == ["--regenerate"]:
    regenerate()
if __name__ == "__main__" and sys.argv[1:] == ["--regenerate-pipelines"]:
    regenerate_pipelines()
