"""The sandbox guard: workflow code may not do I/O while the interpreter runs it."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Generator
from typing import Any

import pytest

from engine import NonDeterminismError, ScheduleActivity, Timer, WorkflowSandboxError, workflow
from engine.events import WorkflowCompleted, WorkflowFailed
from tests.history import History


def run_io(action: Callable[[], Any]) -> History:
    """Run a workflow that does ``action`` after its first timer, catching what it raises."""

    @workflow
    def wf() -> Generator[Any, Any, Any]:
        yield Timer(1)
        try:
            action()
        except WorkflowSandboxError as exc:
            return ["blocked", str(exc)]
        return ["allowed", None]

    return History(wf).decide().fire(1).decide()


def test_opening_a_file_is_refused(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "out.txt"
    h = run_io(lambda: target.write_text("x"))
    verdict, message = h.result()
    assert verdict == "blocked"
    assert message.startswith("workflow 'wf' tried opening files (open) while its code ran")
    assert "do I/O in an activity (ScheduleActivity)" in message
    assert not target.exists()
    # reading is refused too, and so is os.open
    target.write_text("data")
    assert run_io(target.read_text).result()[0] == "blocked"
    assert run_io(lambda: os.open(target, os.O_RDONLY)).result()[0] == "blocked"
    # the import system's read-only opens of code are let through
    code = tmp_path / "m.py"
    code.write_text("x = 1\n")
    assert run_io(lambda: open(code, "rb").close()).result()[0] == "allowed"


def test_creating_a_socket_is_refused() -> None:
    assert run_io(socket.socket).result()[0] == "blocked"


def test_starting_a_process_is_refused() -> None:
    verdict, message = run_io(lambda: subprocess.run(["true"], check=False)).result()
    assert verdict == "blocked"
    assert "starting processes (subprocess.Popen)" in message
    assert run_io(lambda: os.system("true")).result()[0] == "blocked"


def test_an_uncaught_sandbox_error_fails_the_run(tmp_path: pathlib.Path) -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        yield Timer(1)
        (tmp_path / "log.txt").write_text("side effect")

    h = History(wf).decide().fire(1).decide()
    closing = h.closing
    assert isinstance(closing, WorkflowFailed)
    assert closing.error.type == "engine._guard.WorkflowSandboxError"
    assert "tried opening files" in closing.error.message
    assert not (tmp_path / "log.txt").exists()


def test_io_outside_a_decision_still_works(tmp_path: pathlib.Path) -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        yield Timer(1)

    h = History(wf).decide()
    # after decide returns
    (tmp_path / "after.txt").write_text("ok")
    assert (tmp_path / "after.txt").read_text() == "ok"
    socket.socket().close()
    assert subprocess.run([sys.executable, "-c", "pass"], check=False).returncode == 0
    h.fire(1).decide()
    assert isinstance(h.closing, WorkflowCompleted)
    (tmp_path / "closed.txt").write_text("ok")


def test_io_in_another_thread_during_a_decision_still_works(tmp_path: pathlib.Path) -> None:
    written: list[str] = []

    def worker_thread() -> None:
        (tmp_path / "thread.txt").write_text("from a thread")
        written.append((tmp_path / "thread.txt").read_text())

    @workflow
    def wf() -> Generator[Any, Any, Any]:
        yield Timer(1)
        t = threading.Thread(target=worker_thread)
        t.start()
        t.join()
        return "joined"

    h = History(wf, verify=False).decide().fire(1).decide()
    assert h.result() == "joined"
    assert written == ["from a thread"]


def test_the_guard_is_lifted_after_the_workflow_fails_to_replay(tmp_path: pathlib.Path) -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        yield Timer(1)

    @workflow(name="wf")
    def changed() -> Generator[Any, Any, Any]:
        yield Timer(2)

    h = History(wf).decide()
    with pytest.raises(NonDeterminismError):
        h.replay(changed)
    (tmp_path / "fine.txt").write_text("ok")


def test_importing_inside_workflow_code_works(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a module never imported before, with bytecode caching on (the import
    # system writes <name>.pyc.<id> and renames it), as it is for most users
    (tmp_path / "guard_fresh_module.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)

    @workflow
    def wf() -> Generator[Any, Any, Any]:
        yield Timer(1)
        import json.tool  # a standard-library submodule

        import guard_fresh_module  # type: ignore[import-not-found]

        return [guard_fresh_module.VALUE, json.tool.__name__]

    try:
        h = History(wf, verify=False).decide().fire(1).decide()
        assert h.result() == [42, "json.tool"]
        assert list((tmp_path / "__pycache__").glob("guard_fresh_module.*.pyc"))
    finally:
        sys.modules.pop("guard_fresh_module", None)


def test_wrapping_an_open_file_descriptor_is_allowed(tmp_path: pathlib.Path) -> None:
    fd = os.open(tmp_path / "fd.txt", os.O_RDWR | os.O_CREAT)
    try:
        h = run_io(lambda: open(fd, "w", closefd=False).close())
        assert h.result()[0] == "allowed"
    finally:
        os.close(fd)


def test_finally_blocks_run_under_the_guard_when_a_run_is_terminated(
    tmp_path: pathlib.Path,
) -> None:
    @workflow
    def wf() -> Generator[Any, Any, Any]:
        try:
            yield ScheduleActivity("work")
        finally:
            (tmp_path / "finally.txt").write_text("leaked")

    h = History(wf).decide().terminate().decide()
    assert h.closing is not None
    assert not (tmp_path / "finally.txt").exists()
