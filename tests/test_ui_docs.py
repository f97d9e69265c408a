"""The web UI's documentation: the README's section has its screenshot; docstrings run.

The section's Python runs and prints what its comments say through
``tests/test_readme.py``, as every README block does.
"""

from __future__ import annotations

import doctest
import importlib
import pathlib
import re

import pytest

import engine.ui

from . import test_ui_support  # noqa: F401 - imports Starlette's test client quietly first

ROOT = pathlib.Path(__file__).resolve().parent.parent
_README = (ROOT / "README.md").read_text()
_START = _README.index("## The web UI (`tpp ui`)")
TEXT = _README[_START : _README.index("\n## ", _START + 1)]
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)
MODULES = ["engine.ui", "engine.ui._app", "engine.ui._graph", "engine.ui._views"]


def test_there_is_an_example_and_a_screenshot() -> None:
    assert BLOCKS
    (image,) = re.findall(r"!\[[^]]+\]\(([^)]+)\)", TEXT)
    assert (ROOT / image).is_file(), f"{image} (relative to the README) is missing"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0


def test_all_is_sorted_and_complete() -> None:
    assert engine.ui.__all__ == ["create_app"]
    for name in MODULES[1:]:
        module = importlib.import_module(name)
        names = module.__all__
        assert list(names) == sorted(names, key=str.lower) or list(names) == sorted(names), name
        for attr in names:
            assert hasattr(module, attr), f"{name}.{attr}"


def test_modules_stay_small() -> None:
    for path in [*(ROOT / "engine" / "ui").glob("*.py"), ROOT / "engine" / "cli" / "_ui_cmd.py"]:
        lines = len(path.read_text().splitlines())
        assert lines < 600, f"{path.name} has {lines} lines"


def test_the_vendored_library_is_versioned_and_licensed() -> None:
    static = ROOT / "engine" / "ui" / "static"
    (js,) = static.glob("htmx-*.min.js")
    version = js.name.removeprefix("htmx-").removesuffix(".min.js")
    assert f'version:"{version}"' in js.read_text()
    assert (static / f"htmx-{version}.LICENSE.txt").read_text().startswith("Zero-Clause BSD")
    assert js.name == engine.ui._app.HTMX
