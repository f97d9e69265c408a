"""``tpp worker``: run a worker for an app until Ctrl-C or SIGTERM, optionally with metrics."""

from __future__ import annotations

from typing import Any

import click

from .._apps import load_app
from ._common import CliError, State, output_options, pass_state

__all__ = ["worker"]


@click.command()
@click.option(
    "--app",
    "app_spec",
    required=True,
    metavar="SPEC",
    help="module:attr, module, path/to/file.py or path/to/file.py:attr (see below).",
)
@click.option("-t", "--task-queue", default=None, help="Task queue to poll [default: default].")
@click.option(
    "--max-concurrent-activities",
    type=click.IntRange(min=1),
    default=None,
    help="Activities run at once [default: 16].",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port).",
)
@click.option(
    "--metrics-host",
    default="0.0.0.0",
    show_default=True,
    help="Address the metrics server listens on.",
)
@click.option(
    "--until-idle",
    is_flag=True,
    help="Do the work that is due now, then exit (scripts, CI) instead of running until stopped.",
)
@output_options()
@pass_state
def worker(
    state: State,
    app_spec: str,
    task_queue: str | None,
    max_concurrent_activities: int | None,
    metrics_port: int | None,
    metrics_host: str,
    until_idle: bool,
) -> None:
    """Run a worker for an app's workflows and activities.

    Runs until Ctrl-C or SIGTERM, then stops gracefully: it stops claiming,
    lets running activities record their outcomes, and hands its runs back.
    Any number of workers may share one store.

    \b
    SPEC names the app (there is no global registry):
      module:attr     attr is an object with `workflows` and `activities`
                      lists (a SimpleNamespace, a class, a dict with those
                      keys), or a function (taking the store, or nothing)
                      that returns one, or returns a configured Worker
      module          the module's `workflows`/`activities`, else its
                      @workflow and @activity functions
      path/file.py    the same, for a file (also path/file.py:attr)

    \b
    Examples:
      tpp worker --app examples.expense_approval
      tpp worker --app myapp:app --task-queue billing --metrics-port 9464
      tpp --store file:.tpp/files worker --app ./workflows.py --until-idle
    """
    app = load_app(app_spec)
    store: Any = state.store(create=True)
    metrics = server = None
    if metrics_port is not None:
        try:
            from .._metrics import MetricsStore, WorkerMetrics, serve
        except ImportError:
            raise CliError(
                "--metrics-port needs prometheus-client: pip install 'temporalpp[metrics]'"
            ) from None
        metrics = WorkerMetrics()
        store = MetricsStore(store, metrics)
        try:
            server = serve(metrics, metrics_port, addr=metrics_host)
        except OSError as exc:
            raise CliError(
                f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}"
            ) from None
    options: dict[str, Any] = {}
    if task_queue is not None:
        options["task_queue"] = task_queue
    if max_concurrent_activities is not None:
        options["max_concurrent_activities"] = max_concurrent_activities
    cas = state.cas()
    if cas is not None:
        options["cas"] = cas
    codec = state.codec()
    if codec is not None:
        options["codec"] = codec
    try:
        w = app.worker(store, **options)
        if metrics is not None and w.on_decision is None:
            w.on_decision = metrics.observe_decision  # measured in the worker, not guessed
            store.time_decisions = False
        kinds = (
            ""
            if app.factory is not None  # a Worker the app built: it knows what it runs
            else f": {len(app.workflows)} workflow(s), {len(app.activity_names)} activity type(s)"
        )
        state.note(
            f"worker {w.identity} on {state.url()}, task queue {w.task_queue!r}{kinds}"
            + ("" if until_idle else "; Ctrl-C to stop")
        )
        if server is not None:
            state.note(f"metrics on http://{metrics_host}:{server.server_port}/metrics")
        if until_idle:
            w.run_until_idle()
        else:
            w.run()
        state.note("worker stopped")
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
