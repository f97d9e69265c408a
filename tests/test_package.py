"""The package's public surface: complete sorted ``__all__``, binding names, purity."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import engine
import engine.events

ROOT = pathlib.Path(__file__).resolve().parent.parent

BINDING = """workflow activity ScheduleActivity Timer WaitSignal All Any StartChildWorkflow
SideEffect Now Patched ContinueAsNew SetQuery RetryPolicy WorkflowError ActivityError
ChildWorkflowError CancelledError NonDeterminismError WorkflowFailedError
WorkflowAlreadyStartedError WorkflowNotFoundError ConflictError CorruptionError""".split()

EVENTS = """WorkflowStarted WorkflowTaskCompleted ActivityScheduled ActivityCompleted ActivityFailed
ActivityAttemptFailed TimerStarted TimerFired TimerCancelled SignalReceived CancelRequested
ChildWorkflowStarted ChildWorkflowCompleted ChildWorkflowFailed MarkerRecorded WorkflowCompleted
WorkflowFailed WorkflowCancelled WorkflowTerminated WorkflowContinuedAsNew""".split()


def test_all_is_sorted_and_complete() -> None:
    for module in (engine, engine.events):
        names = module.__all__
        assert list(names) == sorted(names), f"{module.__name__}.__all__ is not sorted"
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.{name} is missing"
        public = {
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and not isinstance(v, type(engine))
        }
        assert public <= set(names) | {"annotations"}, public - set(names)


def test_binding_names_are_exported() -> None:
    for name in BINDING:
        assert name in engine.__all__, name
    for name in EVENTS:
        assert name in engine.events.__all__, name
        assert getattr(engine.events, name).__name__ == name


def test_errors_share_one_base() -> None:
    for name in BINDING:
        obj = getattr(engine, name)
        if name.endswith("Error") and name != "WorkflowError":
            assert issubclass(obj, engine.WorkflowError), name


CORE = [
    "_interpreter.py",
    "_events.py",
    "_commands.py",
    "_codec.py",
    "_defs.py",
    "_retry.py",
    "_waits.py",
    "_failures.py",
]
FORBIDDEN = {
    "os", "io", "time", "random", "threading", "asyncio", "socket", "subprocess", "uuid",
    "secrets", "sqlite3", "pathlib", "shutil", "tempfile", "stores", "cas", "concurrent",
    "multiprocessing", "signal", "select",
}


def test_core_imports_no_io_clock_random_or_threads() -> None:
    for name in CORE:
        tree = ast.parse((ROOT / "engine" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                assert mod.split(".")[0] not in FORBIDDEN, f"engine/{name} imports {mod}"


def test_import_engine_does_not_import_hypothesis() -> None:
    code = "import sys, engine, engine.events; print('hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tpp_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("temporalpp ")
