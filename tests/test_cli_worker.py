"""``tpp worker``: app specs, metrics through the store proxy, and real processes.

The last test runs start -> worker -> show -> result as separate ``tpp``
processes on one FileStore, and stops the worker with SIGTERM.
"""

from __future__ import annotations

import doctest
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

import engine._apps
import engine._metrics
from engine import Client, VirtualClock, Worker
from engine._apps import AppError, load_app
from engine._metrics import MetricsStore, WorkerMetrics, serve
from stores import MemoryStore
from stores.file import FileStore

from . import cliapp
from .clikit import APP, APP_FILE, APP_FIXED, ROOT, as_json, ok, tpp
from .test_store_copy import ACTIVITIES, WORKFLOWS, parent, retrying

# ---------------------------------------------------------------------- app specs


@pytest.mark.parametrize(
    ("spec", "workflows", "activities"),
    [
        ("tests.cliapp:app", ["checkout", "greeter"], ["charge", "reserve"]),
        ("tests.cliapp:as_dict", ["greeter"], []),
        (APP, ["checkout", "greeter"], ["charge", "reserve"]),
        ("examples.expense_approval", ["expense_report"], ["escalate", "notify", "reimburse"]),
        (
            str(ROOT / "examples" / "subscription.py"),
            ["subscription"],
            [
                "charge_monthly_fee",
                "onboard_to_free_trial",
                "process_cancellation",
                "upgrade_from_trial_to_paid",
            ],
        ),
    ],
)
def test_app_specs(spec: str, workflows: list[str], activities: list[str]) -> None:
    app = load_app(spec)
    assert sorted(app.workflows) == workflows
    assert app.activity_names == activities


def test_factories() -> None:
    app = load_app("tests.cliapp:make_app").resolve()
    assert sorted(app.workflows) == ["checkout", "greeter"]
    store = MemoryStore()
    worker = load_app(f"{APP_FILE}:make_worker").worker(store)
    assert isinstance(worker, Worker) and worker.store is store
    with pytest.raises(AppError, match="builds its own Worker; set task_queue there"):
        load_app("tests.cliapp:make_worker").worker(store, task_queue="q")
    with pytest.raises(AppError, match="returns a Worker, which does not list its workflows"):
        load_app("tests.cliapp:make_worker").resolve(store)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "an app spec must be"),
        ("tests.cliapp:nope", "has no attribute 'nope'"),
        ("tests.cliapp:not_an_app", "is a int: expected an object"),
        ("tests.cliapp:checkout", "names one @workflow/@activity function"),
        ("tests.no_such_module", "no module named 'tests.no_such_module'"),
        ("engine._events", "has no @workflow or @activity functions"),
        ("missing/app.py", "does not exist"),
    ],
)
def test_bad_app_specs(spec: str, message: str) -> None:
    with pytest.raises(AppError, match=re.escape(message)):
        load_app(spec)


