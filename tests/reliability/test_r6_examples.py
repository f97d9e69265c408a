"""R6: golden histories of every example workflow replay against the current code.

``tests/reliability/data/examples.json`` holds the histories of every run that
each ``examples/*.py`` ``main()`` makes (children and continued runs included),
recorded once by running the examples on ``MemoryStore``s.  Every test run
replays each of them with ``engine.testing.assert_deterministic`` against the
example's current code, and checks that every ``@workflow`` in ``examples/``
has at least one golden history.  Regenerate after a deliberate change::

    python -m tests.reliability.test_r6_examples --regenerate

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
