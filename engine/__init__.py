"""Temporal++: durable workflows as Python generators, replayed from an event history.

>>> from engine import workflow, activity, ScheduleActivity
>>> @activity
... def greet(name: str) -> str:
...     return f"hello {name}"
>>> @workflow
... def hello(name: str):
...     return (yield ScheduleActivity(greet, name))
"""

from ._codec import Codec, JsonCodec
from ._commands import (
    All,
    Any,
    ContinueAsNew,
    Now,
    Patched,
    ScheduleActivity,
    SetQuery,
    SideEffect,
    StartChildWorkflow,
    Timer,
    WaitSignal,
)
from ._defs import activity, workflow
from ._errors import (
    ActivityError,
    CancelledError,
    ChildWorkflowError,
    ConflictError,
    CorruptionError,
    NonDeterminismError,
    RemoteError,
    WorkflowAlreadyStartedError,
    WorkflowError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from ._guard import WorkflowSandboxError
from ._interpreter import Decision, Interpreter, decide
from ._retry import RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "ActivityError",
    "All",
    "Any",
    "CancelledError",
    "ChildWorkflowError",
    "Codec",
    "ConflictError",
    "ContinueAsNew",
    "CorruptionError",
    "Decision",
    "Interpreter",
    "JsonCodec",
    "NonDeterminismError",
    "Now",
    "Patched",
    "RemoteError",
    "RetryPolicy",
    "ScheduleActivity",
    "SetQuery",
    "SideEffect",
    "StartChildWorkflow",
    "Timer",
    "WaitSignal",
    "WorkflowAlreadyStartedError",
    "WorkflowError",
    "WorkflowFailedError",
    "WorkflowNotFoundError",
    "WorkflowSandboxError",
    "__version__",
    "activity",
    "decide",
    "workflow",
]
