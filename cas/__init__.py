"""Content-addressable stores for large payloads (DESIGN section 6).

One protocol (``CAS``), a backend per module, ``open(url)``, and the whole-CAS
operations ``verify`` and ``gc``.  A payload above the codec's size threshold
is put here and the event keeps only its digest (``engine.events.CasRef``).

>>> import cas
>>> with cas.open("memory:") as blobs:
...     digest = blobs.put(b"a large payload")
...     blobs.get(digest)
b'a large payload'
>>> digest
'sha256:c5aeebd62c49f50b3bb66cc0732e31681c735631e77a1442cd3d9bd1303ba267'
"""

from __future__ import annotations

from ._ops import DamagedBlob, GcReport, VerifyReport, gc, verify
from ._protocol import CAS, BlobInfo, BlobNotFoundError, check_digest, digest_of
from .file import FileCAS
from .memory import MemoryCAS

__all__ = [
    "BlobInfo",
    "BlobNotFoundError",
    "CAS",
    "DamagedBlob",
    "FileCAS",
    "GcReport",
    "MemoryCAS",
    "VerifyReport",
    "check_digest",
    "digest_of",
    "gc",
    "open",
    "verify",
]

_SCHEMES = "memory: or file:PATH (azure:// is planned but not supported yet)"


def open(url: str) -> CAS:
    """Open a CAS by URL.

    ``memory:``; ``file:PATH`` (a directory), which takes
    ``?durability=fsync|none`` (default ``fsync``):
    ``cas.open("file:.tpp/cas?durability=none")``.
    """
    if not isinstance(url, str):
        raise TypeError(f"a CAS URL must be a string, got {url!r}")
    scheme, sep, rest = url.partition(":")
    path, _, query = rest.partition("?")
    options = dict(part.partition("=")[::2] for part in query.split("&") if part)
    durability = options.pop("durability", "fsync")
    if not sep or scheme not in ("memory", "file"):
        raise ValueError(f"unknown CAS URL {url!r}: expected {_SCHEMES}")
    if options:
        raise ValueError(
            f"unknown CAS URL option(s) {sorted(options)} in {url!r}: "
            "file: takes ?durability=fsync|none"
        )
    if scheme == "memory":
        if path or query:
            raise ValueError(f"memory: takes no path or options, got {url!r}")
        return MemoryCAS()
    if not path:
        raise ValueError(f"{scheme}: needs a path, e.g. {scheme}:.tpp/cas")
    return FileCAS(path, durability=durability)
