# (mypy cannot see the ``Cmd(target, *args)`` signatures of engine's commands yet)
"""Batch indexing with retries: only the batch that failed runs again.

Seed 000's motivating case: loading documents into a search service (think
Elasticsearch) batch by batch.  All batches are scheduled at once with
``All``; when the service drops one batch half-way, the retry policy runs
that batch again, alone: the others are recorded as done and never re-run.
Each batch heartbeats its progress (how many chunks are in), and a retried
attempt resumes from the last heartbeat instead of starting over.

The search service here is simulated in-process: ``SearchIndex`` and its
bound method ``index_batch``, the activity.

    python -m examples.batch_indexing
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from engine import All, RetryPolicy, ScheduleActivity, activity, activity_context, run, workflow

CHUNK = 10
RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5)


@dataclass(frozen=True)
class Document:
    id: str
    text: str


@dataclass(frozen=True)
class Batch:
    number: int
    docs: list[Document]


class SearchIndex:
    """An in-process stand-in for a search service that is down now and then."""

    def __init__(self, failures: dict[int, int] | None = None, fail_after: int = 1) -> None:
        self.docs: dict[str, Document] = {}
        self.calls: Counter[int] = Counter()  # attempts per batch number
        self.resumed_at: dict[int, list[int]] = {}  # chunk each attempt started at
        self.failures = dict(failures or {})  # batch number -> attempts that fail
        self.fail_after = fail_after  # chunks a failing attempt gets in before it drops
        self._lock = threading.Lock()

    @activity
    def index_batch(self, batch: Batch) -> int:
        ctx = activity_context()
        start: int = ctx.heartbeat_details or 0  # chunks already in, per the last attempt
        with self._lock:
            self.calls[batch.number] += 1
            self.resumed_at.setdefault(batch.number, []).append(start)
        for chunk in range(start, math.ceil(len(batch.docs) / CHUNK)):
            with self._lock:
                if chunk >= start + self.fail_after and self.failures.get(batch.number, 0):
                    self.failures[batch.number] -= 1
                    raise ConnectionError(f"503 from the search service (batch {batch.number})")
                for doc in batch.docs[chunk * CHUNK : (chunk + 1) * CHUNK]:
                    self.docs[doc.id] = doc  # upsert: indexing a document twice is harmless
            ctx.heartbeat(chunk + 1)
        return len(batch.docs)


@workflow
def index_all(batches: list[Batch]) -> Generator[Any, Any, int]:
    counts: list[int] = yield All(
        *[
            ScheduleActivity(
                SearchIndex.index_batch, b, retry=RETRY, heartbeat_timeout=timedelta(seconds=30)
            )
            for b in batches
        ]
    )
    return sum(counts)


def make_batches(n: int, size: int) -> list[Batch]:
    return [
        Batch(b, [Document(f"doc-{b}-{i}", f"text {b}.{i}") for i in range(size)]) for b in range(n)
    ]


def main() -> SearchIndex:
    index = SearchIndex(failures={2: 2})  # batch 2 is dropped half-way, twice
    total: int = run(index_all, make_batches(5, 30), activities=(index.index_batch,))
    print(f"indexed {total} documents ({len(index.docs)} distinct)")
    for number in sorted(index.calls):
        starts = index.resumed_at[number]
        print(f"  batch {number}: {index.calls[number]} attempt(s), starting at chunks {starts}")
    return index


if __name__ == "__main__":
    main()
