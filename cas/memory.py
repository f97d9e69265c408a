"""MemoryCAS: blobs in a dict, thread-safe; survives nothing beyond its process.

A real, complete backend (it passes the same conformance suite as the durable
ones), so tests and notebooks use it as is.

>>> from cas import MemoryCAS
>>> with MemoryCAS() as cas:
...     digest = cas.put(b"hello")
...     cas.get(digest)
b'hello'
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Self

from engine._errors import CorruptionError

from ._protocol import ALGORITHM, BlobInfo, BlobNotFoundError, check_digest

__all__ = ["MemoryCAS"]


class MemoryCAS:
    """An in-memory CAS (see ``cas._protocol.CAS``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # digest -> (bytes, modified); tests tamper with it to simulate damage
        self._blobs: dict[str, tuple[bytes, float]] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this MemoryCAS is closed")

    def put(self, data: bytes) -> str:
        """Store ``data`` (once) and return its digest; refreshes the time of a known blob."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"a CAS stores bytes, got {type(data).__name__}")
        data = bytes(data)
        digest = f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"
        with self._lock:
            self._check_open()
            known = self._blobs.get(digest)
            if known is not None and len(known[0]) == len(data):
                data = known[0]  # dedup: keep what is stored, refresh its time
            self._blobs[digest] = (data, time.time())
        return digest

    def get(self, digest: str) -> bytes:
        """The blob's bytes, rehashed (``CorruptionError`` on a mismatch)."""
        hexdigest = check_digest(digest)
        with self._lock:
            self._check_open()
            entry = self._blobs.get(digest)
        if entry is None:
            raise BlobNotFoundError(f"blob {digest} is missing from this MemoryCAS")
        data = entry[0]
        actual = hashlib.sha256(data).hexdigest()
        if actual != hexdigest:
            raise CorruptionError(
                f"blob {digest} in this MemoryCAS is corrupt: its {len(data)} bytes "
                f"hash to {ALGORITHM}:{actual}"
            )
        return data

    def has(self, digest: str) -> bool:
        """Whether a blob is stored under ``digest``."""
        check_digest(digest)
        with self._lock:
            self._check_open()
            return digest in self._blobs

    def delete(self, digest: str, *, older_than: float | None = None) -> bool:
        """Remove a blob (only if last put before ``older_than``, when given)."""
        check_digest(digest)
        with self._lock:
            self._check_open()
            entry = self._blobs.get(digest)
            if entry is None or (older_than is not None and entry[1] >= older_than):
                return False
            del self._blobs[digest]
            return True

    def blobs(self) -> Iterator[BlobInfo]:
        """Every stored blob (a snapshot: deleting while iterating is fine)."""
        with self._lock:
            self._check_open()
            items = sorted(self._blobs.items())
        for digest, (data, modified) in items:
            yield BlobInfo(digest, len(data), modified)

    def __iter__(self) -> Iterator[str]:
        return (info.digest for info in self.blobs())

    def close(self) -> None:
        """Refuse further calls with ``RuntimeError`` (idempotent)."""
        with self._lock:
            self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MemoryCAS of {len(self._blobs)} blobs>"
