"""Exceptions as data (``Failure``) and back (``RemoteError`` chains)."""

from __future__ import annotations

import traceback

from ._errors import RemoteError
from ._events import Failure

__all__ = ["failure_from", "remote_error"]


def failure_from(exc: BaseException) -> Failure:
    """An exception as a ``Failure`` (type, message, traceback, cause chain)."""
    if isinstance(exc, RemoteError):
        kind, message, tb = exc.type, exc.message, exc.traceback
    else:
        cls = type(exc)
        kind = (
            cls.__qualname__
            if cls.__module__ == "builtins"
            else f"{cls.__module__}.{cls.__qualname__}"
        )
        message = str(exc)
        tb = "".join(traceback.format_exception(exc, chain=False))
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return Failure(
        type=kind,
        message=message,
        traceback=tb,
        cause=failure_from(cause) if cause is not None else None,
    )


def remote_error(failure: Failure) -> RemoteError:
    """The ``RemoteError`` chain that stands for a recorded failure."""
    err = RemoteError(failure.type, failure.message, failure.traceback)
    if failure.cause is not None:
        err.__cause__ = remote_error(failure.cause)
    return err
