# (mypy cannot see the ``Cmd(target, *args)`` signatures of engine's commands yet)
"""Expense approval: a workflow that waits for a human, but not forever.

An employee files an expense report (seed 003).  The manager is notified and
has 14 days to send a "decision" signal, approve or reject.  An approved
report is reimbursed; a report nobody decides on is escalated to finance
when the deadline passes, and the employee hears about it.  While waiting,
the run holds no thread and no process: only a timer in the store.

``main()`` files two reports on a ``VirtualClock``: one is approved by its
manager, the other sits unanswered until the 14 days are skipped over.

    python -m examples.expense_approval
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import msgspec

from engine import (
    Client,
    ScheduleActivity,
    SetQuery,
    VirtualClock,
    WaitSignal,
    Worker,
    activity,
    workflow,
)
from stores import MemoryStore

DEADLINE = timedelta(days=14)
FINANCE = "finance@example.com"


@dataclass(frozen=True)
class Expense:
    id: str
    employee: str
    manager: str
    cents: int
    description: str


@dataclass(frozen=True)
class Decision:
    verdict: Literal["approve", "reject"]
    by: str
    comment: str = ""


@activity
def notify(recipient: str, message: str) -> None:
    print(f"  to {recipient}: {message}")


@activity
def reimburse(expense: Expense) -> str:
    return f"payout-{expense.id}"


@activity
def escalate(expense: Expense, waited_days: int) -> str:
    return f"ticket-{expense.id}: no decision from {expense.manager} in {waited_days} days"


@workflow
def expense_report(expense: Expense) -> Generator[Any, Any, str]:
    amount = f"${expense.cents / 100:.2f} for {expense.description}"
    yield ScheduleActivity(notify, expense.manager, f"please approve {amount}")
    yield SetQuery("state", "waiting for the manager")
    try:
        payload = yield WaitSignal("decision", timeout=DEADLINE)
    except TimeoutError:
        ticket = yield ScheduleActivity(escalate, expense, DEADLINE.days)
        yield ScheduleActivity(notify, FINANCE, ticket)
        yield ScheduleActivity(notify, expense.employee, f"{amount}: escalated to finance")
        yield SetQuery("state", "escalated")
        return "escalated"
    # a signal payload arrives as plain JSON data: give it its type here
    decision = msgspec.convert(payload, Decision)
    if decision.verdict == "approve":
        payout = yield ScheduleActivity(reimburse, expense)
        outcome = "approved"
        message = f"{amount}: approved by {decision.by}, {payout}"
    else:
        outcome = "rejected"
        message = f"{amount}: rejected by {decision.by} ({decision.comment})"
    yield ScheduleActivity(notify, expense.employee, message)
    yield SetQuery("state", outcome)
    return outcome


def main(clock: VirtualClock | None = None) -> dict[str, str]:
    clock = clock or VirtualClock()
    store = MemoryStore()
    client = Client(store, clock=clock)
    worker = Worker(store, [expense_report], [notify, reimburse, escalate], clock=clock)
    taxi = Expense("exp-1", "ann@example.com", "max@example.com", 4_250, "a taxi")
    hotel = Expense("exp-2", "bo@example.com", "max@example.com", 31_000, "a hotel")
    for expense in (taxi, hotel):
        client.start(expense_report, expense, id=expense.id)
    worker.run_until_idle()  # both managers notified; both runs now wait
    print("exp-1 is", client.query("exp-1", "state"))
    client.signal("exp-1", "decision", Decision("approve", "max@example.com"))
    worker.run_until_idle(skip_time=True)  # exp-1 finishes; exp-2's 14 days pass
    results = {e.id: client.result(e.id) for e in (taxi, hotel)}
    print(f"{results} on {clock.now():%Y-%m-%d}")
    return results


if __name__ == "__main__":
    main()
