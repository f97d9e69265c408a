"""The README's pipelines section says what is true.

Its Python runs and prints what its comments say through ``tests/test_readme.py``
(every README block does); here, the Mermaid block is the golden drawing of the
re-run it describes, the TOML block is the example file, and the error lines
quote real messages.
"""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
_START = README.index("## Pipelines: DAGs of tasks in TOML")
TEXT = README[_START : README.index("\n## ", _START + 1)]
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)


def test_there_is_an_example() -> None:
    assert BLOCKS


def test_the_mermaid_block_is_a_real_drawing() -> None:
    (block,) = re.findall(r"```mermaid\n(.*?)```", TEXT, re.S)
    assert "%% nightly: pipeline:reindex (COMPLETED)" in block
    assert "4/4 done (3 reused)" in block and "class snapshot,fetch,split reused" in block


def test_the_toml_block_is_the_example_file() -> None:
    (block,) = re.findall(r"```toml\n(.*?)```", TEXT, re.S)
    example = (ROOT / "examples" / "pipelines" / "reindex.toml").read_text()

    def keys(text: str) -> list[str]:
        return [
            line.split("#")[0].strip()
            for line in text.splitlines()
            if line.split("#")[0].strip() and not line.lstrip().startswith(("timeout", "#"))
        ]

    assert [k for k in keys(block) if k != "retry = 5"] == [
        k for k in keys(example) if k != "retry = 5"
    ]
