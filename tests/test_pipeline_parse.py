"""Pipeline files: TOML and Mermaid edges read right, and every mistake reported at its line.

Each file under ``tests/data/pipelines/bad/`` says what it must be refused
for: ``# expect: LINE: text`` lines at its top (the error names that line
and contains that text), and no other problem may be reported.
"""

from __future__ import annotations

import pathlib
import re
import sys
from collections.abc import Generator
from datetime import timedelta
from typing import Any

import pytest

from engine import Timer, workflow
from engine.pipeline import (
    Pipeline,
    PipelineError,
    fingerprints,
    load,
    load_project,
    loads,
    parse_duration,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "pipelines"
BAD = sorted((DATA / "bad").glob("*.toml"))
EXPECT = re.compile(r"# expect: (\d+): (.+)")


# Task types the fixtures name (``tests.test_pipeline_parse:first``).
def first(x: int = 0) -> int:
    return x + 1


def second(*values: int) -> int:
    return sum(values)


@workflow
def a_workflow() -> Generator[Any, Any, None]:
    yield Timer(1)


NOT_CALLABLE = 42


def toml(graph: str, *tasks: str, extra: str = "") -> str:
    """A pipeline file with ``graph`` and one task per name (type ``first``)."""
    body = "".join(
        f'[[task]]\nname = "{t}"\ntype = "tests.test_pipeline_parse:first"\n' for t in tasks
    )
    return f'[pipeline]\nname = "demo"\ngraph = """\n{graph}\n"""\n{extra}\n{body}'


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_files_are_refused_at_the_right_lines(path: pathlib.Path) -> None:
    expected = [(int(n), text) for n, text in EXPECT.findall(path.read_text())]
    assert expected, f"{path.name} says nothing about what it expects"
    with pytest.raises(PipelineError) as info:
        load(path)
    problems = info.value.problems
    for line, text in expected:
        assert any(p.line == line and text in p.message for p in problems), (
            f"{path.name}: no problem at line {line} with {text!r}; got:\n{info.value}"
        )
    assert len(problems) == len(expected), f"{path.name}: unexpected problems:\n{info.value}"
    for p in problems:  # each line of the message is FILE:LINE: text
        assert f"{path}:{p.line}: {p.message}" in str(info.value)


def test_an_import_that_fails_inside_the_module_is_reported(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_tasks_mod.py").write_text("import nosuch_dependency_xyz\n")
    (tmp_path / "raising_tasks_mod.py").write_text("raise RuntimeError('no config')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = toml("A --> B").replace("[[task]]", "")
    text += (
        '[[task]]\nname = "A"\ntype = "broken_tasks_mod:f"\n'
        '[[task]]\nname = "B"\ntype = "raising_tasks_mod:f"\n'
    )
    with pytest.raises(PipelineError) as info:
        loads(text, source="x.toml")
    message = str(info.value)
    assert "x.toml:9: task 'A': type 'broken_tasks_mod:f': importing 'broken_tasks_mod' " in message
    assert "No module named 'nosuch_dependency_xyz'" in message
    assert "x.toml:12: task 'B'" in message and "RuntimeError: no config" in message
    for name in ("broken_tasks_mod", "raising_tasks_mod"):
        sys.modules.pop(name, None)


def test_a_missing_file_is_a_pipeline_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(PipelineError, match="no such file"):
        load(tmp_path / "nope.toml")
    assert issubclass(PipelineError, ValueError)


def test_the_reindex_example_loads() -> None:
    p = load(ROOT / "examples" / "pipelines" / "reindex.toml")
    assert p.name == "reindex" and p.workflow_type == "pipeline:reindex"
    assert p.description == "re-index the catalogue into the search service"
    assert [t.name for t in p.tasks] == ["snapshot", "fetch", "split", "index", "report"]
    assert [[t.name for t in w] for w in p.waves] == [
        ["snapshot", "fetch"],
        ["split"],
        ["index"],
        ["report"],
    ]
    assert p.sinks == ("report",)
    report = p.task("report")
    assert report.preds == ("snapshot", "index")  # task order, not edge order
    index = p.task("index")
    assert index.fan_out and index.retry == 5 and index.timeout == timedelta(seconds=30)
    assert index.policy.maximum_attempts == 6
    assert index.policy.initial_interval == timedelta(milliseconds=250)
    assert p.task("fetch").retry == 3 and p.task("fetch").timeout == timedelta(minutes=5)
    assert [a.__temporalpp__.name for a in p.activities] == [
        "reindex.snapshot",
        "reindex.fetch",
        "reindex.split",
        "reindex.index",
        "reindex.report",
    ]
    assert p.workflows == [p.workflow]
    assert "reindex" in repr(p) and p.digest[:12] in repr(p)
    with pytest.raises(KeyError, match="no task 'nope'"):
        p.task("nope")


def test_graph_syntax_chains_ampersands_headers_and_comments() -> None:
    p = loads(
        toml(
            "graph LR\nA --> B & C --> D;  %% a comment\nE & F --> G ; H\nB-->D",
            *"HGFEDCBA",
        )
    )
    preds = {t.name: t.preds for t in p.tasks}
    # predecessors come in the order the tasks are listed (H G F E D C B A)
    assert preds == {
        "H": (),
        "G": ("F", "E"),
        "F": (),
        "E": (),
        "D": ("C", "B"),
        "C": ("A",),
        "B": ("A",),
        "A": (),
    }
    assert [[t.name for t in w] for w in p.waves] == [["H", "F", "E", "A"], ["G", "C", "B"], ["D"]]
    assert p.sinks == ("H", "G", "D")


def test_defaults_and_overrides() -> None:
    p = loads(toml("A --> B", "A", "B"))
    a = p.task("A")
    assert (a.retry, a.retry_delay, a.timeout) == (3, timedelta(seconds=1), None)
    p = loads(
        toml("A --> B", "A", "B", extra='[message]\ntimeout = 1500\nretry = 0\nretry_delay = "2s"')
    )
    assert p.task("B").timeout == timedelta(milliseconds=1500)
    assert p.task("B").policy.maximum_attempts == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5m", timedelta(minutes=5)),
        ("30s", timedelta(seconds=30)),
        ("1h", timedelta(hours=1)),
        ("250ms", timedelta(milliseconds=250)),
        ("1h30m", timedelta(minutes=90)),
        ("1.5s", timedelta(seconds=1.5)),
        ("2d", timedelta(days=2)),
        (5000, timedelta(seconds=5)),
    ],
)
def test_durations(value: Any, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize("value", ["5 minutes", "5", "m5", "", "-1s", 0, -5, 1.5, True, None])
def test_bad_durations(value: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        parse_duration(value)


def test_the_digest_is_the_dag_not_the_options() -> None:
    base = loads(toml("A --> B", "A", "B"))
    tuned = loads(toml("A --> B", "A", "B", extra='[message]\nretry = 9\ntimeout = "1h"'))
    rewired = loads(toml("A; B", "A", "B"))
    assert base.digest == tuned.digest
    assert base.digest != rewired.digest
    assert base.spec().digest == base.digest


def test_fingerprints_follow_the_upstream_cone_and_the_input() -> None:
    p = loads(toml("A --> B; C", "A", "B", "C")).spec()
    one, two = fingerprints(p, [1]), fingerprints(p, [2])
    assert one != two and set(one) == {"A", "B", "C"}
    assert one == fingerprints(p, [1])
    # a dataclass and the dict a history decodes it to digest alike
    from examples.pipelines.reindex_tasks import ReindexRequest

    assert fingerprints(p, [ReindexRequest(products=3)]) == fingerprints(
        p, [{"products": 3, "batch_size": 25, "index_dir": None, "flaky": {}, "pause": 0.0}]
    )


def test_a_project_groups_pipelines(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.toml").write_text(toml("A", "A").replace('"demo"', '"alpha"'))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.toml").write_text(toml("A --> B", "A", "B").replace('"demo"', '"beta"'))
    (tmp_path / "Project.toml").write_text(
        '[project]\nname = "team"\nmembers = [\n  "a.toml",\n  "sub/b.toml",\n]\n'
    )
    project = load_project(tmp_path / "Project.toml")
    assert list(project.pipelines) == ["alpha", "beta"] and len(project) == 2
    assert project.name == "team"
    assert isinstance(project["beta"], Pipeline)
    assert [w.__temporalpp__.name for w in project.workflows] == [
        "pipeline:alpha",
        "pipeline:beta",
    ]
    assert len(project.activities) == 3
    with pytest.raises(KeyError, match="no pipeline 'gamma'"):
        project["gamma"]


def test_project_problems_are_reported_with_lines(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.toml").write_text(toml("A", "A"))
    (tmp_path / "b.toml").write_text(toml("A", "A"))  # also "demo"
    (tmp_path / "c.toml").write_text(toml("A --> Z", "A"))
    (tmp_path / "Project.toml").write_text(
        '[project]\nmembers = [\n  "a.toml",\n  "b.toml",\n  "c.toml",\n  "gone.toml",\n]\n'
        "colour = 1\n"
    )
    with pytest.raises(PipelineError) as info:
        load_project(tmp_path / "Project.toml")
    text = str(info.value)
    project = str(tmp_path / "Project.toml")
    assert f"{project}:4: member 'b.toml' is pipeline 'demo', as 'a.toml' is" in text
    assert f"{project}:6: member 'gone.toml': no such file" in text
    assert f"{tmp_path / 'c.toml'}:4: the graph names task 'Z'" in text
    assert f"{project}:8: unknown key 'colour' in [project]" in text
    (tmp_path / "Project.toml").write_text("[project]\nmembers = []\n")
    with pytest.raises(PipelineError, match=r"Project.toml:2: members must be a non-empty list"):
        load_project(tmp_path / "Project.toml")
    (tmp_path / "Project.toml").write_text("members = ['a.toml']\n")
    with pytest.raises(PipelineError, match=r"missing \[project\] table"):
        load_project(tmp_path / "Project.toml")


def test_the_example_project_loads() -> None:
    project = load_project(ROOT / "examples" / "pipelines" / "Project.toml")
    assert list(project.pipelines) == ["reindex"]
    from examples.pipelines import app

    assert [w.__temporalpp__.name for w in app.workflows] == ["pipeline:reindex"]
    assert len(app.activities) == 5


def test_the_public_api_is_sorted_and_complete() -> None:
    import engine.pipeline

    names = engine.pipeline.__all__
    assert list(names) == sorted(names)
    public = {
        n
        for n, v in vars(engine.pipeline).items()
        if not n.startswith("_") and type(v) is not type(engine.pipeline)
    }
    assert public == set(names) | {"annotations"} or public == set(names)


def test_the_docstring_examples_run() -> None:
    import doctest

    import engine.pipeline
    from engine.pipeline import _history, _model, _parse, _run

    for module in (engine.pipeline, _history, _model, _parse, _run):
        failed, _ = doctest.testmod(module)
        assert failed == 0, module.__name__
