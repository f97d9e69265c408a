"""What the web UI tests share: a small app of workflows, a filled store, a client, helpers.

No tests here.  ``ui_env`` is a MemoryStore on a virtual clock with one run of
each shape the pages must show: completed with queries, failed, waiting for a
signal with a timer, retrying an activity, a parent with a child, a
continue-as-new chain.  ``client_for`` wraps an app in Starlette's TestClient
on a loopback base URL (the app refuses other host names without a token).
"""

from __future__ import annotations

import html
import re
import warnings
from collections.abc import Generator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from starlette.applications import Starlette

with warnings.catch_warnings():
    # NB: Starlette >= 1.10 wants httpx2 for its test client and warns if it finds httpx only
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

from engine import (
    Client,
    ContinueAsNew,
    RetryPolicy,
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
from engine.ui import create_app
from stores import MemoryStore

__all__ = [
    "ACTIVITIES",
    "BASE",
    "WORKFLOWS",
    "UiEnv",
    "client_for",
    "csrf_of",
    "make_env",
    "post_confirmed",
    "ui_env",
]

BASE = "http://127.0.0.1:8233"
Gen = Generator[Any, Any, Any]


class Declined(Exception): ...


@activity
def charge(customer: str, cents: int) -> str:
    return f"receipt-{customer}-{cents}"


@activity
def refuse(customer: str) -> str:
    raise Declined(f"card of {customer} declined")


@activity
def unreachable(host: str) -> str:
    raise ConnectionError(f"{host} did not answer")


@workflow
def order(customer: str) -> Gen:
    yield SetQuery("stage", "charging")
    receipt = yield ScheduleActivity(charge, customer, 250)
    yield SetQuery("stage", "waiting for approval")
    decision = yield WaitSignal("approve", timeout=timedelta(days=14))
    yield SetQuery("stage", "done")
    return {"receipt": receipt, "decision": decision}


@workflow
def doomed(customer: str) -> Gen:
    return (yield ScheduleActivity(refuse, customer, retry=RetryPolicy(maximum_attempts=1)))


@workflow
def patient(host: str) -> Gen:
    policy = RetryPolicy(initial_interval=timedelta(minutes=5), maximum_attempts=10)
    return (yield ScheduleActivity(unreachable, host, retry=policy))


@workflow
def napper(days: int) -> Gen:
    yield Timer(timedelta(days=days))
    return "rested"


@workflow
def parent(child_id: str) -> Gen:
    got = yield StartChildWorkflow(napper, 0, id=child_id)
    return f"child said {got}"


@workflow
def counter(n: int) -> Gen:
    yield ScheduleActivity(charge, "count", n)
    if n < 2:
        yield ContinueAsNew(n + 1)
    return n


WORKFLOWS = [order, doomed, patient, napper, parent, counter]
ACTIVITIES = [charge, refuse, unreachable]


@dataclass
class UiEnv:
    store: MemoryStore
    clock: VirtualClock
    client: Client
    worker: Worker
    app: Starlette
    http: TestClient

    def run(self, *, skip_time: bool = False) -> None:
        self.worker.run_until_idle(skip_time=skip_time)


def client_for(app: Starlette, **kwargs: Any) -> TestClient:
    kwargs.setdefault("base_url", BASE)
    return TestClient(app, **kwargs)


def make_env(**app_options: Any) -> UiEnv:
    clock = VirtualClock()
    store = MemoryStore()
    client = Client(store, clock=clock)
    worker = Worker(store, workflows=WORKFLOWS, activities=ACTIVITIES, clock=clock)
    app = create_app(store, **app_options)
    return UiEnv(store, clock, client, worker, app, client_for(app))


@pytest.fixture
def ui_env() -> UiEnv:
    """A store with one run of each shape (ids below) and an app over it."""
    env = make_env()
    c = env.client
    c.start(order, "ann", id="order-done")
    c.start(order, "bo", id="order-waiting")
    c.start(doomed, "cy", id="doomed-1")
    c.start(patient, "db.internal", id="patient-1")
    c.start(parent, "kid-1", id="parent-1")
    c.start(counter, 0, id="counter-1")
    env.run()
    c.signal("order-done", "approve", {"by": "max"})
    env.run()
    return env


_CSRF = re.compile(r'name="csrf(?:-token)?" (?:value|content)="([0-9a-f]{64})"')


def csrf_of(html: str) -> str:
    """The CSRF token a page carries (its meta tag, or its first form's field)."""
    m = _CSRF.search(html)
    assert m is not None, "the page has no CSRF field"
    return m.group(1)


def post_confirmed(http: TestClient, path: str, data: dict[str, str]) -> Any:
    """POST an action's form, check the confirmation page, then confirm it."""
    token = csrf_of(http.get("/").text)
    first = http.post(path, data={**data, "csrf": token}, follow_redirects=False)
    assert first.status_code == 200, first.text
    assert 'name="confirm" value="yes"' in first.text
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', first.text)
    confirmed = {k: html.unescape(v) for k, v in fields}
    return http.post(path, data=confirmed, follow_redirects=False)