def test_an_app_whose_import_fails(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('config missing')\n")
    with pytest.raises(AppError, match=r"importing app .* failed: RuntimeError: config missing"):
        load_app(str(bad))
    lists_junk = tmp_path / "junk.py"
    lists_junk.write_text("workflows = [print]\nactivities = []\n")
    with pytest.raises(AppError, match="is not a workflow: decorate it with @workflow"):
        load_app(str(lists_junk))


def test_doctests() -> None:
    for module in (engine._apps, engine._metrics):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module


# ---------------------------------------------------------------------- tpp worker


def test_worker_until_idle_runs_the_app(tmp_path: pathlib.Path) -> None:
    url = f"file:{tmp_path / 'files'}?durability=none"
    ok(tpp("--store", url, "workflow", "start", "--type", "greeter", "-w", "g", "-i", '"ann"'))
    ok(tpp("--store", url, "workflow", "signal", "-w", "g", "-n", "greeting", "-i", '"hi"'))
    run = ok(tpp("--store", url, "worker", "--app", APP, "--until-idle"))
    assert "task queue 'default': 2 workflow(s), 2 activity type(s)" in run.stderr
    assert as_json(tpp("--store", url, "workflow", "result", "-w", "g")) == "hi, ann"


def test_worker_task_queue_and_factories(tmp_path: pathlib.Path) -> None:
    url = f"sqlite:{tmp_path / 'db.sqlite'}"
    ok(
        tpp(
            "--store",
            url,
            "workflow",
            "start",
            "--type",
            "greeter",
            "-w",
            "q",
            "-i",
            '"bo"',
            "-t",
            "special",
        )
    )
    ok(tpp("--store", url, "workflow", "signal", "-w", "q", "-n", "greeting", "-i", '"yo"'))
    ok(tpp("--store", url, "worker", "--app", APP, "--until-idle"))  # the default queue
    assert (
        as_json(tpp("--store", url, "workflow", "describe", "-w", "q", "-o", "json"))["status"]
        == "RUNNING"
    )
    ok(
        tpp(
            "--store",
            url,
            "worker",
            "--app",
            "tests.cliapp:make_app",
            "-t",
            "special",
            "--until-idle",
        )
    )
    assert as_json(tpp("--store", url, "workflow", "result", "-w", "q")) == "yo, bo"
    own = tpp(
        "--store", url, "worker", "--app", "tests.cliapp:make_worker", "-t", "x", "--until-idle"
    )
    assert own.exit_code == 1 and "builds its own Worker" in own.stderr
    ok(tpp("--store", url, "worker", "--app", "tests.cliapp:make_worker", "--until-idle"))


def test_worker_metrics_port_serves_and_stops(tmp_path: pathlib.Path) -> None:
    url = f"sqlite:{tmp_path / 'db.sqlite'}"
    ok(tpp("--store", url, "workflow", "start", "--type", "checkout", "-i", '"o"', "-i", "1"))
    out = ok(
        tpp(
            "--store",
            url,
            "worker",
            "--app",
            APP_FIXED,
            "--until-idle",
            "--metrics-port",
            "0",
            "--metrics-host",
            "127.0.0.1",
        )
    )
    port = int(re.search(r"127\.0\.0\.1:(\d+)/metrics", out.stderr).group(1))  # type: ignore[union-attr]
    with pytest.raises(OSError):  # shut down when the worker stopped
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1)


# ---------------------------------------------------------------------- metrics


def test_metrics_count_what_the_worker_appends() -> None:
    metrics = WorkerMetrics()
    store = MetricsStore(MemoryStore(), metrics)
    clock = VirtualClock()
    client = Client(store, clock=clock)
    worker = Worker(store, WORKFLOWS, ACTIVITIES, clock=clock)
    client.start(retrying, "m", id="r")  # two failed attempts, then success
    client.start(parent, 2, False, id="p")  # two children with timers
    client.start(cliapp.checkout, "o", 1, id="unknown-type")  # this worker cannot run it
    worker.run_until_idle(skip_time=True)
    v = metrics.value
    assert v("tpp_workflows_started_total", workflow_type="retrying") == 1
    assert v("tpp_workflows_completed_total", workflow_type="retrying") == 1
    assert v("tpp_workflows_completed_total", workflow_type="parent") == 1
    assert v("tpp_workflows_completed_total", workflow_type="child") == 2
    assert v("tpp_workflows_closed_total", workflow_type="child", status="COMPLETED") == 2
    assert v("tpp_activities_scheduled_total", activity_type="twice_flaky") == 1
    assert v("tpp_activity_attempts_total", activity_type="twice_flaky", outcome="retry") == 2
    assert v("tpp_activity_attempts_total", activity_type="twice_flaky", outcome="completed") == 1
    assert v("tpp_activity_retries_total", activity_type="twice_flaky") == 2
    assert v("tpp_activity_seconds_count", activity_type="twice_flaky") == 3
    assert v("tpp_activities_in_flight", activity_type="twice_flaky") == 0
    decisions = sum(
        v("tpp_decisions_total", workflow_type=t) or 0 for t in ("retrying", "parent", "child")
    )
    assert decisions >= 7
    assert v("tpp_decision_seconds_count") == decisions
    assert (v("tpp_store_append_seconds_count") or 0) > 0
    assert (v("tpp_runs_blocked_total") or 0) >= 1  # checkout is not in this worker
    assert v("tpp_workflows_in_flight") == 0


