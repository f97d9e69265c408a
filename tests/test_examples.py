"""The examples in ``examples/``, run through the public API on a virtual clock.

Each example is driven the way a user would drive it (``Client`` + ``Worker`` on
a ``MemoryStore``, signals from outside, ``run_until_idle(skip_time=True)``),
and its ``main()`` is run too, so the README's commands stay true.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import pytest

from engine import Client, Status, VirtualClock, Worker
from engine.events import (
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    ChildWorkflowStarted,
    Event,
    TimerStarted,
)
from examples import batch_indexing, expense_approval, money_transfer, repair_order, subscription
from stores import MemoryStore

ROOT = pathlib.Path(__file__).resolve().parent.parent


class Harness:
    """A client and a worker sharing one memory store and one virtual clock."""

    def __init__(
        self, workflows: Iterable[Callable[..., Any]], activities: Iterable[Callable[..., Any]]
    ) -> None:
        self.clock = VirtualClock()
        self.start = self.clock.now()
        store = MemoryStore()
        self.client = Client(store, clock=self.clock)
        self.worker = Worker(store, workflows, activities, clock=self.clock)

    def run(self, skip_time: bool = True) -> None:
        self.worker.run_until_idle(skip_time=skip_time)

    def result(self, wid: str, type: Any = Any) -> Any:
        return self.client.result(wid, timeout=5, type=type)

    def elapsed(self) -> timedelta:
        return self.clock.now() - self.start

    def kinds(self, wid: str) -> list[str]:
        return [type(ev).__name__ for ev in self.client.history(wid)]

    def events(self, wid: str, kind: type[Event]) -> list[Any]:
        return [ev for ev in self.client.history(wid) if isinstance(ev, kind)]

    def scheduled(self, wid: str) -> list[str]:
        return [ev.activity_type for ev in self.events(wid, ActivityScheduled)]


# ---------------------------------------------------------------------- subscription

SUBSCRIPTION_ACTIVITIES = [
    subscription.onboard_to_free_trial,
    subscription.upgrade_from_trial_to_paid,
    subscription.charge_monthly_fee,
    subscription.process_cancellation,
]


def subscription_harness() -> Harness:
    return Harness([subscription.subscription], SUBSCRIPTION_ACTIVITIES)


def test_subscription_charges_36_months_over_three_years() -> None:
    h = subscription_harness()
    wid = h.client.start(subscription.subscription, "cust-1", id="sub-1")
    h.run()
    fee = subscription.FEE
    assert h.result(wid, subscription.Status) == subscription.Status("ended", 36, 36 * fee)
    assert h.client.query(wid, "status", type=subscription.Status).stage == "ended"
    assert h.elapsed() == subscription.TRIAL + 36 * subscription.PERIOD  # 1140 days
    assert h.scheduled(wid).count("charge_monthly_fee") == 36
    assert "process_cancellation" not in h.scheduled(wid)
    # every charge carried its own idempotency key, and they all differ
    scheduled = h.events(wid, ActivityScheduled)
    charges = {ev.seq for ev in scheduled if ev.activity_type == "charge_monthly_fee"}
    receipts = [
        h.client.codec.decode(ev.result, subscription.Receipt)
        for ev in h.events(wid, ActivityCompleted)
        if ev.seq in charges
    ]
    assert [r.month for r in receipts] == list(range(1, 37))
    assert len({r.charge_id for r in receipts}) == 36
    assert h.kinds(wid)[-1] == "WorkflowCompleted"


def test_subscription_cancelled_during_the_trial_is_never_charged() -> None:
    h = subscription_harness()
    wid = h.client.start(subscription.subscription, "cust-2")
    h.run(skip_time=False)
    assert h.client.query(wid, "status", type=subscription.Status).stage == "trial"
    h.clock.advance(timedelta(days=10))
    h.client.signal(wid, "cancel")
    h.run()
    assert h.result(wid, subscription.Status) == subscription.Status("cancelled")
    assert h.client.query(wid, "status", type=subscription.Status).stage == "cancelled"
    assert h.elapsed() == timedelta(days=10)  # the trial timer lost and was cancelled
    assert "TimerCancelled" in h.kinds(wid)
    assert h.scheduled(wid) == ["onboard_to_free_trial", "process_cancellation"]


def test_subscription_cancelled_mid_way_stops_charging() -> None:
    h = subscription_harness()
    wid = h.client.start(subscription.subscription, "cust-3")
    h.run(skip_time=False)
    h.clock.advance(subscription.TRIAL)
    h.run(skip_time=False)  # upgraded, first charge
    for _ in range(11):
        h.clock.advance(subscription.PERIOD)
        h.run(skip_time=False)
    status = h.client.query(wid, "status", type=subscription.Status)
    assert (status.stage, status.months_charged) == ("paid", 12)
    h.clock.advance(timedelta(days=3))
    h.client.signal(wid, "cancel")
    h.run()
    fee = subscription.FEE
    expected = subscription.Status("cancelled", 12, 12 * fee)
    assert h.result(wid, subscription.Status) == expected
    assert h.client.query(wid, "status", type=subscription.Status) == expected
    assert h.scheduled(wid).count("charge_monthly_fee") == 12
    assert h.scheduled(wid)[-1] == "process_cancellation"
    assert h.kinds(wid).count("TimerCancelled") == 1
    assert h.client.describe(wid).status is Status.COMPLETED


def test_subscription_main_runs_three_virtual_years() -> None:
    clock = VirtualClock()
    start = clock.now()
    assert subscription.main(clock, MemoryStore()) == subscription.Status("ended", 36, 36 * 999)
    assert clock.now() - start == timedelta(days=60 + 36 * 30)


def test_subscription_module_runs_as_the_readme_says(tmp_path: pathlib.Path) -> None:
    store = tmp_path / ".tpp" / "store.db"
    done = subprocess.run(
        [sys.executable, "-m", "examples.subscription"],
        cwd=ROOT,
        env={**os.environ, "TPP_STORE": f"sqlite:{store}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "ended" in done.stdout and "36 charges" in done.stdout, done.stdout
    assert f"history kept in sqlite:{store}" in done.stdout
    assert store.exists()  # the embedded default store, durable


# ---------------------------------------------------------------------- money transfer


def transfer_harness(bank: money_transfer.Bank) -> Harness:
    return Harness([money_transfer.transfer], [bank.withdraw, bank.deposit, bank.refund])


def test_transfer_survives_a_lost_reply_without_paying_twice() -> None:
    bank = money_transfer.Bank({"alice": 10_000, "bob": 0})
    bank.lose_reply.add("bob")
    h = transfer_harness(bank)
    wid = h.client.start(money_transfer.transfer, money_transfer.Transfer("alice", "bob", 2_500))
    h.run()
    assert h.result(wid, money_transfer.Outcome).status == "completed"
    assert bank.balances == {"alice": 7_500, "bob": 2_500}  # credited once, not twice
    (retry,) = h.events(wid, ActivityAttemptFailed)
    assert retry.error.type == "ConnectionError"
    assert len(bank.applied) == 2  # one key per activity, shared by the deposit's attempts


def test_saga_refunds_when_the_deposit_fails() -> None:
    bank = money_transfer.Bank({"alice": 10_000, "carol": 0}, frozen=("carol",))
    h = transfer_harness(bank)
    t = money_transfer.Transfer("alice", "carol", 1_000)
    wid = h.client.start(money_transfer.transfer, t)
    h.run()
    outcome = h.result(wid, money_transfer.Outcome)
    assert outcome.status == "refunded" and "3 attempts" in outcome.detail
    assert bank.balances == {"alice": 10_000, "carol": 0}
    assert h.scheduled(wid) == ["withdraw", "deposit", "refund"]
    assert len(h.events(wid, ActivityAttemptFailed)) == 2
    (failed,) = h.events(wid, ActivityFailed)
    assert failed.attempt == 3 and failed.error.type.endswith("AccountFrozen")


def test_insufficient_funds_is_not_retried() -> None:
    bank = money_transfer.Bank({"bob": 100, "alice": 0})
    h = transfer_harness(bank)
    wid = h.client.start(money_transfer.transfer, money_transfer.Transfer("bob", "alice", 9_999))
    h.run()
    assert h.result(wid, money_transfer.Outcome).status == "rejected"
    assert h.scheduled(wid) == ["withdraw"]
    assert h.events(wid, ActivityAttemptFailed) == []
    assert h.events(wid, ActivityFailed)[0].attempt == 1
    assert bank.balances == {"bob": 100, "alice": 0}


def test_money_transfer_main() -> None:
    outcomes = money_transfer.main()
    assert [o.status for o in outcomes] == ["completed", "refunded", "rejected"]


# ---------------------------------------------------------------------- expense approval

EXPENSE = expense_approval.Expense("exp-9", "ann@example.com", "max@example.com", 1_234, "lunch")


def expense_harness() -> Harness:
    activities = [expense_approval.notify, expense_approval.reimburse, expense_approval.escalate]
    return Harness([expense_approval.expense_report], activities)


def test_expense_escalates_after_14_days_without_a_decision(
    capsys: pytest.CaptureFixture[str],
) -> None:
    h = expense_harness()
    wid = h.client.start(expense_approval.expense_report, EXPENSE, id=EXPENSE.id)
    h.run()
    assert h.result(wid) == "escalated"
    assert h.elapsed() == timedelta(days=14)
    (timer,) = h.events(wid, TimerStarted)
    assert timer.duration == expense_approval.DEADLINE
    assert "TimerFired" in h.kinds(wid)
    assert h.scheduled(wid) == ["notify", "escalate", "notify", "notify"]
    assert "reimburse" not in h.scheduled(wid)
    assert h.client.query(wid, "state") == "escalated"
    out = capsys.readouterr().out
    assert "to finance@example.com: ticket-exp-9" in out


def test_expense_approved_before_the_deadline() -> None:
    h = expense_harness()
    wid = h.client.start(expense_approval.expense_report, EXPENSE, id=EXPENSE.id)
    h.run(skip_time=False)
    assert h.client.query(wid, "state") == "waiting for the manager"
    h.clock.advance(timedelta(days=3))
    h.client.signal(wid, "decision", expense_approval.Decision("approve", "max@example.com"))
    h.run()
    assert h.result(wid) == "approved"
    assert h.elapsed() == timedelta(days=3)  # the losing deadline kept nothing open
    assert "TimerCancelled" in h.kinds(wid) and "TimerFired" not in h.kinds(wid)
    assert h.scheduled(wid) == ["notify", "reimburse", "notify"]


def test_expense_rejected_with_a_plain_json_payload() -> None:
    h = expense_harness()
    wid = h.client.start(expense_approval.expense_report, EXPENSE)
    decision = {"verdict": "reject", "by": "max@example.com", "comment": "no receipt"}
    h.client.signal(wid, "decision", decision)  # sent before the workflow waits: buffered
    h.run()
    assert h.result(wid) == "rejected"
    assert h.scheduled(wid) == ["notify", "notify"]
    assert h.client.query(wid, "state") == "rejected"


def test_expense_approval_main() -> None:
    assert expense_approval.main() == {"exp-1": "approved", "exp-2": "escalated"}


# ---------------------------------------------------------------------- repair order

CLAIM = repair_order.Claim("Olga", "kettle", "does not boil")


def repair_harness() -> Harness:
    workflows = [repair_order.repair_order, repair_order.quality_control]
    return Harness(workflows, repair_order.ACTIVITIES)


def test_repair_order_goes_through_quality_control_and_settles() -> None:
    h = repair_harness()
    wid = h.client.start(repair_order.repair_order, CLAIM, id="claim-7")
    h.run()
    assert h.client.query(wid, "stage") == "registered: waiting for the clerk"
    h.client.signal(wid, "repair_type", repair_order.RepairType.WARRANTY)
    h.run(skip_time=False)
    assert h.client.query(wid, "stage") == "warranty repair by Ivanov"
    h.clock.advance(timedelta(days=6))
    h.client.signal(wid, "repaired")
    h.run()
    settlement = h.result(wid, repair_order.Settlement)
    assert settlement.technician == "Ivanov" and settlement.inspector == "Sidorov"
    assert (settlement.cents, settlement.late) == (0, False)
    assert h.client.query(wid, "stage") == "closed"
    (child,) = h.events(wid, ChildWorkflowStarted)
    assert child.workflow_id == f"{settlement.order}/qc"
    assert h.client.describe(child.workflow_id).status is Status.COMPLETED
    assert h.scheduled(child.workflow_id) == ["assign_inspector", "inspect_repair"]
    assert "ChildWorkflowCompleted" in h.kinds(wid)
    assert h.scheduled(wid)[-1] == "settle"


def test_repair_order_reports_a_missed_time_limit() -> None:
    h = repair_harness()
    wid = h.client.start(repair_order.repair_order, CLAIM)
    h.client.signal(wid, "repair_type", repair_order.RepairType.PAID)
    h.run()  # the 5-day limit passes
    assert h.elapsed() == timedelta(days=5)
    assert h.client.query(wid, "stage") == "paid repair by Petrova: overdue"
    assert "report_missed_deadline" in h.scheduled(wid)
    h.client.signal(wid, "repaired")
    h.run()
    settlement = h.result(wid, repair_order.Settlement)
    assert (settlement.cents, settlement.late) == (8_900, True)


def test_repair_order_main() -> None:
    settlement = repair_order.main()
    assert settlement.technician == "Petrova" and not settlement.late


# ---------------------------------------------------------------------- batch indexing


def check_only_batch_2_was_retried(h: Harness, wid: str, index: batch_indexing.SearchIndex) -> None:
    assert h.result(wid) == 150
    assert len(index.docs) == 150
    assert dict(index.calls) == {0: 1, 1: 1, 2: 3, 3: 1, 4: 1}
    assert index.resumed_at[2] == [0, 1, 2]  # each retry resumed from the last heartbeat
    scheduled = h.events(wid, ActivityScheduled)
    assert len(scheduled) == 5  # scheduled once each; a retry is not a new activity
    retries = h.events(wid, ActivityAttemptFailed)
    assert [r.attempt for r in retries] == [1, 2]
    assert {r.seq for r in retries} == {scheduled[2].seq}
    assert all(r.error.type == "ConnectionError" for r in retries)


def batch_harness() -> tuple[Harness, str, batch_indexing.SearchIndex]:
    index = batch_indexing.SearchIndex(failures={2: 2})  # batch 2 is dropped twice
    h = Harness([batch_indexing.index_all], [index.index_batch])
    wid = h.client.start(batch_indexing.index_all, batch_indexing.make_batches(5, 30))
    return h, wid, index


def test_batch_indexing_retries_only_the_failing_batch() -> None:
    h, wid, index = batch_harness()
    h.run(skip_time=False)
    for _ in range(10):  # step the clock by hand past each retry's back-off
        if h.client.describe(wid).status is not Status.RUNNING:
            break
        h.clock.advance(timedelta(seconds=1))
        h.run(skip_time=False)
    check_only_batch_2_was_retried(h, wid, index)


def test_batch_indexing_retries_with_skip_time() -> None:
    h, wid, index = batch_harness()
    h.run()
    assert h.client.describe(wid).status is Status.COMPLETED
    check_only_batch_2_was_retried(h, wid, index)


def test_batch_indexing_resumes_from_the_latest_heartbeat() -> None:
    index = batch_indexing.SearchIndex(failures={0: 1}, fail_after=2)
    h = Harness([batch_indexing.index_all], [index.index_batch])
    wid = h.client.start(batch_indexing.index_all, batch_indexing.make_batches(1, 30))
    h.run(skip_time=False)
    h.clock.advance(timedelta(seconds=1))
    h.run(skip_time=False)
    assert h.result(wid) == 30
    assert index.resumed_at[0] == [0, 2]  # two chunks were in when the first attempt failed


def test_batch_indexing_main() -> None:
    index = batch_indexing.main()
    assert dict(index.calls) == {0: 1, 1: 1, 2: 3, 3: 1, 4: 1}
