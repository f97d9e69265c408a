"""Every ```python block of the README runs as written."""

from __future__ import annotations

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


PRINT_COMMENT = re.compile(r"^\s*print\(.*\)\s+# (.+)$")


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(
    index: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each block runs, and prints what its comments say.

    A line ``print(...)  # text`` must print ``text``, or ``text`` may go on to
    explain (``# True: why``); the printed lines must come in the same order.
    """
    monkeypatch.chdir(README.parent)  # examples name files relative to the repository
    code = compile(BLOCKS[index], f"README.md[python block {index}]", "exec")
    exec(code, {"__name__": f"readme_{index}"})
    printed = iter(line.strip() for line in capsys.readouterr().out.splitlines())
    for line in BLOCKS[index].splitlines():
        m = PRINT_COMMENT.match(line)
        if m is None:
            continue
        want = m.group(1).strip()
        assert any(want == got or want.startswith(got + ":") for got in printed), (
            f"README block {index}: {line.strip()!r} did not print {want!r} in order"
        )


def test_readme_has_the_two_commands() -> None:
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    at = next(i for i, line in enumerate(ci) if 'pip install -e ".[dev]"' in line)
    test_command = ci[at]
    # CI must fail when the README's test command fails (set -e alone would not notice)
    assert ci[at - 1] == "set +e" and ci[at + 1] == "rc=$?", ci[at - 1 : at + 2]
    assert test_command in text
    assert "pip install -e . && python -m examples.subscription" in text
