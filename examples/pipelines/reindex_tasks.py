"""The tasks of ``reindex.toml``: re-index a product catalogue into a flaky search service.

Seed 000's motivating case, as a pipeline (seed 004): the catalogue is
fetched, split into batches, each batch is indexed (a fan-out: one activity
per batch, retried when the service answers 503), and a report sums it up.
A snapshot of the index, taken in parallel with the fetch, says how many
documents were there before.

The search service is simulated: :class:`SearchService` keeps one JSON file
per document under a directory (so worker processes share it, and a batch
indexed twice is harmless: an upsert), or in memory when no directory is
given.  It is *flaky* on request: ``ReindexRequest.flaky`` maps a batch number
to how many attempts at it fail with a 503, decided by the attempt number, so
the same batches fail in every process, after a crash too.  An *outage*
(``SearchService.set_outage``) refuses some batches until it is over, however
often they are tried: a run fails, and a re-run after the outage reuses what
the failed run had finished.

    python -m examples.pipelines.reindex_tasks
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import ClassVar

from engine import activity_context

__all__ = [
    "Batch",
    "Catalogue",
    "Indexed",
    "Product",
    "ReindexRequest",
    "SearchService",
    "Summary",
    "fetch_catalogue",
    "index_batch",
    "main",
    "report",
    "snapshot",
    "split_batches",
]


@dataclass(frozen=True)
class ReindexRequest:
    """The pipeline's input: how much to index, where, and which batches the service drops."""

    products: int = 100
    batch_size: int = 25
    index_dir: str | None = None  # the search service's storage; None: in this process
    flaky: dict[int, int] = field(default_factory=dict)  # batch number -> attempts that fail
    pause: float = 0.0  # seconds the service takes per batch


@dataclass(frozen=True)
class Product:
    sku: str
    title: str
    price_cents: int


@dataclass(frozen=True)
class Catalogue:
    request: ReindexRequest
    products: list[Product]


@dataclass(frozen=True)
class Batch:
    number: int
    products: list[Product]
    index_dir: str | None
    failures: int  # attempts at this batch that the service drops
    pause: float


@dataclass(frozen=True)
class Indexed:
    batch: int
    documents: int
    attempt: int  # the attempt that succeeded


@dataclass(frozen=True)
class Summary:
    before: int  # documents in the index before
    indexed: int
    batches: int
    retried: list[int]  # batches that needed more than one attempt


class SearchService:
    """A stand-in for a search service: documents by id, in a directory or in memory."""

    _memory: ClassVar[dict[str, dict[str, object]]] = {}
    _memory_outage: ClassVar[set[int]] = set()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, directory: str | None) -> None:
        self.directory = pathlib.Path(directory) if directory is not None else None

    def set_outage(self, batches: list[int]) -> None:
        """Refuse these batch numbers (with a 503) until the next ``set_outage([])``."""
        if self.directory is None:
            with self._lock:
                self._memory_outage.clear()
                self._memory_outage.update(batches)
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "outage").write_text(json.dumps(sorted(batches)))

    def down(self, batch: int) -> bool:
        if self.directory is None:
            return batch in self._memory_outage
        try:
            return batch in json.loads((self.directory / "outage").read_text())
        except FileNotFoundError:
            return False

    def count(self) -> int:
        if self.directory is None:
            return len(self._memory)
        if not self.directory.is_dir():
            return 0
        return sum(1 for p in self.directory.iterdir() if p.suffix == ".json")

    def upsert(self, doc_id: str, doc: dict[str, object]) -> None:
        if self.directory is None:
            with self._lock:
                self._memory[doc_id] = doc
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{doc_id}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.directory / f"{doc_id}.json")  # atomic: readers never see half

    @classmethod
    def clear_memory(cls) -> None:
        """Forget the in-memory index and outage."""
        with cls._lock:
            cls._memory.clear()
            cls._memory_outage.clear()


def snapshot(request: ReindexRequest) -> int:
    """How many documents the index holds before re-indexing."""
    return SearchService(request.index_dir).count()


def fetch_catalogue(request: ReindexRequest) -> Catalogue:
    """The catalogue (generated: ``request.products`` products, the same every time)."""
    products = [
        Product(sku=f"SKU-{i:05d}", title=f"Product {i}", price_cents=100 + (i * 37) % 900)
        for i in range(request.products)
    ]
    return Catalogue(request=request, products=products)


def split_batches(catalogue: Catalogue) -> list[Batch]:
    """The catalogue in batches of ``batch_size`` products."""
    r = catalogue.request
    size = max(1, r.batch_size)
    return [
        Batch(
            number=n,
            products=catalogue.products[start : start + size],
            index_dir=r.index_dir,
            failures=r.flaky.get(n, 0),
            pause=r.pause,
        )
        for n, start in enumerate(range(0, len(catalogue.products), size))
    ]


def index_batch(batch: Batch) -> Indexed:
    """Upsert a batch's documents; the service drops the batch's first ``failures`` attempts."""
    attempt = activity_context().attempt
    time.sleep(batch.pause)
    service = SearchService(batch.index_dir)
    if attempt <= batch.failures or service.down(batch.number):
        raise ConnectionError(f"503 Service Unavailable (batch {batch.number}, attempt {attempt})")
    for p in batch.products:
        service.upsert(p.sku, {"title": p.title, "price_cents": p.price_cents})
    return Indexed(batch=batch.number, documents=len(batch.products), attempt=attempt)


def report(before: int, indexed: list[Indexed]) -> Summary:
    """Sum it up (``before`` comes from ``snapshot``, listed first; ``indexed`` from ``index``)."""
    return Summary(
        before=before,
        indexed=sum(i.documents for i in indexed),
        batches=len(indexed),
        retried=[i.batch for i in indexed if i.attempt > 1],
    )


def main() -> Summary:
    """Re-index 120 products into a directory, batch 2 dropped twice; print the summary."""
    from engine import VirtualClock
    from engine.pipeline import load, run

    pipeline = load(pathlib.Path(__file__).with_name("reindex.toml"))
    with tempfile.TemporaryDirectory() as index_dir:
        request = ReindexRequest(products=120, index_dir=index_dir, flaky={2: 2})
        result = run(pipeline, request, clock=VirtualClock())
        summary = Summary(**result)
        print(f"indexed {summary.indexed} products in {summary.batches} batches")
        print(f"batches that needed a retry: {summary.retried}")
        print(f"documents in the index: {SearchService(index_dir).count()}")
    print(pipeline.mermaid())
    return summary


if __name__ == "__main__":
    main()
