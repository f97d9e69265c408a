"""The CAS protocol: what every content-addressable store implements, and nothing more.

A CAS keeps blobs of bytes under the digest of their content.  Rules every
backend must prove with ``tests/cas_conformance.py``:

* **Digests are data, never paths.**  A digest is the string ``sha256:`` and 64
  lowercase hex digits (:func:`digest_of`); every method checks it with
  :func:`check_digest` before it builds a name from it, so a malformed one
  raises ``ValueError`` and touches nothing.
* **Put is idempotent.**  The same content gets the same digest and is stored
  once.  A put of content already there *refreshes the blob's modification
  time* (``tpp cas gc`` spares blobs touched since its mark began, so content a
  worker has just referenced is never swept).  A blob found with the wrong size
  (a truncated file) is rewritten by that put; one that only hashes wrong is
  left for ``verify`` to report.
* **Get never returns wrong bytes.**  Every read rehashes; a mismatch raises
  ``CorruptionError`` naming the digest (and the file, where there is one),
  and leaves the blob as it found it.  An absent blob raises
  :class:`BlobNotFoundError`, itself a ``CorruptionError``: a reference to
  content that is gone is lost data, not a usage error.
* **Conditional delete.**  ``delete(digest, older_than=t)`` removes a blob only
  if it was last put before ``t``, atomically with respect to a concurrent put;
  that is what makes GC safe while workers run.

Errors: ``CorruptionError`` and :class:`BlobNotFoundError` for content; the
backend's own failures (disk full, permission, I/O) as ``StoreError`` with
``raise ... from exc``; misuse as the builtin ones (``ValueError`` for a
malformed digest, ``TypeError`` for data that is not bytes, ``RuntimeError``
for a closed CAS).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from types import TracebackType
from typing import Final, Protocol, Self, runtime_checkable

import msgspec

from engine._errors import CorruptionError

__all__ = ["ALGORITHM", "BlobInfo", "BlobNotFoundError", "CAS", "check_digest", "digest_of"]

#: The one hash algorithm, and the prefix of every digest.
ALGORITHM: Final = "sha256"

_PREFIX: Final = ALGORITHM + ":"
_HEX: Final = re.compile(r"[0-9a-f]{64}")
_SHAPE: Final = f"{_PREFIX}<64 lowercase hex digits>"


class BlobNotFoundError(CorruptionError):
    """``get`` of a digest the CAS does not hold (deleted, or never stored)."""


class BlobInfo(msgspec.Struct, frozen=True):
    """One stored blob: its digest, its size in bytes and when it was last put.

    ``modified`` is in ``time.time()`` seconds; a deduplicated put refreshes it.
    """

    digest: str
    size: int
    modified: float


def digest_of(data: bytes) -> str:
    """The digest ``put(data)`` returns, computed without storing anything.

    >>> digest_of(b"")
    'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    """
    return _PREFIX + hashlib.sha256(data).hexdigest()


def check_digest(digest: object) -> str:
    """The 64 hex digits of a well-formed ``digest``; ``ValueError`` saying what is wrong.

    >>> check_digest("sha256:" + "ab" * 32) == "ab" * 32
    True
    >>> check_digest("sha256:../../etc/passwd")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: malformed CAS digest 'sha256:../../etc/passwd': ...
    """
    if not isinstance(digest, str):
        raise ValueError(
            f"malformed CAS digest {_show(digest)}: a digest is a str, "
            f"not {type(digest).__name__}; it looks like {_SHAPE}"
        )
    algorithm, sep, hexpart = digest.partition(":")
    if not sep:
        problem = f"it has no algorithm prefix ({_PREFIX!r})"
    elif algorithm != ALGORITHM:
        problem = f"the algorithm is {algorithm[:20]!r}, only {ALGORITHM!r} is supported"
    elif _HEX.fullmatch(hexpart):
        return hexpart
    elif len(hexpart) != 64:
        problem = f"it has {len(hexpart)} characters after {_PREFIX!r}, not 64"
    elif _HEX.fullmatch(hexpart.lower()):
        problem = "its hex digits must be lowercase"
    else:
        problem = "it has characters that are not hex digits"
    raise ValueError(f"malformed CAS digest {_show(digest)}: {problem}; it looks like {_SHAPE}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 90 else text[:80] + "...(truncated)"


@runtime_checkable
class CAS(Protocol):
    """A content-addressable store (see the module docstring for the rules)."""

    def put(self, data: bytes) -> str:
        """Store ``data`` (once) and return its digest; refreshes the time of a known blob."""
        ...

    def get(self, digest: str) -> bytes:
        """The blob's bytes, rehashed: ``CorruptionError`` on a mismatch, never wrong bytes.

        :class:`BlobNotFoundError` when the CAS does not hold ``digest``.
        """
        ...

    def has(self, digest: str) -> bool:
        """Whether a blob is stored under ``digest`` (its content is not checked)."""
        ...

    def delete(self, digest: str, *, older_than: float | None = None) -> bool:
        """Remove a blob; False if it was not there.

        With ``older_than`` (``time.time()`` seconds) only a blob last put before
        then is removed, atomically with respect to a concurrent put (GC uses it).
        """
        ...

    def blobs(self) -> Iterator[BlobInfo]:
        """Every stored blob, once each (for GC, verify and stats)."""
        ...

    def __iter__(self) -> Iterator[str]:
        """The digest of every stored blob."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