def test_metrics_for_failures_and_through_http() -> None:
    metrics = WorkerMetrics()
    store = MetricsStore(MemoryStore(), metrics)
    Client(store).start(cliapp.checkout, "o", 1, id="declined")
    Worker(store, cliapp.app.workflows, cliapp.app.activities).run_until_idle()
    assert metrics.value("tpp_workflows_failed_total", workflow_type="checkout") == 1
    assert metrics.value("tpp_activity_failures_total", activity_type="charge") == 1
    server = serve(metrics, 0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'tpp_workflows_failed_total{workflow_type="checkout"} 1.0' in text
    assert "tpp_store_append_seconds_bucket" in text
    assert "python_gc_objects_collected_total" not in text  # its own registry, no globals


def test_the_proxy_forwards_backend_extras(tmp_path: pathlib.Path) -> None:
    with FileStore(tmp_path / "files", durability="none") as files:
        proxy = MetricsStore(files, WorkerMetrics())
        proxy.rebuild_index()
        assert repr(proxy).startswith("MetricsStore(FileStore(")


# ---------------------------------------------------------------------- real processes


def _tpp(*args: str, store: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "--store", store, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def test_start_worker_show_result_in_real_processes(tmp_path: pathlib.Path) -> None:
    store = f"file:{tmp_path / 'files'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = _tpp(
        "workflow",
        "start",
        "--type",
        "checkout",
        "-w",
        "order-42",
        "-i",
        '"o-42"',
        "-i",
        "4200",
        store=store,
        cwd=tmp_path,
    )
    assert start.returncode == 0, start.stderr
    assert start.stdout == "order-42\n"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "--store",
            store,
            "worker",
            "--app",
            APP_FIXED,
            "--metrics-port",
            "0",
            "--metrics-host",
            "127.0.0.1",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        assert worker.stderr is not None
        banner = worker.stderr.readline() + worker.stderr.readline()
        assert "Ctrl-C to stop" in banner, banner
        port = int(re.search(r":(\d+)/metrics", banner).group(1))  # type: ignore[union-attr]
        result = _tpp(
            "workflow",
            "result",
            "-w",
            "order-42",
            "--wait",
            "--timeout",
            "30",
            store=store,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.replace(" ", "").replace("\n", "") == (
            '{"slot":"slot-for-o-42","receipt":"charged4200foro-42"}'
        )
        deadline = time.monotonic() + 10
        while True:  # the worker appended the completion before result saw it
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                scraped = r.read().decode()
            if 'tpp_workflows_completed_total{workflow_type="checkout"} 1.0' in scraped:
                break
            assert time.monotonic() < deadline, scraped
            time.sleep(0.05)
        assert 'outcome="completed"' in scraped
    finally:
        worker.send_signal(signal.SIGTERM)
        _, rest = worker.communicate(timeout=30)
    assert worker.returncode == 0, rest
    assert "worker stopped" in rest and "Traceback" not in rest
    show = _tpp("workflow", "show", "-w", "order-42", store=store, cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    kinds = [line.split()[2] for line in show.stdout.splitlines()]
    assert kinds[0] == "WorkflowStarted" and kinds[-1] == "WorkflowCompleted"
    assert kinds.count("ActivityCompleted") == 2
    exported = _tpp("workflow", "show", "-w", "order-42", "-o", "json", store=store, cwd=tmp_path)
    (tmp_path / "order-42.json").write_text(exported.stdout)
    verified = _tpp(
        "verify", "--app", APP_FIXED, str(tmp_path / "order-42.json"), store=store, cwd=tmp_path
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("OK")
