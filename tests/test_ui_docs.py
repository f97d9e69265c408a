"""The web UI's documentation: ``docs/ui.md`` runs and prints what it says; docstrings run.

The same rule as ``tests/test_readme.py`` (the section is meant for the
README): a line ``print(...)  # text`` must print ``text``, in order.
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
TEXT = (ROOT / "docs" / "ui.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)
PRINT_COMMENT = re.compile(r"^\s*print\(.*\)\s+# (.+)$")
MODULES = ["engine.ui", "engine.ui._app", "engine.ui._graph", "engine.ui._views"]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_the_example_prints_what_its_comments_say(
    index: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    code = compile(BLOCKS[index], f"docs/ui.md[python block {index}]", "exec")
    exec(code, {"__name__": f"ui_doc_{index}"})
    printed = iter(line.strip() for line in capsys.readouterr().out.splitlines())
    for line in BLOCKS[index].splitlines():
        m = PRINT_COMMENT.match(line)
        if m is None:
            continue
        want = m.group(1).strip()
        assert any(want == got or want.startswith(got + ":") for got in printed), (
            f"block {index}: {line.strip()!r} did not print {want!r} in order"
        )


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
