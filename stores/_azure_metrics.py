"""Requests to Azure Storage, counted by REST operation (an azure-core pipeline policy).

Every ``AzureBlobStore`` counts its requests in a :class:`RequestCounter`,
twice: once per call (``calls``: what the store asked for) and once per attempt
(``attempts``: what went over the wire, the SDK's retries included).  The
per-call count sits in the pipeline's retry policy (:class:`CountingRetry`),
the one place where a call becomes attempts (the storage SDK takes no
``per_call_policies``); attempts are counted by the public ``raw_request_hook``.
:meth:`RequestCounter.policy` is the same count as a plain azure-core
``SansIOHTTPPolicy``, for pipelines of your own.  ``store.requests`` is the
counter; ``snapshot()`` returns the counts by operation name, as the REST API
names them (``Append Block``, ``Get Blob``, ``Lease Blob (acquire)``...)::

    before = store.requests.snapshot()
    ...  # run a workload
    used = store.requests.since(before)   # {"Append Block": 101, "Get Blob": 3, ...}

The operation is read off the HTTP request alone (method, ``comp=``/``restype=``
and a few ``x-ms-`` headers), so the policy never touches bodies and costs a few
microseconds per request.
"""

from __future__ import annotations

import builtins
import threading
import urllib.parse
from collections import Counter
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy

from cas.azure import _QuickRetry

__all__ = ["CountingRetry", "RequestCounter", "operation", "request_report"]


def operation(method: str, url: str, headers: Any) -> str:
    """The REST operation of a Blob service request (``"Append Block"``...)."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    comp = query.get("comp", [""])[0].lower()
    restype = query.get("restype", [""])[0].lower()
    method = method.upper()
    if restype == "container":
        if comp == "list":
            return "List Blobs"
        return {"PUT": "Create Container", "DELETE": "Delete Container"}.get(
            method, f"{method} Container"
        )
    if comp == "list":
        return "List Containers"
    if method == "PUT":
        if comp == "lease":
            action = str(headers.get("x-ms-lease-action", "")).lower()
            return f"Lease Blob ({action})"
        named = {
            "appendblock": "Append Block",
            "metadata": "Set Blob Metadata",
            "block": "Put Block",
            "blocklist": "Put Block List",
            "seal": "Seal Blob",
            "tags": "Set Blob Tags",
            "properties": "Set Blob Properties",
        }
        if comp in named:
            return named[comp]
        if str(headers.get("x-ms-blob-type", "")).lower() == "appendblob":
            return "Create Append Blob"
        return "Put Blob"
    if method == "GET":
        return {"metadata": "Get Blob Metadata", "tags": "Get Blob Tags"}.get(comp, "Get Blob")
    if method == "HEAD":
        return "Get Blob Properties"
    if method == "DELETE":
        return "Delete Blob"
    return f"{method} {comp or 'blob'}"


class RequestCounter:
    """Thread-safe counts of requests by operation: ``calls`` and ``attempts``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()

    def policy(self, attempts: bool = False) -> SansIOHTTPPolicy:  # type: ignore[type-arg]
        """A policy that counts into ``calls`` (or ``attempts``) wherever it is placed."""
        return _Count(self, self.attempts if attempts else self.calls)

    def note(self, counter: Counter[str], name: str) -> None:
        with self._lock:
            counter[name] += 1

    def attempt_hook(self, request: PipelineRequest[Any]) -> None:
        """A ``raw_request_hook``: runs for every HTTP attempt."""
        http = request.http_request
        self.note(self.attempts, operation(http.method, http.url, http.headers))

    def snapshot(self, attempts: bool = False) -> dict[str, int]:
        """Counts so far by operation (``attempts=True``: every HTTP attempt)."""
        with self._lock:
            return dict(self.attempts if attempts else self.calls)

    def since(self, before: dict[str, int], attempts: bool = False) -> dict[str, int]:
        """Counts since ``before`` (a snapshot), zeros left out."""
        now = self.snapshot(attempts)
        return {k: v - before.get(k, 0) for k, v in sorted(now.items()) if v - before.get(k, 0)}

    def total(self, attempts: bool = False) -> int:
        return sum(self.snapshot(attempts).values())

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.attempts.clear()


class _Count(SansIOHTTPPolicy):  # type: ignore[type-arg]
    def __init__(self, owner: RequestCounter, counter: Counter[str]) -> None:
        super().__init__()
        self._owner = owner
        self._counter = counter

    def on_request(self, request: PipelineRequest[Any]) -> None:
        http = request.http_request
        self._owner.note(self._counter, operation(http.method, http.url, http.headers))


