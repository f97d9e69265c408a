"""Ten deliberately non-deterministic variants of ``examples.subscription`` (for ``tpp verify``).

``variant()`` with no change is the example workflow, statement for statement;
each ``vNN_*`` app changes one thing a developer might change while runs are
in flight.  ``tests/test_cli_verify.py`` records histories with the real
example and requires ``tpp verify`` to catch every variant and pass ``base``::

    tpp verify --app tests/cli_variants.py:v05_longer_period histories/*.json
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from engine import Any as AnyOf
from engine import ScheduleActivity, SetQuery, SideEffect, Timer, WaitSignal, workflow
from examples.subscription import (
    FEE,
    MONTHS,
    PERIOD,
    TRIAL,
    Receipt,
    Status,
    charge_monthly_fee,
    onboard_to_free_trial,
    process_cancellation,
    upgrade_from_trial_to_paid,
)


def variant(
    *,
    swap_first: bool = False,
    fee: int = FEE,
    trial: timedelta = TRIAL,
    cancel_signal: str = "cancel",
    period: timedelta = PERIOD,
    receipt_email: bool = False,
    skip_onboarding: bool = False,
    race: bool = True,
    side_effect: bool = False,
    months: int = MONTHS,
) -> SimpleNamespace:
    """An app whose ``subscription`` workflow is the example's with the given changes."""

    @workflow(name="subscription")
    def subscription(customer_id: str) -> Generator[Any, Any, Status]:
        yield SetQuery("status", Status("trial"))
        if swap_first:
            yield ScheduleActivity(upgrade_from_trial_to_paid, customer_id)
        elif not skip_onboarding:
            yield ScheduleActivity(onboard_to_free_trial, customer_id)
        try:
            yield WaitSignal(cancel_signal, timeout=trial)
        except TimeoutError:
            pass
        else:
            yield ScheduleActivity(process_cancellation, customer_id, 0)
            yield SetQuery("status", Status("cancelled"))
            return Status("cancelled")

        if side_effect:
            yield SideEffect(lambda: "upgrade-request-1")
        yield ScheduleActivity(upgrade_from_trial_to_paid, customer_id)
        status, stage = Status("paid"), "ended"
        for month in range(1, months + 1):
            receipt: Receipt = yield ScheduleActivity(charge_monthly_fee, customer_id, month, fee)
            if receipt_email:
                yield ScheduleActivity("send_receipt", customer_id, month)
            status = Status("paid", month, status.cents_charged + receipt.cents)
            yield SetQuery("status", status)
            if race:
                winner, _ = yield AnyOf(WaitSignal("cancel"), Timer(period))
            else:
                yield Timer(period)
                winner = 1
            if winner == 0:  # the signal came first; the losing timer is cancelled
                yield ScheduleActivity(process_cancellation, customer_id, month)
                stage = "cancelled"
                break
        status = replace(status, stage=stage)
        yield SetQuery("status", status)
        return status

    return SimpleNamespace(workflows=[subscription], activities=[])


base = variant()
v01_swapped_activities = variant(swap_first=True)
v02_new_fee = variant(fee=1099)
v03_shorter_trial = variant(trial=timedelta(days=30))
v04_renamed_signal = variant(cancel_signal="stop")
v05_longer_period = variant(period=timedelta(days=31))
v06_inserted_activity = variant(receipt_email=True)
v07_removed_activity = variant(skip_onboarding=True)
v08_no_cancel_race = variant(race=False)
v09_inserted_side_effect = variant(side_effect=True)
v10_fewer_months = variant(months=2)

VARIANTS = {
    name: app for name, app in globals().items() if name.startswith("v") and name[1:3].isdigit()
}
