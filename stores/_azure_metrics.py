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

import threading
import urllib.parse
from collections import Counter
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy

from cas.azure import _QuickRetry

__all__ = ["CountingRetry", "RequestCounter", "operation"]


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