class CountingRetry(_QuickRetry):
    """The store's retry policy (quick, as ``cas.azure``'s), counting each call once."""

    def __init__(self, counter: RequestCounter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._counter = counter

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        http = request.http_request
        self._counter.note(self._counter.calls, operation(http.method, http.url, http.headers))
        response: PipelineResponse[Any, Any] = super().send(request)  # type: ignore[no-untyped-call]
        return response


# --------------------------------------------------------------------------- AZURE.md's M1


def request_report(
    connection_string: str, *, activities: int = 100, woken: int = 20, partitions: int = 16
) -> builtins.list[dict[str, Any]]:
    """Requests per activity, by operation, for AZURE.md's M1 workloads on ``AzureBlobStore``.

    Each workload runs in a container of its own (``tpp-m1-<uuid>``, deleted after)
    with a ``Client`` and a ``Worker`` on one store handle, after the worker took
    its partitions (background, not counted), and counts what the run costs:

    * ``W1`` one workflow of ``activities`` sequential activities (goal <= 1.1);
    * ``W2`` one ``All`` of ``activities`` activities (no goal);
    * ``W3`` ``woken`` rounds of a 1 h ``Timer`` then an activity, the worker's
      generator cache off (``cache_size=0``), a ``VirtualClock`` (goal <= 3);
    * ``W4`` ``woken`` rounds of ``WaitSignal`` then an activity, each signal sent
      by the client on the worker's handle (goal <= 5);
    * ``W4 (remote signaller)``: the same with the client on a handle of its own,
      as another process; the worker's scans (List Blobs every ``poll_interval``)
      are background and left out, the inbox reads they trigger are counted.

    Returns one dict per workload: ``name``, ``activities``, ``requests``,
    ``per_activity``, ``goal`` (or None) and ``operations`` (counts by operation).
    NB: a benchmark helper: it imports the engine when called, never at import.
    """
    import uuid
    from datetime import timedelta

    from azure.storage.blob import ContainerClient

    from engine import (
        All,
        Client,
        ScheduleActivity,
        Timer,
        VirtualClock,
        WaitSignal,
        Worker,
        activity,
        workflow,
    )

    from .azure import AzureBlobStore

    @activity
    def m1_step(i: int) -> int:
        return i

    @workflow
    def m1_sequence(n: int) -> Any:
        total = 0
        for i in range(n):
            total += yield ScheduleActivity(m1_step, i)
        return total

    @workflow
    def m1_fan_out(n: int) -> Any:
        return sum((yield All(*[ScheduleActivity(m1_step, i) for i in range(n)])))

    @workflow
    def m1_timer(n: int) -> Any:
        total = 0
        for i in range(n):
            yield Timer(timedelta(hours=1))
            total += yield ScheduleActivity(m1_step, i)
        return total

    @workflow
    def m1_signal(n: int) -> Any:
        total = 0
        for _ in range(n):
            total += yield ScheduleActivity(m1_step, (yield WaitSignal("go")))
        return total

    rows: builtins.list[dict[str, Any]] = []
    plan: builtins.list[tuple[str, Any, int, float | None, int, bool]] = [
        ("W1 sequential", m1_sequence, activities, 1.1, 1000, False),
        ("W2 All", m1_fan_out, activities, None, 1000, False),
        ("W3 timer-woken (cache off)", m1_timer, woken, 3.0, 0, False),
        ("W4 signal-woken", m1_signal, woken, 5.0, 1000, False),
        ("W4 (remote signaller)", m1_signal, woken, 5.0, 1000, True),
    ]
    for name, fn, n, goal, cache, remote in plan:
        container = f"tpp-m1-{uuid.uuid4().hex[:12]}"
        store = AzureBlobStore(connection_string, container, partitions=partitions,
                               poll_interval=0.0 if remote else 1.0)  # fmt: skip
        sender = (
            AzureBlobStore(connection_string, container, partitions=partitions) if remote else store
        )
        try:
            clock = VirtualClock()
            client = Client(sender, clock=clock)
            worker = Worker(store, workflows=[fn], activities=[m1_step], clock=clock,
                            cache_size=cache)  # fmt: skip
            worker.run_until_idle()  # the worker takes its partitions: background
            before, sent_before = store.requests.snapshot(), sender.requests.snapshot()
            wid = client.start(fn, n)
            if fn is m1_signal:
                for i in range(n):
                    worker.run_until_idle()
                    client.signal(wid, "go", i)
            worker.run_until_idle(skip_time=True)
            if remote:  # the Touch of the last signal is read at the worker's next scan
                worker.run_until_idle()
            used = Counter(store.requests.since(before))
            if remote:
                used.pop("List Blobs", None)  # the worker's scans: background
                used.update(sender.requests.since(sent_before))
            expected = n * (n - 1) // 2
            if client.result(wid) != expected:  # pragma: no cover - a benchmark's sanity check
                raise RuntimeError(f"{name}: wrong result")
        finally:
            if remote:
                sender.close()
            store.close()
            with ContainerClient.from_connection_string(connection_string, container) as c:
                c.delete_container()
        total = sum(used.values())
        rows.append(
            {
                "name": name,
                "activities": n,
                "requests": total,
                "per_activity": total / n,
                "goal": goal,
                "operations": dict(sorted(used.items())),
            }
        )
    return rows
