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

import typing as _typing

from ._ops import DamagedBlob, GcReport, VerifyReport, gc, verify
from ._protocol import CAS, BlobInfo, BlobNotFoundError, check_digest, digest_of
from .file import FileCAS
from .memory import MemoryCAS

if _typing.TYPE_CHECKING:
    from .azure import AzureBlobCAS

__all__ = [
    "AzureBlobCAS",
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

_SCHEMES = (
    "memory:, file:PATH, azure://CONTAINER[/PREFIX] (with a connection string) "
    "or azure://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]"
)


def __getattr__(name: str) -> object:
    # NB: AzureBlobCAS is imported on first use, so `import cas` never imports the azure SDK
    if name == "AzureBlobCAS":
        from .azure import AzureBlobCAS

        return AzureBlobCAS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def open(url: str) -> CAS:
    """Open a CAS by URL.

    ``memory:``; ``file:PATH`` (a directory), which takes
    ``?durability=fsync|none`` (default ``fsync``):
    ``cas.open("file:.tpp/cas?durability=none")``; ``azure://CONTAINER[/PREFIX]``
    with a connection string (``$AZURE_STORAGE_CONNECTION_STRING`` or
    ``?connection_string=``, percent-encoded) and
    ``azure://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]`` with a credential
    from the environment (see ``cas.azure``; needs the ``azure`` extra).
    """
    if not isinstance(url, str):
        raise TypeError(f"a CAS URL must be a string, got {url!r}")
    if url.startswith("azure:"):
        try:
            from .azure import AzureBlobCAS
        except ImportError as exc:
            raise ImportError(f"{url.partition('?')[0]!r} needs the azure extra: {exc}") from exc
        return AzureBlobCAS.from_url(url)
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
