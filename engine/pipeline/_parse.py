"""Reading pipeline files: TOML, Mermaid edges, validation with line-precise errors.

``load``/``loads`` read one pipeline (``load_project``, in ``_project``, a ``Project.toml``).
Every problem found is reported, each with its file and line, in one
:class:`PipelineError` (a ``ValueError``): a TOML syntax error, a missing or
unknown key, an unknown task in the graph, a task not in the graph, a cycle,
a ``fan_out`` without exactly one predecessor, a missing or unimportable
``type``, a bad duration or retry count.

``tomllib`` gives values without positions, so :class:`_Locator` finds them
in the text: table headers, the ``key =`` lines inside a table, and the lines
of the multi-line ``graph`` string.  Task ``type``\\ s are imported here, when
the file is loaded; a name read from a history is never imported.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import itertools
import os
import pathlib
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from .._defs import WorkflowDefinition
from ._model import Pipeline, Task

__all__ = ["PipelineError", "Problem", "load", "loads", "parse_duration", "read"]

_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_PIPELINE_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_TYPE: Final = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_HEADER: Final = re.compile(r"(flowchart|graph)(\s+(TB|TD|BT|RL|LR))?", re.I)
_DURATION: Final = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))+")
_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: Words Mermaid reads as keywords, which would break a drawn graph.
_RESERVED: Final = frozenset(
    "end graph flowchart subgraph style class classDef linkStyle click call href direction".split()
)
_PIPELINE_KEYS: Final = ("name", "description", "graph")
_OPTION_KEYS: Final = ("timeout", "retry", "retry_delay")
_TASK_KEYS: Final = ("name", "type", "fan_out", "description", *_OPTION_KEYS)
_DEFAULTS: Final[dict[str, Any]] = {
    "retry": 3,
    "retry_delay": timedelta(seconds=1),
    "timeout": None,
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pipeline file, and where."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class PipelineError(ValueError):
    """A pipeline or project file that cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.path, p.line))
        super().__init__("\n".join(str(p) for p in self.problems))


def _toml(value: Any) -> str:
    """``value`` as TOML writes it (``true``, not ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def parse_duration(value: Any, key: str = "timeout") -> timedelta:
    """A duration from a pipeline file: ``"5m"``, ``"30s"``, ``"1h30m"``, ``"250ms"``, or ms.

    >>> parse_duration("1m30s"), parse_duration(5000)
    (datetime.timedelta(seconds=90), datetime.timedelta(seconds=5))
    """
    hint = "use an integer of milliseconds (5000) or a string like '250ms', '30s', '5m', '1h'"
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"{key} must be positive, got {value} ms")
        return timedelta(milliseconds=value)
    if not isinstance(value, str):
        raise ValueError(f"{key} = {_toml(value)} is not a duration: {hint}")
    text = value.strip()
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{key} = {value!r} is not a duration: {hint}")
    seconds = sum(float(n) * _UNIT[unit] for n, unit in _PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"{key} must be positive, got {value!r}")
    return timedelta(seconds=seconds)


def _importable(directory: pathlib.Path) -> None:
    """Make ``directory`` importable, as ``python -m`` does for the current one."""
    entry = str(directory.resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)


def resolve_type(spec: str) -> Callable[..., Any]:
    """Import ``module:attr`` (``attr`` may be dotted); ``ValueError`` saying what is wrong."""
    if not _TYPE.fullmatch(spec):
        raise ValueError(
            f"type {spec!r} must be 'module:function' (e.g. 'myapp.tasks:fetch_catalogue')"
        )
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ValueError(
                f"type {spec!r}: no module named {missing!r} (types are imported from the "
                f"current directory and sys.path)"
            ) from None
        raise ValueError(f"type {spec!r}: importing {module_name!r} failed: {exc}") from None
    except Exception as exc:
        raise ValueError(
            f"type {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"type {spec!r}: module {module_name!r} has no {attr!r}") from None
    if isinstance(getattr(obj, "__temporalpp__", None), WorkflowDefinition):
        raise ValueError(f"type {spec!r} is a @workflow; a task's type must be an activity")
    if inspect.isclass(obj) or not callable(obj):
        raise ValueError(f"type {spec!r} is not a function (a task's type is an activity)")
    return obj  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- finding lines


class _Locator:
    """Finds the lines of tables, keys and graph statements in a TOML text (1-based)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers: list[tuple[int, str, bool]] = []  # (line, name, is_array)
        quote: str | None = None
        for n, line in enumerate(self.lines, 1):
            if quote is None:
                m = re.match(r"\s*(\[\[?)\s*([^\]]+?)\s*\]", line)
                if m:
                    self.headers.append((n, m.group(2).strip(), m.group(1) == "[["))
            for delim in re.findall(r'"""|\'\'\'', line):
                if quote is None:
                    quote = delim
                elif delim == quote:
                    quote = None

    def table(self, name: str, index: int | None = None) -> int:
        """The header line of ``[name]``, or of the ``index``-th ``[[name]]`` (0 if none)."""
        found = [n for n, h, array in self.headers if h == name and array == (index is not None)]
        if index is None:
            return found[0] if found else 0
        return found[index] if index < len(found) else 0

    def key(self, start: int, key: str) -> int:
        """The line of ``key =`` in the table whose header is at ``start`` (else ``start``)."""
        end = next((n for n, _, _ in self.headers if n > start), len(self.lines) + 1)
        pattern = re.compile(
            rf"\s*(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')\s*="
        )
        for n in range(start + 1, end):
            if pattern.match(self.lines[n - 1]):
                return n
        return start or 1

    def string_line(self, start: int, text: str) -> int:
        """The first line from ``start`` on that contains ``text`` (else ``start``)."""
        for n in range(max(start, 1), len(self.lines) + 1):
            if text in self.lines[n - 1]:
                return n
        return start or 1

    def graph_lines(self, key_line: int, content: str) -> list[int]:
        """The file line of each line of the graph string, whose key is on ``key_line``."""
        first = key_line
        if 0 < key_line <= len(self.lines):
            after = self.lines[key_line - 1].split("=", 1)[-1].lstrip()
            for delim in ('"""', "'''"):
                if after.startswith(delim) and not after[3:].strip():
                    first = key_line + 1  # TOML trims the newline after the opening quotes
        out = []
        for i, text in enumerate(content.split("\n")):
            n = first + i
            stripped = text.strip()
            if stripped and not (0 < n <= len(self.lines) and stripped in self.lines[n - 1]):
                n = self.string_line(key_line, stripped)  # a line continuation moved it
            out.append(n)
        return out


