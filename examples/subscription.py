# (mypy cannot see the ``Cmd(target, *args)`` signatures of engine's commands yet)
"""Subscription billing: a three-year customer lifecycle written as one function.

The classic durable-execution example (seed 001).  A customer is onboarded to
a 60-day free trial; a "cancel" signal during the trial ends it for free.
Then the customer is upgraded and charged every 30 days, 36 times; a "cancel"
signal between two charges stops the billing.  The "status" query shows the
progress without running any workflow code.  Timers are durable events, not
sleeps: ``main()`` runs the three years on a ``VirtualClock`` in a blink.

    python -m examples.subscription
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import stores
from engine import Any as AnyOf
from engine import (
    ScheduleActivity,
    SetQuery,
    Timer,
    VirtualClock,
    WaitSignal,
    activity,
    activity_context,
    run,
    workflow,
)
from stores import Store

TRIAL = timedelta(days=60)
PERIOD = timedelta(days=30)
MONTHS = 36
FEE = 999  # cents a month


@dataclass(frozen=True)
class Receipt:
    customer_id: str
    month: int
    cents: int
    charge_id: str  # the idempotency key the payment provider saw


@dataclass(frozen=True)
class Status:
    stage: str  # "trial", "paid", "cancelled" or "ended"
    months_charged: int = 0
    cents_charged: int = 0


@activity
def onboard_to_free_trial(customer_id: str) -> None:
    print(f"  welcome e-mail to {customer_id}: your 60-day trial starts now")


@activity
def upgrade_from_trial_to_paid(customer_id: str) -> None:
    print(f"  {customer_id} upgraded to the paid plan")


@activity
def charge_monthly_fee(customer_id: str, month: int, cents: int) -> Receipt:
    # A real implementation passes the key to the payment API, so that a retried
    # attempt never charges twice.
    return Receipt(customer_id, month, cents, activity_context().idempotency_key)


@activity
def process_cancellation(customer_id: str, months_charged: int) -> None:
    print(f"  {customer_id} cancelled after {months_charged} paid month(s)")


@workflow
def subscription(customer_id: str) -> Generator[Any, Any, Status]:
    yield SetQuery("status", Status("trial"))
    yield ScheduleActivity(onboard_to_free_trial, customer_id)
    try:
        yield WaitSignal("cancel", timeout=TRIAL)
    except TimeoutError:
        pass  # the trial ran out without a cancellation: the customer stays
    else:
        yield ScheduleActivity(process_cancellation, customer_id, 0)
        yield SetQuery("status", Status("cancelled"))
        return Status("cancelled")

    yield ScheduleActivity(upgrade_from_trial_to_paid, customer_id)
    status, stage = Status("paid"), "ended"
    for month in range(1, MONTHS + 1):
        receipt: Receipt = yield ScheduleActivity(charge_monthly_fee, customer_id, month, FEE)
        status = Status("paid", month, status.cents_charged + receipt.cents)
        yield SetQuery("status", status)
        winner, _ = yield AnyOf(WaitSignal("cancel"), Timer(PERIOD))
        if winner == 0:  # the signal came first; the losing timer is cancelled
            yield ScheduleActivity(process_cancellation, customer_id, month)
            stage = "cancelled"
            break
    status = replace(status, stage=stage)
    yield SetQuery("status", status)
    return status


def main(clock: VirtualClock | None = None, store: Store | None = None) -> Status:
    """Run one subscription to its end on the embedded default store (``./.tpp``)."""
    clock = clock or VirtualClock()
    start = clock.now()
    owned = store is None
    store = store or stores.open_default()
    print(f"subscription for cust-42 starting {start:%Y-%m-%d} (virtual clock)")
    print(f"history kept in {stores.default_url()}" if owned else "history kept in memory")
    try:
        status: Status = run(subscription, "cust-42", clock=clock, store=store)
    finally:
        if owned:
            store.close()
    days = (clock.now() - start).days
    print(
        f"{status.stage} on {clock.now():%Y-%m-%d}, {days} days later: "
        f"{status.months_charged} charges, ${status.cents_charged / 100:.2f} in total"
    )
    return status


if __name__ == "__main__":
    main()
