"""The README's section on ``tpp`` documents every command, and its walkthrough runs."""

from __future__ import annotations

import os
import pathlib
import re
import socket
import subprocess
import sys

import pytest

from .clikit import ROOT
from .test_cli import COMMANDS

README = ROOT / "README.md"


def section() -> str:
    """The README's "The `tpp` command line" section."""
    text = README.read_text()
    start = text.index("## The `tpp` command line")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_every_command_is_documented_with_an_example() -> None:
    text = README.read_text()  # the tpp section, and the pipelines section for its commands
    blocks = "\n".join(re.findall(r"```sh\n(.*?)```", text, re.S))
    for path in COMMANDS:
        command = "tpp " + " ".join(path)
        assert command in text, f"{command} is not documented"
        if path not in (("workflow",), ("store",)):
            assert command in blocks, f"{command} has no example"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.ci
def test_the_documented_commands_run(tmp_path: pathlib.Path) -> None:
    script = "\n".join(re.findall(r"```sh\n(.*?)```", section(), re.S))
    for old, new in [
        ("/tmp/tpp-demo-copy.db", str(tmp_path / "copy.db")),
        ("/tmp/tpp-demo", str(tmp_path / "demo")),
        ("/tmp/exp-1.json", str(tmp_path / "exp-1.json")),
        ("9464", str(_free_port())),
    ]:
        script = script.replace(old, new)
    env = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("TPP_STORE", None)
    out = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert '"approved"' in out.stdout and "4 histories: 4 ok" in out.stdout
    assert "tpp_workflows_in_flight" in out.stdout
    assert "Traceback" not in out.stderr