# --------------------------------------------------------------------------- parsing


class _Reader:
    """Reads one pipeline file's data, collecting every problem."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.at = _Locator(text)
        self.data: dict[str, Any] = {}
        try:
            self.data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"at line (\d+)", str(exc))
            self.problem(int(m.group(1)) if m else 1, f"not valid TOML: {exc}")

    def problem(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.source, max(line, 1), message))

    def unknown_keys(
        self, table: dict[str, Any], known: tuple[str, ...], start: int, what: str
    ) -> None:
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.problem(
                    self.at.key(start, key),
                    f"unknown key {key!r} in {what} ({hint}known: {', '.join(known)})",
                )

    def options(
        self, table: dict[str, Any], start: int, base: dict[str, Any], what: str
    ) -> dict[str, Any]:
        """``retry``, ``retry_delay`` and ``timeout`` of a table, over ``base``."""
        out = dict(base)
        for key in ("timeout", "retry_delay"):
            if key in table:
                try:
                    out[key] = parse_duration(table[key], key)
                except ValueError as exc:
                    self.problem(self.at.key(start, key), f"{what}: {exc}")
        if "retry" in table:
            value = table["retry"]
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                out["retry"] = value
            else:
                self.problem(
                    self.at.key(start, "retry"),
                    f"{what}: retry = {_toml(value)}: give how many times to retry after the first "
                    f"attempt (0 or more)",
                )
        return out

    def string(self, table: dict[str, Any], key: str, start: int, what: str) -> str | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(
                self.at.key(start, key), f"{key} in {what} must be a string, got {value!r}"
            )
            return None
        return value

    def pipeline(self) -> Pipeline | None:
        data = self.data
        if self.problems:
            return None
        for key in data:
            if key not in ("pipeline", "message", "task"):
                line = self.at.table(key) or self.at.table(key, 0) or self.at.key(0, key)
                self.problem(
                    line, f"unknown table {key!r} (known: [pipeline], [message], [[task]])"
                )
        head = data.get("pipeline")
        start = self.at.table("pipeline")
        if not isinstance(head, dict):
            self.problem(start, "missing [pipeline] table (with name and graph)")
            head = {}
        else:
            self.unknown_keys(head, _PIPELINE_KEYS, start, "[pipeline]")
        name = self.string(head, "name", start, "[pipeline]")
        if name is None and isinstance(data.get("pipeline"), dict):
            self.problem(start, "[pipeline] needs a name")
        elif name is not None and not _PIPELINE_NAME.fullmatch(name):
            self.problem(
                self.at.key(start, "name"),
                f"pipeline name {name!r} must be letters, digits, '_' and '-', starting with "
                f"a letter",
            )
        description = self.string(head, "description", start, "[pipeline]") or ""
        message = data.get("message", {})
        message_start = self.at.table("message")
        if not isinstance(message, dict):
            self.problem(message_start or self.at.key(0, "message"), "[message] must be a table")
            message = {}
        self.unknown_keys(message, _OPTION_KEYS, message_start, "[message]")
        defaults = self.options(message, message_start, _DEFAULTS, "[message]")
        tasks = self.tasks(defaults)
        graph = self.string(head, "graph", start, "[pipeline]")
        if graph is None:
            if isinstance(data.get("pipeline"), dict):
                self.problem(start, "[pipeline] needs a graph (Mermaid edges: A --> B;)")
            return None
        preds = self.graph(graph, self.at.key(start, "graph"), tasks)
        if self.problems or name is None:
            return None
        built = [
            Task(
                name=t["name"],
                type=t["type"],
                fn=t["fn"],
                activity=f"{name}.{t['name']}",
                preds=preds[t["name"]],
                fan_out=t["fan_out"],
                retry=t["retry"],
                retry_delay=t["retry_delay"],
                timeout=t["timeout"],
                description=t["description"],
                line=t["line"],
            )
            for t in tasks.values()
        ]
        path = None if self.source.startswith("<") else pathlib.Path(self.source)
        return Pipeline(name, built, description=description, path=path)

    def tasks(self, defaults: dict[str, Any]) -> dict[str, dict[str, Any]]:
        raw = self.data.get("task", [])
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            self.problem(
                self.at.table("task", 0) or self.at.key(0, "task"), "task must be [[task]] tables"
            )
            return {}
        if not raw:
            self.problem(self.at.table("pipeline"), "the pipeline has no [[task]]")
        tasks: dict[str, dict[str, Any]] = {}
        for i, table in enumerate(raw):
            start = self.at.table("task", i)
            what = f"task #{i + 1}"
            name = self.string(table, "name", start, what)
            if isinstance(name, str):
                what = f"task {name!r}"
            self.unknown_keys(table, _TASK_KEYS, start, what)
            if name is None:
                if "name" not in table:
                    self.problem(start, f"{what} needs a name")
                continue
            line = self.at.key(start, "name")
            if not _NAME.fullmatch(name):
                self.problem(
                    line,
                    f"task name {name!r} must be letters, digits and '_', starting with a letter",
                )
                continue
            if name in _RESERVED:
                self.problem(line, f"task name {name!r} is a Mermaid keyword; choose another name")
                continue
            if name in tasks:
                self.problem(
                    line, f"task {name!r} is defined twice (first on line {tasks[name]['line']})"
                )
                continue
            task: dict[str, Any] = {"name": name, "line": line, "fn": None}
            task.update(self.options(table, start, defaults, what))
            task["description"] = self.string(table, "description", start, what) or ""
            fan_out = table.get("fan_out", False)
            if not isinstance(fan_out, bool):
                self.problem(
                    self.at.key(start, "fan_out"),
                    f"fan_out in {what} must be true or false, got {_toml(fan_out)}",
                )
                fan_out = False
            task["fan_out"] = fan_out
            task["fan_out_line"] = self.at.key(start, "fan_out")
            type_ = self.string(table, "type", start, what)
            task["type"] = type_ or ""
            if type_ is None:
                if "type" not in table:
                    self.problem(start, f"{what} needs a type ('module:function', an activity)")
            else:
                try:
                    task["fn"] = resolve_type(type_)
                except ValueError as exc:
                    self.problem(self.at.key(start, "type"), f"{what}: {exc}")
            tasks[name] = task
        return tasks

    def graph(
        self, text: str, key_line: int, tasks: dict[str, dict[str, Any]]
    ) -> dict[str, tuple[str, ...]]:
        """Parse the edges, check them against the tasks; predecessors per task, in task order."""
        lines = self.at.graph_lines(key_line, text)
        before = len(self.problems)
        nodes: dict[str, int] = {}  # first line each name appears on
        edges: dict[tuple[str, str], int] = {}
        first = True
        for i, raw in enumerate(text.split("\n")):
            line = lines[i]
            for stmt in raw.split("%%", 1)[0].split(";"):
                s = stmt.strip()
                if not s:
                    continue
                if first and _HEADER.fullmatch(s):
                    first = False
                    continue
                first = False
                groups = self.statement(s, line)
                for group in groups:
                    for n in group:
                        nodes.setdefault(n, line)
                for left, right in itertools.pairwise(groups):
                    for a in left:
                        for b in right:
                            edges.setdefault((a, b), line)
        known = ", ".join(tasks) or "none"
        for n, line in nodes.items():
            if n not in tasks:
                self.problem(
                    line, f"the graph names task {n!r}, which no [[task]] defines (tasks: {known})"
                )
        readable = len(self.problems) == before  # else "not in the graph" would mislead
        for name, t in tasks.items():
            if readable and name not in nodes:
                self.problem(
                    t["line"],
                    f"task {name!r} is not in the graph: add an edge ({name} --> ...) or list "
                    f"it alone ({name};)",
                )
        order = {name: i for i, name in enumerate(tasks)}
        preds: dict[str, list[str]] = {name: [] for name in tasks}
        for (a, b), _line in edges.items():
            if a in tasks and b in tasks:
                preds[b].append(a)
        for name in preds:
            preds[name].sort(key=order.__getitem__)
        self.cycles(preds, edges)
        for name, t in tasks.items():
            if t["fan_out"] and len(preds[name]) != 1:
                self.problem(
                    t["fan_out_line"],
                    f"task {name!r} has fan_out = true, so it needs exactly one predecessor "
                    f"(whose list output it maps over); it has {len(preds[name])}",
                )
        return {name: tuple(p) for name, p in preds.items()}

    def statement(self, s: str, line: int) -> list[list[str]]:
        groups: list[list[str]] = []
        for part in s.split("-->"):
            names = [n.strip() for n in part.split("&")]
            for n in names:
                if not _NAME.fullmatch(n):
                    what = f"cannot read {n!r}" if n else "a task is missing"
                    self.problem(
                        line,
                        f"{what} in the graph statement {s!r}: write edges as 'A --> B', chains "
                        f"as 'A --> B --> C', several at once as 'A --> B & C'; task names are "
                        f"letters, digits and '_'",
                    )
                    return []
            groups.append(names)
        return groups

    def cycles(self, preds: dict[str, list[str]], edges: dict[tuple[str, str], int]) -> None:
        """Report one cycle per strongly connected knot, at the line of its closing edge."""
        state: dict[str, int] = {}  # 1 on the stack, 2 done
        stack: list[str] = []
        succs: dict[str, list[str]] = {n: [] for n in preds}
        for b, ps in preds.items():
            for a in ps:
                succs[a].append(b)

        def visit(n: str) -> None:
            state[n] = 1
            stack.append(n)
            for m in succs[n]:
                if state.get(m) == 1:
                    cycle = [*stack[stack.index(m) :], m]
                    self.problem(edges[(n, m)], f"the graph has a cycle: {' --> '.join(cycle)}")
                elif m not in state:
                    visit(m)
            stack.pop()
            state[n] = 2

        for n in preds:
            if n not in state:
                visit(n)


def loads(text: str, *, source: str = "<string>") -> Pipeline:
    """A pipeline from TOML text; ``source`` names it in errors.

    Task types are imported with the current directory importable (as
    ``python -m`` does).  Raises :class:`PipelineError` listing every problem.
    """
    _importable(pathlib.Path.cwd())
    reader = _Reader(text, source)
    pipeline = reader.pipeline()
    if reader.problems or pipeline is None:
        raise PipelineError(reader.problems or [Problem(source, 1, "not a pipeline")])
    return pipeline


def read(path: str | os.PathLike[str]) -> tuple[pathlib.Path, str]:
    p = pathlib.Path(path)
    try:
        return p, p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError([Problem(str(p), 1, "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError([Problem(str(p), 1, f"cannot read it: {exc}")]) from None


def load(path: str | os.PathLike[str]) -> Pipeline:
    """Load and validate one pipeline file (see :func:`loads`).

    >>> load("examples/pipelines/reindex.toml").name
    'reindex'
    """
    p, text = read(path)
    return loads(text, source=str(p))
