"""The one error tree of Temporal++.

::

    WorkflowError
    ├── ActivityError              an activity failed after its retries (thrown into the workflow)
    ├── ChildWorkflowError         a child workflow failed (thrown into the parent)
    ├── CancelledError             cancellation reached the workflow (thrown in at its yield)
    ├── NonDeterminismError        the code no longer fits its recorded history
    ├── WorkflowFailedError        Client.result() of a failed or terminated run
    ├── WorkflowAlreadyStartedError  an id is running (or the id-reuse policy refuses it)
    ├── WorkflowNotFoundError      no such workflow id
    ├── WorkflowAlreadyClosedError the run is closed (a signal or result came too late)
    ├── ConflictError              a decision lost the race to another decision (stores)
    ├── CorruptionError            stored bytes fail their checksum or hash (stores, CAS)
    ├── StoreError                 the store itself failed (I/O error, disk full, busy too long)
    └── PayloadError               a payload cannot be written or read
        ├── PayloadTooLargeError   above the codec's hard limit (never retried)
        └── PayloadKeyError        its encryption key is missing, wrong, or was deleted

Backends translate their own exceptions (sqlite3, OS locks, Azure SDK) into these
with ``raise ... from exc``.  ``TimeoutError`` (a ``WaitSignal`` deadline) is the
builtin one, so ``except TimeoutError`` reads naturally in workflow code.
"""

from __future__ import annotations


class WorkflowError(Exception):
    """Base class of every error Temporal++ raises on purpose."""


class ActivityError(WorkflowError):
    """An activity failed for good: its retries are exhausted or the error is non-retryable.

    ``type`` and ``message`` describe the last attempt's exception; ``attempt`` is
    how many attempts were made.
    """

    def __init__(self, activity_type: str, type: str, message: str, attempt: int) -> None:
        super().__init__(
            f"activity {activity_type!r} failed after {attempt} attempt(s): {type}: {message}"
        )
        self.activity_type = activity_type
        self.type = type
        self.message = message
        self.attempt = attempt


class ChildWorkflowError(WorkflowError):
    """A child workflow failed, was cancelled or terminated, or could not start."""

    def __init__(self, workflow_type: str, workflow_id: str, type: str, message: str) -> None:
        super().__init__(
            f"child workflow {workflow_type!r} ({workflow_id!r}) failed: {type}: {message}"
        )
        self.workflow_type = workflow_type
        self.workflow_id = workflow_id
        self.type = type
        self.message = message


class CancelledError(WorkflowError):
    """Cancellation was requested; thrown into the workflow at its current yield."""


class NonDeterminismError(WorkflowError):
    """The workflow code yielded something other than what its history recorded."""


class WorkflowFailedError(WorkflowError):
    """The run failed or was terminated; ``__cause__`` carries the original error."""


class WorkflowAlreadyStartedError(WorkflowError):
    """A run with this workflow id is running, or the id-reuse policy forbids a new one."""


class WorkflowNotFoundError(WorkflowError):
    """No workflow with this id is known to the store."""


class WorkflowAlreadyClosedError(WorkflowError):
    """The run has closed: it takes no more signals, cancel requests or results."""


class ConflictError(WorkflowError):
    """Another decision was appended since the one this decision saw."""


class CorruptionError(WorkflowError):
    """Stored bytes do not match their checksum or content hash."""


class RemoteError(Exception):
    """Stands in for an exception raised elsewhere (an activity, another run).

    ``type`` is the original exception's qualified type name.  Used as the
    ``__cause__`` of :class:`ActivityError` and :class:`WorkflowFailedError` so
    tracebacks show what really happened.
    """

    def __init__(self, type: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.traceback = traceback


class StoreError(WorkflowError):
    """The store could not do what was asked (I/O error, disk full, busy past its timeout).

    ``__cause__`` holds the backend's own exception.
    """


class PayloadError(WorkflowError):
    """A payload cannot be written or read (see the subclasses)."""


class PayloadTooLargeError(PayloadError, ValueError):
    """An encoded payload is above the codec's hard limit (``max_payload``).

    An activity whose result is too large fails at once, without retries; a
    call (``Client.start``, ``signal``) raises this to the caller.
    """


class PayloadKeyError(PayloadError):
    """An encrypted payload's key is not in the keyring, does not fit, or was deleted."""
