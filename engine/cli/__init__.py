"""The ``tpp`` command line: operate, inspect, verify and repair workflows on any store.

Built on click, with rich tables and progress bars.  The command tree::

    tpp [--store URL] [--cas URL] [--output table|json] [--traceback]
      version
      completion bash|zsh|fish
      worker --app SPEC [--task-queue Q] [--metrics-port PORT] [--until-idle]
      workflow start|show|list|describe|signal|query|cancel|terminate|result|reset|graph
      verify --app SPEC [HISTORY_FILE|STORE_URL]...
      store copy SRC_URL DST_URL | verify [URL] | rebuild-index [URL]
      stats [--type T] [--since WHEN]
      cas verify [CAS_URL] | gc [--grace SECONDS] [--dry-run]
      pipeline run FILE [--input JSON]... | graph FILE
      ui [--host H] [--port P] [--token T] [--refresh S]

One module per command group (``_workflow``, ``_worker_cmd``, ``_verify``,
``_store_cmd``, ``_stats``, ``_cas_cmd``, ``pipeline``); ``_common`` holds the context,
errors and output.
``main`` is the console script's entry point (``tpp = "engine.cli:main"``).
"""

from __future__ import annotations

import click

from .. import __version__
from ._cas_cmd import cas
from ._common import State, TppGroup, emit_json, output_options, pass_state
from ._stats import stats
from ._store_cmd import store
from ._ui_cmd import ui
from ._verify import verify
from ._worker_cmd import worker
from ._workflow import workflow
from .pipeline import pipeline, workflow_graph

__all__ = ["cli", "main"]


@click.group(
    name="tpp",
    cls=TppGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--store",
    "store_url",
    envvar="TPP_STORE",
    show_envvar=True,
    metavar="URL",
    default=None,
    help="memory:, file:PATH or sqlite:PATH (+ ?durability=fsync|flush|none) "
    "[default: sqlite:.tpp/store.db].",
)
@click.option(
    "--cas", "cas_url", envvar="TPP_CAS", show_envvar=True, metavar="URL", help="CAS URL."
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"], case_sensitive=False),
    envvar="TPP_OUTPUT",
    default="table",
    show_default=True,
    help="Output format: tables for people, JSON for scripts.",
)
@click.option(
    "--keys",
    envvar="TPP_KEYS",
    show_envvar=True,
    metavar="ID=HEX,...",
    help="Payload encryption keys (AES-GCM, 64 hex digits each; the last is current).",
)
@click.option(
    "--key-vault",
    envvar="TPP_KEY_VAULT",
    show_envvar=True,
    metavar="DIR",
    help="Directory of per-workflow data keys (needs --keys).",
)
@click.option(
    "--compression",
    envvar="TPP_COMPRESSION",
    show_envvar=True,
    type=click.Choice(["zstd"]),
    help="Compress payloads this command writes.",
)
@click.option("--traceback", is_flag=True, help="Show the traceback of an unexpected error.")
@click.version_option(
    __version__, "--version", prog_name="temporalpp", message="%(prog)s %(version)s"
)
@pass_state
def cli(
    state: State,
    store_url: str | None,
    cas_url: str | None,
    output: str,
    keys: str | None,
    key_vault: str | None,
    compression: str | None,
    traceback: bool,
) -> None:
    """Temporal++: operate, inspect, verify and repair durable workflows.

    Every command works on any store: --store URL, or $TPP_STORE, or the
    embedded default (sqlite:.tpp/store.db).

    \b
    Examples:
      tpp workflow start --type subscription -w sub-42 --input '"cust-42"'
      tpp worker --app examples.subscription
      tpp workflow show -w sub-42
      tpp workflow show -w sub-42 --output json > sub-42.json
      tpp verify --app examples.subscription sub-42.json
      tpp store copy sqlite:.tpp/store.db file:/backups/tpp
      tpp stats

    \b
    Shell completion (bash; zsh and fish alike):
      eval "$(_TPP_COMPLETE=bash_source tpp)"    or    eval "$(tpp completion bash)"
    """
    state.store_url = store_url
    state.cas_url = cas_url
    state.keys = keys
    state.key_vault = key_vault
    state.compression = compression
    state.output = output.lower()
    state.traceback = traceback


@cli.command()
@output_options(store=False)
@pass_state
def version(state: State) -> None:
    """Print the Temporal++ version."""
    if state.json:
        emit_json({"version": __version__})
    else:
        click.echo(f"temporalpp {__version__}")


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    Examples:
      eval "$(tpp completion bash)"          # in ~/.bashrc
      eval "$(tpp completion zsh)"           # in ~/.zshrc
      tpp completion fish > ~/.config/fish/completions/tpp.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(cli, {}, "tpp", "_TPP_COMPLETE").source())


for command in (worker, workflow, verify, store, stats, cas, pipeline, ui):
    cli.add_command(command)
workflow.add_command(workflow_graph)


def main(argv: list[str] | None = None) -> int:
    """Run ``tpp`` with ``argv`` (default: the process arguments); returns the exit status."""
    try:
        rv = cli.main(args=argv, prog_name="tpp", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    return rv if isinstance(rv, int) else 0
