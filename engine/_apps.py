"""Loading an application (its workflows and activities) by name, for ``tpp worker`` and ``verify``.

An *app spec* names where the code is; there is no global registry, the spec
is the registry.  Four forms:

* ``package.module:attr``: ``attr`` is an object listing the app's code:
  anything with ``workflows`` and ``activities`` attributes (a
  ``types.SimpleNamespace``, a class, a module) or a dict with those keys;
  or a function that takes the store (or nothing) and returns such an object
  or a configured :class:`~engine.Worker`;
* ``package.module``: the module's own ``workflows``/``activities`` attributes
  if it has them, else every ``@workflow`` and ``@activity`` function defined
  or imported at its top level;
* ``path/to/file.py`` and ``path/to/file.py:attr``: the same for a file.

The current directory is importable, as with ``python -m``::

    # myapp.py
    from types import SimpleNamespace
    app = SimpleNamespace(workflows=[order], activities=[ship, bill])

    $ tpp worker --app myapp:app

Bound methods can be activities only through an explicit list (a factory
builds the object): discovery takes module-level functions, never methods.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pathlib
import re
import sys
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._defs import ActivityDefinition, WorkflowDefinition, activity_definition, workflow_definition

if TYPE_CHECKING:
    from stores._protocol import Store

    from ._worker import Worker

__all__ = ["App", "AppError", "load_app"]

_MARK = "__temporalpp__"


class AppError(Exception):
    """An app spec that names nothing usable (a user mistake, reported in one line)."""


class App:
    """An app's workflows (by type name) and activities, and where they came from.

    ``factory`` is set when the spec named a function: it is called with the
    store to build the object (or the ``Worker``) when a worker is made.
    """

    def __init__(
        self,
        spec: str,
        workflows: Iterable[Any] = (),
        activities: Iterable[Any] = (),
        *,
        factory: Callable[..., Any] | None = None,
    ) -> None:
        self.spec = spec
        self.workflows: dict[str, Callable[..., Any]] = {}
        self.activities: list[Any] = []
        self.factory = factory
        self._add(workflows, activities)

    def _add(self, workflows: Iterable[Any], activities: Iterable[Any]) -> None:
        for fn in workflows:
            try:
                self.workflows[workflow_definition(fn).name] = fn
            except TypeError as exc:
                raise AppError(f"app {self.spec!r}: {exc}") from None
        for fn in activities:
            try:
                activity_definition(fn)
            except TypeError as exc:
                raise AppError(f"app {self.spec!r}: {exc}") from None
            self.activities.append(fn)

    @property
    def activity_names(self) -> list[str]:
        """The activity type names, sorted."""
        return sorted(activity_definition(fn).name for fn in self.activities)

    def worker(self, store: Store, **options: Any) -> Worker:
        """A ``Worker`` for this app on ``store`` (``options`` go to ``Worker``).

        For a factory app, the factory is called with the store; if it returns a
        ``Worker``, that worker is used as built and ``options`` must be empty.
        """
        from ._worker import Worker

        if self.factory is not None:
            made = _call_factory(self.spec, self.factory, store)
            if isinstance(made, Worker):
                if options:
                    raise AppError(
                        f"app {self.spec!r} builds its own Worker; set "
                        f"{', '.join(sorted(options))} there instead of on the command line"
                    )
                return made
            self._add(*_lists(self.spec, made))
            self.factory = None
        if not self.workflows and not self.activities:
            raise AppError(f"app {self.spec!r} has no workflows and no activities")
        return Worker(
            store, workflows=self.workflows.values(), activities=self.activities, **options
        )

    def resolve(self, store: Store | None = None) -> App:
        """Call the factory (if any) so that ``workflows`` is complete; returns ``self``."""
        from ._worker import Worker

        if self.factory is not None:
            made = _call_factory(self.spec, self.factory, store)
            if isinstance(made, Worker):
                raise AppError(
                    f"app {self.spec!r} returns a Worker, which does not list its workflows; "
                    f"give verify an object with `workflows` and `activities` instead"
                )
            self._add(*_lists(self.spec, made))
            self.factory = None
        return self


def _call_factory(spec: str, factory: Callable[..., Any], store: Store | None) -> Any:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        params = {}  # type: ignore[assignment]
    required = [
        p
        for p in params.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(required) > 1:
        raise AppError(f"app factory {spec!r} must take the store or nothing")
    try:
        return factory(store) if required else factory()
    except AppError:
        raise
    except Exception as exc:
        raise AppError(f"app factory {spec!r} failed: {type(exc).__name__}: {exc}") from exc


def _lists(spec: str, obj: Any) -> tuple[list[Any], list[Any]]:
    """The ``workflows`` and ``activities`` an app object lists."""
    if isinstance(obj, dict):
        if "workflows" not in obj and "activities" not in obj:
            raise AppError(f"app {spec!r} is a dict without 'workflows' or 'activities' keys")
        workflows, activities = obj.get("workflows", ()), obj.get("activities", ())
    elif hasattr(obj, "workflows") or hasattr(obj, "activities"):
        workflows = getattr(obj, "workflows", ())
        activities = getattr(obj, "activities", ())
    else:
        raise AppError(
            f"app {spec!r} is a {type(obj).__name__}: expected an object with `workflows` and "
            f"`activities` attributes, a dict with those keys, or a function returning one "
            f"(or a Worker)"
        )
    try:
        return list(workflows), list(activities)
    except TypeError:
        raise AppError(f"app {spec!r}: `workflows` and `activities` must be lists") from None


def discover(module: ModuleType) -> tuple[list[Any], list[Any]]:
    """The ``@workflow`` and ``@activity`` functions at the top level of ``module``."""
    workflows: list[Any] = []
    activities: list[Any] = []
    for value in vars(module).values():
        if not inspect.isfunction(value):
            continue
        mark = getattr(value, _MARK, None)
        if isinstance(mark, WorkflowDefinition):
            workflows.append(value)
        elif isinstance(mark, ActivityDefinition) and "." not in value.__qualname__:
            activities.append(value)  # NB: methods need an instance: list them explicitly
    return workflows, activities


def _import_file(spec: str, path: pathlib.Path) -> ModuleType:
    if not path.is_file():
        raise AppError(f"app file {str(path)!r} does not exist")
    name = "tpp_app_" + re.sub(r"\W", "_", path.stem)
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:  # pragma: no cover - a .py file
        raise AppError(f"cannot load {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # dataclasses and msgspec look their module up by name
    _with_path(str(path.resolve().parent))
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise AppError(f"importing app {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _import_module(spec: str, name: str) -> ModuleType:
    _with_path(str(pathlib.Path.cwd()))
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise AppError(
                f"app {spec!r}: no module named {exc.name!r} (run from the directory that "
                f"holds it, or give a path: --app path/to/file.py)"
            ) from None
        raise AppError(f"importing app {spec!r} failed: {exc}") from exc
    except Exception as exc:
        raise AppError(f"importing app {spec!r} failed: {type(exc).__name__}: {exc}") from exc


def _with_path(directory: str) -> None:
    if directory not in sys.path:
        sys.path.insert(0, directory)


def load_app(spec: str) -> App:
    """Load the app named by ``spec`` (see the module docstring); ``AppError`` if unusable.

    >>> app = load_app("examples.expense_approval")
    >>> sorted(app.workflows), app.activity_names
    (['expense_report'], ['escalate', 'notify', 'reimburse'])
    """
    if not isinstance(spec, str) or not spec.strip():
        raise AppError("an app spec must be 'module:attr', 'module' or 'path/to/file.py'")
    target, _, attr = spec.rpartition(":") if _has_attr(spec) else (spec, "", "")
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _import_file(spec, pathlib.Path(target))
    else:
        module = _import_module(spec, target)
    if not attr:
        if hasattr(module, "workflows") or hasattr(module, "activities"):
            return App(spec, *_lists(spec, module))
        workflows, activities = discover(module)
        if not workflows and not activities:
            raise AppError(
                f"app {spec!r}: module {module.__name__!r} has no @workflow or @activity "
                f"functions (name an object with --app {target}:attr)"
            )
        return App(spec, workflows, activities)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppError(f"app {spec!r}: {module.__name__!r} has no attribute {attr!r}") from None
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        if isinstance(getattr(obj, _MARK, None), WorkflowDefinition | ActivityDefinition):
            raise AppError(
                f"app {spec!r} names one @workflow/@activity function; name an object that "
                f"lists them, or the module ({target})"
            )
        return App(spec, factory=obj)
    return App(spec, *_lists(spec, obj))


def _has_attr(spec: str) -> bool:
    """Whether ``spec`` ends in ``:attr`` (and not a Windows drive letter)."""
    head, sep, tail = spec.rpartition(":")
    return bool(sep) and bool(head) and len(head) > 1 and re.fullmatch(r"[\w.]+", tail) is not None
