"""Every ```python block of the README runs as written."""

from __future__ import annotations

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    code = compile(BLOCKS[index], f"README.md[python block {index}]", "exec")
    exec(code, {"__name__": f"readme_{index}"})
    capsys.readouterr()


def test_readme_has_the_two_commands() -> None:
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    test_command = next(line for line in ci if line.startswith("pip install"))
    assert test_command in text
    assert "pip install -e . && python -m examples.subscription" in text
