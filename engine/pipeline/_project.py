"""Reading a ``Project.toml``: ``[project]`` with ``members = [...]``, each a pipeline file.

As for pipeline files, every problem is reported with its file and line; a
member's own problems keep their own file's name.
"""

from __future__ import annotations

import os
import pathlib
import re
import tomllib

from ._model import Pipeline, Project
from ._parse import PipelineError, Problem, _importable, _Locator, load, read

__all__ = ["is_project", "load_project"]


def is_project(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a project file (TOML with a ``[project]`` table)."""
    try:
        data = tomllib.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False  # loading it as a pipeline says what is wrong
    return isinstance(data.get("project"), dict)


def load_project(path: str | os.PathLike[str]) -> Project:
    """Load a ``Project.toml``: ``[project]`` with ``members = ["a.toml", ...]``.

    Members are paths relative to the project file; the project's directory
    is importable for task types too.  Every member's problems are reported.
    """
    p, text = read(path)
    source = str(p)
    at = _Locator(text)
    problems: list[Problem] = []
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"at line (\d+)", str(exc))
        raise PipelineError(
            [Problem(source, int(m.group(1)) if m else 1, f"not valid TOML: {exc}")]
        ) from None
    table = data.get("project")
    start = at.table("project")
    if not isinstance(table, dict):
        raise PipelineError([Problem(source, 1, "missing [project] table (with members = [...])")])
    for key in table:
        if key not in ("name", "description", "members"):
            problems.append(
                Problem(
                    source,
                    at.key(start, key),
                    f"unknown key {key!r} in [project] (known: name, description, members)",
                )
            )
    for key in data:
        if key != "project":
            problems.append(
                Problem(
                    source,
                    at.table(key) or at.key(0, key),
                    f"unknown table {key!r} (known: [project])",
                )
            )
    members = table.get("members")
    members_line = at.key(start, "members")
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        problems.append(
            Problem(source, members_line, "members must be a non-empty list of pipeline files")
        )
        raise PipelineError(problems)
    _importable(pathlib.Path.cwd())
    _importable(p.parent)
    pipelines: list[Pipeline] = []
    seen: dict[str, str] = {}
    for member in members:
        line = at.string_line(members_line, f'"{member}"') if members_line else 1
        file = p.parent / member
        try:
            pipeline = load(file)
        except PipelineError as exc:
            if exc.problems and exc.problems[0].message == "no such file":
                problems.append(
                    Problem(source, line, f"member {member!r}: no such file {str(file)!r}")
                )
            else:
                problems.extend(exc.problems)
            continue
        if pipeline.name in seen:
            problems.append(
                Problem(
                    source,
                    line,
                    f"member {member!r} is pipeline {pipeline.name!r}, as "
                    f"{seen[pipeline.name]!r} is",
                )
            )
            continue
        seen[pipeline.name] = member
        pipelines.append(pipeline)
    if problems:
        raise PipelineError(problems)
    name = table.get("name", "")
    description = table.get("description", "")
    return Project(
        pipelines,
        name=name if isinstance(name, str) else "",
        description=description if isinstance(description, str) else "",
        path=p,
    )
