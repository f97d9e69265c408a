"""Event stores: one protocol (``Store``), several backends, and ``open(url)``.

>>> import stores
>>> store = stores.open("memory:")
>>> type(store).__name__
'MemoryStore'
"""

from __future__ import annotations

from ._protocol import AppendBatch, AppendResult, Claims, RunRef, Store
from .memory import MemoryStore

__all__ = ["AppendBatch", "AppendResult", "Claims", "MemoryStore", "RunRef", "Store", "open"]


def open(url: str) -> Store:
    """Open a store by URL: ``memory:`` (more schemes as backends land)."""
    if not isinstance(url, str):
        raise TypeError(f"a store URL must be a string, got {url!r}")
    scheme, _, _rest = url.partition(":")
    if scheme == "memory":
        return MemoryStore()
    raise ValueError(f"unknown store URL {url!r}: expected memory:")
