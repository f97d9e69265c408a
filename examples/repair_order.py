# (mypy cannot see the ``Cmd(target, *args)`` signatures of engine's commands yet)
"""A service-centre repair order, from the customer's claim to the settlement.

Seed 002's routine: register the claim; a clerk decides the repair type (the
"repair_type" signal); assign a technician; set a time limit (a timer races
the "repaired" signal; a missed limit is reported and the work goes on);
appoint a quality inspector (a child workflow); settle with the customer.
The "stage" query tells the front desk where an order stands.

    python -m examples.repair_order
"""

from __future__ import annotations

import zlib
from collections.abc import Generator
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any

from engine import Any as AnyOf
from engine import (
    Client,
    ScheduleActivity,
    SetQuery,
    StartChildWorkflow,
    Timer,
    VirtualClock,
    WaitSignal,
    Worker,
    activity,
    workflow,
)
from stores import MemoryStore


class RepairType(Enum):
    WARRANTY = "warranty"
    PAID = "paid"


TIME_LIMIT = {RepairType.WARRANTY: timedelta(days=14), RepairType.PAID: timedelta(days=5)}
PRICE_CENTS = {RepairType.WARRANTY: 0, RepairType.PAID: 8_900}


@dataclass(frozen=True)
class Claim:
    customer: str
    device: str
    complaint: str


@dataclass(frozen=True)
class Settlement:
    order: str
    technician: str
    inspector: str
    cents: int
    late: bool


@activity
def register_claim(claim: Claim) -> str:
    return f"RO-{zlib.crc32(f'{claim.customer}/{claim.device}'.encode()) % 10_000:04d}"


@activity
def assign_technician(order: str, repair: RepairType) -> str:
    return "Ivanov" if repair is RepairType.WARRANTY else "Petrova"


@activity
def report_missed_deadline(order: str, technician: str) -> None:
    print(f"  to the service manager: {order} by {technician} is past its time limit")


@activity
def assign_inspector(order: str, technician: str) -> str:
    return "Sidorov" if technician != "Sidorov" else "Kuznetsova"


@activity
def inspect_repair(order: str, inspector: str) -> None:
    pass  # raises when the repair is not good enough


@activity
def settle(order: str, customer: str, cents: int) -> str:
    return f"{customer} paid {cents / 100:.2f} for {order}"


ACTIVITIES = [register_claim, assign_technician, report_missed_deadline]
ACTIVITIES += [assign_inspector, inspect_repair, settle]


@workflow
def quality_control(order: str, technician: str) -> Generator[Any, Any, str]:
    inspector: str = yield ScheduleActivity(assign_inspector, order, technician)
    yield ScheduleActivity(inspect_repair, order, inspector)
    return inspector


@workflow
def repair_order(claim: Claim) -> Generator[Any, Any, Settlement]:
    order: str = yield ScheduleActivity(register_claim, claim)
    yield SetQuery("stage", "registered: waiting for the clerk")
    repair = RepairType((yield WaitSignal("repair_type")))
    technician: str = yield ScheduleActivity(assign_technician, order, repair)
    yield SetQuery("stage", f"{repair.value} repair by {technician}")
    winner, _ = yield AnyOf(WaitSignal("repaired"), Timer(TIME_LIMIT[repair]))
    late = winner == 1
    if late:
        yield ScheduleActivity(report_missed_deadline, order, technician)
        yield SetQuery("stage", f"{repair.value} repair by {technician}: overdue")
        yield WaitSignal("repaired")
    yield SetQuery("stage", "quality control")
    inspector: str = yield StartChildWorkflow(quality_control, order, technician, id=f"{order}/qc")
    yield SetQuery("stage", "settling with the customer")
    cents = PRICE_CENTS[repair]
    yield ScheduleActivity(settle, order, claim.customer, cents)
    yield SetQuery("stage", "closed")
    return Settlement(order, technician, inspector, cents, late)


def main(clock: VirtualClock | None = None) -> Settlement:
    clock = clock or VirtualClock()
    store = MemoryStore()
    client = Client(store, clock=clock)
    worker = Worker(store, [repair_order, quality_control], ACTIVITIES, clock=clock)
    wid = client.start(repair_order, Claim("Olga", "washing machine", "leaks"), id="claim-1")
    for signal, payload in [("repair_type", RepairType.PAID), ("repaired", None)]:
        worker.run_until_idle()
        print(f"{clock.now():%b %d} stage: {client.query(wid, 'stage')}")
        clock.advance(timedelta(days=2))  # the clerk, then the technician, take their time
        client.signal(wid, signal, payload)
    worker.run_until_idle()
    settlement: Settlement = client.result(wid, type=Settlement)
    print(f"{clock.now():%b %d} stage: {client.query(wid, 'stage')}: {settlement}")
    return settlement


if __name__ == "__main__":
    main()
