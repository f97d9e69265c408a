"""A guard against the common determinism mistakes in workflow code.

While the interpreter runs workflow code, an audit hook (PEP 578) refuses
opening files, creating sockets, and starting processes: those belong in
activities.  The hook is installed once per process and is gated by a context
variable, so activities running on other threads, and everything outside a
decision, are never affected.

What it cannot catch: reading the clock (``datetime.now()``, ``time.time()``),
``random``, iterating a ``set`` of strings (hash randomisation), global mutable
state, environment variables, or I/O done by C extensions that raise no audit
events.  Use ``Now()`` and ``SideEffect()`` for the first two; replay tests
(``engine.testing``) catch the rest.  Importing modules stays allowed: the
import system opens source and bytecode files, which the guard lets through.
"""

from __future__ import annotations

import contextvars
import sys
from typing import Any

__all__ = ["WorkflowSandboxError", "guarded", "install"]

_active: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "temporalpp_workflow", default=None
)
_FORBIDDEN = {
    "open": "opening files",
    "socket.__new__": "creating sockets",
    "socket.connect": "network connections",
    "subprocess.Popen": "starting processes",
    "os.system": "starting processes",
    "os.posix_spawn": "starting processes",
    "os.exec": "starting processes",
    "os.fork": "forking",
}
_IMPORT_SUFFIXES = (".py", ".pyc", ".so", ".pyd", ".pth", ".zip")
_installed = False


class WorkflowSandboxError(RuntimeError):
    """Workflow code did I/O; move it into an activity."""


def _hook(event: str, args: tuple[Any, ...]) -> None:
    what = _FORBIDDEN.get(event)
    if what is None:
        return
    workflow = _active.get()
    if workflow is None:
        return
    if event == "open":
        path, mode = args[0], args[1]
        if isinstance(path, str) and path.endswith(_IMPORT_SUFFIXES) and mode in (None, "r", "rb"):
            return  # the import system reading code
        if isinstance(path, str) and mode is None and _is_bytecode_tmp(path):
            return  # the import system caching bytecode (``<name>.pyc.<id>``, then renamed)
        if isinstance(path, int):
            return  # wrapping an existing file descriptor
    raise WorkflowSandboxError(
        f"workflow {workflow!r} tried {what} ({event}) while its code ran in the interpreter; "
        f"workflow code must be deterministic: do I/O in an activity (ScheduleActivity), "
        f"and use Now() or SideEffect() for time and randomness"
    )


def _is_bytecode_tmp(path: str) -> bool:
    head, _, tail = path.rpartition(".")
    return head.endswith(".pyc") and tail.isdigit()


def install() -> None:
    """Install the audit hook (idempotent; hooks cannot be removed once added)."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True


def guarded(workflow_type: str) -> contextvars.Token[str | None]:
    """Mark the current context as running ``workflow_type``'s code; reset with the token."""
    return _active.set(workflow_type)


def release(token: contextvars.Token[str | None]) -> None:
    _active.reset(token)
