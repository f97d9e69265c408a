"""``@workflow`` and ``@activity``: marking functions, and what replay needs to know of them.

The decorators return the function itself (still callable, still testable) with a
definition attached; there is no global registry, so two workers with different
registries in one process just work.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Generator
from typing import Any, TypeVar, overload

__all__ = ["ActivityDefinition", "WorkflowDefinition", "activity", "workflow"]

F = TypeVar("F", bound=Callable[..., Any])
_ATTR = "__temporalpp__"


class _Definition:
    __slots__ = ("_param_types", "_result_type", "fn", "name")

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a type name must be a non-empty string, got {name!r}")
        self.fn = fn
        self.name = name
        self._param_types: tuple[list[Any], Any] | None = None
        self._result_type: Any = None

    def _hints(self) -> dict[str, Any]:
        try:
            return typing.get_type_hints(self.fn)
        except Exception:  # unresolvable forward references: fall back to untyped
            return {}

    def param_types(self) -> tuple[list[Any], Any]:
        """Types of the positional parameters, and of ``*args`` (or ``None``)."""
        if self._param_types is None:
            hints = self._hints()
            positional: list[Any] = []
            star: Any = None
            for p in inspect.signature(self.fn).parameters.values():
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                    positional.append(hints.get(p.name, Any))
                elif p.kind is p.VAR_POSITIONAL:
                    star = hints.get(p.name, Any)
            self._param_types = (positional, star)
        return self._param_types

    def result_type(self) -> Any:
        if self._result_type is None:
            tp = self._hints().get("return", Any)
            if typing.get_origin(tp) is Generator:
                args = typing.get_args(tp)
                tp = args[2] if len(args) == 3 else Any
            elif inspect.isgeneratorfunction(self.fn):
                # the annotation describes the generator (a bare Generator, an
                # Iterator[...]); only Generator[Y, S, R] names the result type
                tp = Any
            self._result_type = Any if tp is None or tp is type(None) else tp
        return self._result_type


class WorkflowDefinition(_Definition):
    """A workflow type: its name and its generator function."""

    __slots__ = ()


class ActivityDefinition(_Definition):
    """An activity type: its name and its function (``def`` or ``async def``)."""

    __slots__ = ("is_async",)

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        super().__init__(fn, name)
        self.is_async = inspect.iscoroutinefunction(fn)


@overload
def workflow(fn: F, /) -> F: ...
@overload
def workflow(*, name: str | None = None) -> Callable[[F], F]: ...
def workflow(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Mark a generator function as a workflow (``@workflow`` or ``@workflow(name=...)``).

    >>> from engine import workflow, Timer
    >>> @workflow
    ... def nap():
    ...     yield Timer(1)
    ...     return "rested"
    """

    def mark(f: Any) -> Any:
        if not inspect.isgeneratorfunction(f):
            raise TypeError(
                f"@workflow needs a generator function (one that yields commands); "
                f"{getattr(f, '__qualname__', f)!r} is not one"
            )
        setattr(f, _ATTR, WorkflowDefinition(f, name or f.__name__))
        return f

    return mark if fn is None else mark(fn)


@overload
def activity(fn: F, /) -> F: ...
@overload
def activity(*, name: str | None = None) -> Callable[[F], F]: ...
def activity(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Mark a function (``def`` or ``async def``) or method as an activity."""

    def mark(f: Any) -> Any:
        if not callable(f):
            raise TypeError(f"@activity needs a function, got {f!r}")
        setattr(f, _ATTR, ActivityDefinition(f, name or f.__name__))
        return f

    return mark if fn is None else mark(fn)


def workflow_definition(fn: Any) -> WorkflowDefinition:
    """The definition of a ``@workflow`` function; a clear error for anything else."""
    d = getattr(fn, _ATTR, None)
    if isinstance(d, WorkflowDefinition):
        return d
    raise TypeError(
        f"{getattr(fn, '__qualname__', fn)!r} is not a workflow: decorate it with @workflow"
    )


def activity_definition(fn: Any) -> ActivityDefinition:
    """The definition of an activity; an undecorated function or bound method is accepted."""
    d = getattr(fn, _ATTR, None)
    if isinstance(d, ActivityDefinition):
        if inspect.ismethod(fn):  # bound method: keep the binding, reuse the name
            return ActivityDefinition(fn, d.name)
        return d
    if isinstance(d, WorkflowDefinition):
        raise TypeError(f"{d.name!r} is a workflow, not an activity")
    if callable(fn) and hasattr(fn, "__name__"):
        return ActivityDefinition(fn, fn.__name__)
    raise TypeError(f"an activity must be a function or a type name string, got {fn!r}")


def type_name(target: Any, what: str) -> str:
    """The type name of a function or name string given to a command."""
    if isinstance(target, str):
        if not target:
            raise TypeError(f"{what} type name must not be empty")
        return target
    d = getattr(target, _ATTR, None)
    if isinstance(d, _Definition):
        return d.name
    name = getattr(target, "__name__", None)
    if callable(target) and isinstance(name, str):
        return name
    raise TypeError(f"{what} must be a function or a type name string, got {target!r}")


def result_type_of(target: Any) -> Any:
    """The annotated result type of a command's target (``Any`` for a name string)."""
    if isinstance(target, str):
        return Any
    d = getattr(target, _ATTR, None)
    if isinstance(d, _Definition):
        return d.result_type()
    if callable(target):
        return ActivityDefinition(target, type_name(target, "activity")).result_type()
    return Any  # pragma: no cover - type_name() rejected it already
