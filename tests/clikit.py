"""Helpers for the ``tpp`` tests: run the command line in-process, and fill a store."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from click.testing import CliRunner, Result

from engine import Client, VirtualClock, Worker
from engine.cli import cli
from stores import Store

from . import cliapp

ROOT = pathlib.Path(__file__).resolve().parent.parent
APP_FILE = str(ROOT / "tests" / "cliapp.py")
APP = f"{APP_FILE}:app"
APP_FIXED = f"{APP_FILE}:app_fixed"


def _runner() -> CliRunner:
    try:  # click 8.1 mixes stderr into stdout unless told not to; 8.2 keeps them apart
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def tpp(
    *args: str, env: Mapping[str, str | None] | None = None, input: str | None = None
) -> Result:
    """Run ``tpp ARGS`` in-process; TPP_STORE/TPP_OUTPUT unset unless ``env`` sets them."""
    base: dict[str, str | None] = dict.fromkeys(
        ("TPP_STORE", "TPP_OUTPUT", "TPP_CAS", "TPP_KEYS", "TPP_KEY_VAULT", "TPP_COMPRESSION")
    )
    base.update(env or {})
    return _runner().invoke(
        cli, list(args), env=base, input=input, catch_exceptions=False, prog_name="tpp"
    )


def ok(result: Result) -> Result:
    """``result``, after checking that the command succeeded."""
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return result


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def fill(store: Store) -> VirtualClock:
    """Runs of every status on a virtual clock: completed, failed (declined card), running,
    terminated, cancelled; returns the clock."""
    clock = VirtualClock()
    client = Client(store, clock=clock)
    broken = Worker(store, cliapp.app.workflows, cliapp.app.activities, clock=clock)
    fixed = Worker(store, cliapp.app_fixed.workflows, cliapp.app_fixed.activities, clock=clock)
    client.start(cliapp.checkout, "o-1", 999, id="order-1")
    broken.run_until_idle()  # order-1 fails: its card is declined
    clock.advance(timedelta(seconds=5))
    client.start(cliapp.checkout, "o-2", 500, id="order-2")
    fixed.run_until_idle()  # order-2 completes
    for name in ("ann", "bo", "cy"):
        client.start(cliapp.greeter, name, id=f"greet-{name}")
    fixed.run_until_idle()
    client.signal("greet-ann", "greeting", "hello")
    client.terminate("greet-bo", "not needed")
    client.cancel("greet-cy", "changed my mind")
    fixed.run_until_idle()
    client.start(cliapp.greeter, "dee", id="greet-dee")  # stays running, waiting
    fixed.run_until_idle()
    return clock
