# (mypy cannot see the ``Cmd(target, *args)`` signatures of engine's commands yet)
"""Money transfer as a saga: withdraw, deposit, and refund if the deposit fails.

Seed 001's second example.  Money leaves the source account, then arrives at
the target; if the deposit fails for good (the target is frozen, three attempts
in a row), the workflow compensates with a refund.  An overdraft is refused at
once: ``InsufficientFunds`` is not worth retrying.  Each ledger call is keyed
by ``activity_context().idempotency_key``, the same for every attempt, so a
deposit whose reply was lost is not credited twice when it is retried.  The
activities are the methods of one ``Bank`` object.

    python -m examples.money_transfer
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from engine import (
    ActivityError,
    RetryPolicy,
    ScheduleActivity,
    activity,
    activity_context,
    run,
    workflow,
)

BACKOFF = timedelta(milliseconds=50)
RETRY = RetryPolicy(
    initial_interval=BACKOFF, maximum_attempts=3, non_retryable=["InsufficientFunds"]
)


class InsufficientFunds(Exception): ...


class AccountFrozen(Exception): ...


@dataclass(frozen=True)
class Transfer:
    source: str
    target: str
    cents: int


@dataclass(frozen=True)
class Outcome:
    status: str  # "completed", "refunded" or "rejected"
    detail: str = ""


class Bank:
    """A tiny in-process ledger that applies each idempotency key once."""

    def __init__(self, balances: dict[str, int], frozen: tuple[str, ...] = ()) -> None:
        self.balances = dict(balances)
        self.frozen = set(frozen)
        self.applied: dict[str, int] = {}  # idempotency key -> signed amount
        self.lose_reply: set[str] = set()  # accounts whose next reply gets lost
        self._lock = threading.Lock()

    def _apply(self, account: str, cents: int) -> str:
        key = activity_context().idempotency_key
        with self._lock:
            if key not in self.applied:  # a retry of an applied call changes nothing
                if account in self.frozen:
                    raise AccountFrozen(f"account {account} is frozen")
                if self.balances[account] + cents < 0:
                    raise InsufficientFunds(f"{account} has {self.balances[account]} cents")
                self.balances[account] += cents
                self.applied[key] = cents
            if account in self.lose_reply:  # the work is done, but the caller never hears
                self.lose_reply.discard(account)
                raise ConnectionError(f"reply from {account}'s bank lost")
        return key

    @activity
    def withdraw(self, account: str, cents: int) -> str:
        return self._apply(account, -cents)

    @activity
    def deposit(self, account: str, cents: int) -> str:
        return self._apply(account, cents)

    @activity
    def refund(self, account: str, cents: int) -> str:
        return self._apply(account, cents)


@workflow
def transfer(t: Transfer) -> Generator[Any, Any, Outcome]:
    try:
        yield ScheduleActivity(Bank.withdraw, t.source, t.cents, retry=RETRY)
    except ActivityError as err:
        return Outcome("rejected", err.message)
    try:
        yield ScheduleActivity(Bank.deposit, t.target, t.cents, retry=RETRY)
    except ActivityError as err:  # compensate: put the money back where it came from
        yield ScheduleActivity(Bank.refund, t.source, t.cents, retry=RETRY)
        return Outcome("refunded", f"{err.message} ({err.attempt} attempts)")
    return Outcome("completed")


def main() -> list[Outcome]:
    bank = Bank({"alice": 10_000, "bob": 0, "carol": 0}, frozen=("carol",))
    activities = (bank.withdraw, bank.deposit, bank.refund)
    outcomes: list[Outcome] = []
    bank.lose_reply.add("bob")  # bob's first deposit goes through, its reply does not
    for t in [
        Transfer("alice", "bob", 2_500),
        Transfer("alice", "carol", 1_000),  # carol's account is frozen
        Transfer("bob", "alice", 9_999),  # bob cannot afford it
    ]:
        outcome: Outcome = run(transfer, t, activities=activities)
        line = f"{t.source} -> {t.target} {t.cents / 100:.2f}: {outcome.status} {outcome.detail}"
        print(line.rstrip())
        outcomes.append(outcome)
    print("balances:", bank.balances)
    return outcomes


if __name__ == "__main__":
    main()
