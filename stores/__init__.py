"""Event stores: one protocol (``Store``), several backends, and ``open(url)``.

>>> import stores
>>> store = stores.open("memory:")
>>> type(store).__name__
'MemoryStore'
"""

from __future__ import annotations

import os
import pathlib
from typing import TYPE_CHECKING, cast

from ._copy import CopyReport, copy
from ._protocol import AppendBatch, AppendResult, Claims, RunRef, Store
from .memory import MemoryStore

if TYPE_CHECKING:
    from .azure import AzureBlobStore

__all__ = [
    "DEFAULT_URL",
    "AppendBatch",
    "AppendResult",
    "AzureBlobStore",
    "Claims",
    "CopyReport",
    "MemoryStore",
    "RunRef",
    "Store",
    "copy",
    "default_url",
    "open",
    "open_default",
]

#: The embedded default: a SQLite database under ./.tpp (see the README for why).
DEFAULT_URL = "sqlite:.tpp/store.db"


def __getattr__(name: str) -> object:
    # NB: AzureBlobStore is imported on first use, so `import stores` never imports the azure SDK
    if name == "AzureBlobStore":
        from .azure import AzureBlobStore

        return AzureBlobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def open(url: str) -> Store:
    """Open a store by URL.

    ``memory:``; ``file:PATH`` (a directory); ``sqlite:PATH`` (a database file).
    Durable stores take ``?durability=fsync|flush|none`` (default ``fsync``):
    ``stores.open("sqlite:.tpp/store.db?durability=flush")``.
    ``azure://CONTAINER[/PREFIX]`` (a connection string from
    ``?connection_string=...`` or ``$AZURE_STORAGE_CONNECTION_STRING``) and
    ``azure://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]`` open an
    ``AzureBlobStore`` (the ``azure`` extra; forms and options in ``stores.azure``).
    """
    if not isinstance(url, str):
        raise TypeError(f"a store URL must be a string, got {url!r}")
    if url.startswith("azure:"):
        try:
            from .azure import AzureBlobStore
        except ImportError as exc:
            raise ImportError(f"{url.partition('?')[0]!r} needs the azure extra: {exc}") from exc
        return AzureBlobStore.from_url(url)
    scheme, sep, rest = url.partition(":")
    path, _, query = rest.partition("?")
    options = dict(part.partition("=")[::2] for part in query.split("&") if part)
    durability = options.pop("durability", "fsync")
    if not sep or scheme not in ("memory", "file", "sqlite"):
        raise ValueError(
            f"unknown store URL {url!r}: expected memory:, file:PATH, sqlite:PATH or azure://..."
        )
    if options:
        raise ValueError(f"unknown store URL option(s) {sorted(options)} in {url!r}")
    if scheme == "memory":
        if path or query:
            raise ValueError(f"memory: takes no path or options, got {url!r}")
        return MemoryStore()
    if not path:
        raise ValueError(f"{scheme}: needs a path, e.g. {scheme}:.tpp/store")
    if scheme == "file":
        from .file import FileStore

        return FileStore(path, durability=durability)
    from .sqlite import Durability, SQLiteStore

    return SQLiteStore(path, durability=cast(Durability, durability))


def default_url() -> str:
    """The store URL used when none is given: ``$TPP_STORE``, else :data:`DEFAULT_URL`."""
    return os.environ.get("TPP_STORE") or DEFAULT_URL


def open_default() -> Store:
    """Open the embedded default store (creating ``./.tpp`` when needed)."""
    url = default_url()
    scheme, _, rest = url.partition(":")
    if scheme in ("file", "sqlite"):
        path = pathlib.Path(rest.partition("?")[0])
        (path if scheme == "file" else path.parent).mkdir(parents=True, exist_ok=True)
    return open(url)
