"""Temporal++: durable workflows as Python generators, replayed from an event history.

>>> from engine import workflow, activity, ScheduleActivity
>>> @activity
... def greet(name: str) -> str:
...     return f"hello {name}"
>>> @workflow
... def hello(name: str):
...     return (yield ScheduleActivity(greet, name))
"""

from ._client import Client, run
from ._clock import Clock, SystemClock, VirtualClock
from ._codec import Codec, JsonCodec, MsgpackCodec
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
from ._context import ActivityContext, activity_context
from ._defs import activity, workflow
from ._errors import (
    ActivityError,
    CancelledError,
    ChildWorkflowError,
    ConflictError,
    CorruptionError,
    NonDeterminismError,
    PayloadError,
    PayloadKeyError,
    PayloadTooLargeError,
    RemoteError,
    StoreError,
    WorkflowAlreadyClosedError,
    WorkflowAlreadyStartedError,
    WorkflowError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from ._guard import WorkflowSandboxError
from ._info import IdReusePolicy, Status, WorkflowInfo, WorkflowPage
from ._interpreter import Decision, Interpreter, decide
from ._keys import FileKeyVault, KeyVault, MemoryKeyVault
from ._payloads import Keyring, PayloadCodec
from ._retry import RetryPolicy
from ._worker import Worker

__version__ = "0.1.0"

__all__ = [
    "ActivityContext",
    "ActivityError",
    "All",
    "Any",
    "CancelledError",
    "ChildWorkflowError",
    "Client",
    "Clock",
    "Codec",
    "ConflictError",
    "ContinueAsNew",
    "CorruptionError",
    "Decision",
    "FileKeyVault",
    "IdReusePolicy",
    "Interpreter",
    "JsonCodec",
    "KeyVault",
    "Keyring",
    "MemoryKeyVault",
    "MsgpackCodec",
    "NonDeterminismError",
    "Now",
    "Patched",
    "PayloadCodec",
    "PayloadError",
    "PayloadKeyError",
    "PayloadTooLargeError",
    "RemoteError",
    "RetryPolicy",
    "ScheduleActivity",
    "SetQuery",
    "SideEffect",
    "StartChildWorkflow",
    "Status",
    "StoreError",
    "SystemClock",
    "Timer",
    "VirtualClock",
    "WaitSignal",
    "Worker",
    "WorkflowAlreadyClosedError",
    "WorkflowAlreadyStartedError",
    "WorkflowError",
    "WorkflowFailedError",
    "WorkflowInfo",
    "WorkflowNotFoundError",
    "WorkflowPage",
    "WorkflowSandboxError",
    "__version__",
    "activity",
    "activity_context",
    "decide",
    "run",
    "workflow",
]
