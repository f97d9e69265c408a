"""A small app for the ``tpp`` tests (loaded with ``--app tests/cliapp.py:app`` and friends).

``checkout`` reserves, then charges a card; the card processor of ``app`` is
broken (every charge is declined, and the workflow fails), ``app_fixed`` has the
fixed one under the same activity type, which is what ``tpp workflow reset``
is for.  ``greeter`` waits for a signal.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from engine import (
    RetryPolicy,
    ScheduleActivity,
    SetQuery,
    WaitSignal,
    Worker,
    activity,
    workflow,
)
from stores import Store

NO_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=1), non_retryable=["CardDeclined"])


class CardDeclined(Exception): ...


@activity
def reserve(order: str) -> str:
    return f"slot-for-{order}"


@activity
def charge(order: str, cents: int) -> str:
    raise CardDeclined(f"card for {order} declined ({cents} cents)")


@activity(name="charge")
def charge_fixed(order: str, cents: int) -> str:
    return f"charged {cents} for {order}"


@workflow
def checkout(order: str, cents: int) -> Generator[Any, Any, dict[str, str]]:
    yield SetQuery("stage", "reserving")
    slot: str = yield ScheduleActivity(reserve, order)
    yield SetQuery("stage", "charging")
    receipt: str = yield ScheduleActivity(charge, order, cents, retry=NO_RETRY)
    yield SetQuery("stage", "done")
    return {"slot": slot, "receipt": receipt}


@workflow
def greeter(name: str) -> Generator[Any, Any, str]:
    yield SetQuery("waiting", True)
    greeting = yield WaitSignal("greeting", timeout=timedelta(hours=1))
    return f"{greeting}, {name}"


app = SimpleNamespace(workflows=[checkout, greeter], activities=[reserve, charge])
app_fixed = SimpleNamespace(workflows=[checkout, greeter], activities=[reserve, charge_fixed])
as_dict = {"workflows": [greeter], "activities": []}


def make_app() -> SimpleNamespace:
    """A factory taking nothing."""
    return app_fixed


def make_worker(store: Store) -> Worker:
    """A factory taking the store and returning a configured Worker."""
    return Worker(store, [checkout, greeter], [reserve, charge_fixed], task_queue="default")


not_an_app = 42
