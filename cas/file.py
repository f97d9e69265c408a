"""FileCAS: one read-only file per blob in a sharded directory tree.

>>> import tempfile
>>> from cas import FileCAS
>>> with tempfile.TemporaryDirectory() as root, FileCAS(root, durability="none") as cas:
...     digest = cas.put(b"hello")
...     cas.get(digest)
b'hello'

Layout under the root (every name is made here, from a checked digest)::

    FORMAT                                "temporalpp file cas 1"
    sha256/<hex[:2]>/<hex[2:4]>/<hex>     one file per blob, mode 0o444
    tmp/<pid>-<random>.tmp                a put in progress (or a crashed one's leftover)
    tmp/<pid>-<random>.del                a blob GC is deleting

Theory of operation
-------------------

* **Put** hashes the bytes, then: if the blob's file exists with the right
  size, it refreshes the file's mtime (``os.utime``) and returns; GC reads that
  time.  (A blob of another user's, whose time we may not set, is replaced by
  our own copy instead.)  Otherwise it writes a temp file under ``tmp/`` (same file system),
  syncs it, ``os.replace``-s it onto the blob's name and syncs the shard
  directory.  The rename is atomic, so any number of processes putting the same
  content all succeed and leave exactly one file with the right bytes, and a
  reader sees a whole file or none.  A crash leaves at most a temp file, which
  :meth:`FileCAS.cleanup` (and ``cas.gc``) removes once it is an hour old.
* **Get** reads the file and rehashes it; it never changes what it read.
* **Conditional delete** (GC) renames the blob into ``tmp/`` (atomic), then
  looks at the renamed file's mtime: a put that refreshed it after GC listed
  it (its ``utime`` landed before the rename) gets it linked back; a put whose
  ``utime`` came after the rename found no file and wrote a new one.  Either
  way content put since the cutoff survives.  (A reader may miss the blob for
  the microseconds it is away, and only in that race.)

Durability: ``"fsync"`` syncs each new blob and its directory before ``put``
returns (survives power loss); ``"none"`` leaves that to the OS (survives a
process crash: the rename is atomic either way).  Refreshing a time is never
synced.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import pathlib
import re
import secrets
import stat
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Final, Self

from engine._errors import CorruptionError, StoreError

from ._protocol import _HEX, ALGORITHM, BlobInfo, BlobNotFoundError, check_digest

__all__ = ["FileCAS"]

_FORMAT: Final = b"temporalpp file cas 1\n"
_DURABILITY: Final = ("fsync", "none")
_SHARD: Final = re.compile(r"[0-9a-f]{2}")
_TEMP: Final = re.compile(r"[0-9]+-[0-9a-f]{16}\.(tmp|del)")
_O_BINARY: Final = getattr(os, "O_BINARY", 0)

#: Temp files older than this (seconds) are leftovers of crashed puts.
STALE_TEMP_AGE: Final = 3600.0


class FileCAS:
    """A CAS in a directory (see the module docstring); many processes may share it.

    ``durability`` is ``"fsync"`` (the default) or ``"none"``.
    """

    def __init__(self, path: str | os.PathLike[str], durability: str = "fsync") -> None:
        if durability not in _DURABILITY:
            raise ValueError(f"unknown durability {durability!r}: use one of {_DURABILITY}")
        self.durability = durability
        self._root = pathlib.Path(path).absolute()
        self._blobdir = self._root / ALGORITHM
        self._tmp = self._root / "tmp"
        self._closed = True
        try:
            self._open()
        except OSError as exc:
            raise StoreError(f"file CAS {self._root}: cannot open it: {exc}") from exc
        self._closed = False

    def _open(self) -> None:
        root = self._root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ValueError(f"{root} is not a directory: a FileCAS needs one") from None
        marker = root / "FORMAT"
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o644)
        except FileExistsError:
            found = marker.read_bytes()
            if found and found != _FORMAT:
                raise ValueError(f"{root} holds {found[:40]!r}, not a FileCAS") from None
        else:
            try:
                _write_all(fd, _FORMAT)
            finally:
                os.close(fd)
        for sub in (self._blobdir, self._tmp):
            sub.mkdir(exist_ok=True)
        if self.durability == "fsync":
            _fsync_dir(root)

    @property
    def path(self) -> pathlib.Path:
        """The root directory."""
        return self._root

    # ------------------------------------------------------------------ helpers

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this FileCAS is closed")

    def _file(self, hexdigest: str) -> pathlib.Path:
        """The blob file of a *checked* digest's hex digits."""
        return self._blobdir / hexdigest[:2] / hexdigest[2:4] / hexdigest

    def _temp(self, suffix: str) -> pathlib.Path:
        return self._tmp / f"{os.getpid()}-{secrets.token_hex(8)}{suffix}"

    def _error(self, doing: str, exc: OSError) -> StoreError:
        return StoreError(f"file CAS {self._root}: could not {doing}: {exc}")

    # ------------------------------------------------------------------ the protocol

    def put(self, data: bytes) -> str:
        """Store ``data`` (once) and return its digest; refreshes the time of a known blob."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"a CAS stores bytes, got {type(data).__name__}")
        if not isinstance(data, bytes):
            data = bytes(data)
        hexdigest = hashlib.sha256(data).hexdigest()
        digest = f"{ALGORITHM}:{hexdigest}"
        self._check_open()
        path = self._file(hexdigest)
        try:
            try:
                if os.stat(path).st_size == len(data):
                    os.utime(path)
                    return digest
            except FileNotFoundError:
                pass  # NB: also when a GC renamed it away between stat and utime
            except PermissionError:
                pass  # another user's read-only blob: we replace it with our own copy
            self._publish(path, data)
        except OSError as exc:
            raise self._error(f"store blob {digest}", exc) from exc
        return digest

    def _publish(self, path: pathlib.Path, data: bytes) -> None:
        fsync = self.durability == "fsync"
        shard = path.parent
        if not shard.is_dir():
            for d in (shard.parent, shard):
                try:
                    os.mkdir(d)
                except FileExistsError:
                    continue
                if fsync:
                    _fsync_dir(d.parent)
        temp = self._temp(".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o444)
        try:
            try:
                _write_all(fd, data)
                if fsync:
                    _datasync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        if fsync:
            _fsync_dir(shard)

    def get(self, digest: str) -> bytes:
        """The blob's bytes, rehashed (``CorruptionError`` naming the file on a mismatch)."""
        hexdigest = check_digest(digest)
        self._check_open()
        path = self._file(hexdigest)
        try:
            with open(path, "rb", buffering=0) as f:
                data = f.readall()
        except FileNotFoundError:
            raise BlobNotFoundError(
                f"blob {digest} is missing from the file CAS {self._root} (no file {path})"
            ) from None
        except OSError as exc:
            raise self._error(f"read blob {digest}", exc) from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != hexdigest:
            raise CorruptionError(
                f"blob {digest} in the file CAS {self._root} is corrupt: the file {path} "
                f"holds {len(data)} bytes that hash to {ALGORITHM}:{actual}"
            )
        return data

    def has(self, digest: str) -> bool:
        """Whether a blob file is stored under ``digest`` (its content is not checked)."""
        hexdigest = check_digest(digest)
        self._check_open()
        try:
            st = os.stat(self._file(hexdigest))
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise self._error(f"look up blob {digest}", exc) from exc
        return stat.S_ISREG(st.st_mode)

    def delete(self, digest: str, *, older_than: float | None = None) -> bool:
        """Remove a blob (only if last put before ``older_than``, when given; see above)."""
        hexdigest = check_digest(digest)
        self._check_open()
        path = self._file(hexdigest)
        try:
            if older_than is None:
                os.unlink(path)
                return True
            if os.stat(path).st_mtime >= older_than:
                return False
            condemned = self._temp(".del")
            os.rename(path, condemned)
            if os.stat(condemned).st_mtime < older_than:
                os.unlink(condemned)
                return True
            self._restore(condemned, path)  # a put refreshed it since we looked
            return False
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise self._error(f"delete blob {digest}", exc) from exc

    def _restore(self, condemned: pathlib.Path, path: pathlib.Path) -> None:
        try:
            os.link(condemned, path)
        except FileExistsError:
            pass  # a put has published the content again meanwhile
        except OSError:
            os.replace(condemned, path)  # no hard links on this file system: move it back
            return
        os.unlink(condemned)

    def blobs(self) -> Iterator[BlobInfo]:
        """Every blob file, in digest order; foreign files and temp files are skipped."""
        self._check_open()
        try:
            yield from self._walk()
        except OSError as exc:
            raise self._error("list the blobs", exc) from exc

    def _walk(self) -> Iterator[BlobInfo]:
        for a in _entries(self._blobdir):
            if not (_SHARD.fullmatch(a.name) and a.is_dir(follow_symlinks=False)):
                continue
            for b in _entries(a.path):
                if not (_SHARD.fullmatch(b.name) and b.is_dir(follow_symlinks=False)):
                    continue
                prefix = a.name + b.name
                for blob in _entries(b.path):
                    name = blob.name
                    if not (name.startswith(prefix) and _HEX.fullmatch(name)):
                        continue
                    try:
                        st = blob.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # deleted since the listing
                    if stat.S_ISREG(st.st_mode):
                        yield BlobInfo(f"{ALGORITHM}:{name}", st.st_size, st.st_mtime)

    def __iter__(self) -> Iterator[str]:
        return (info.digest for info in self.blobs())

    def cleanup(self, max_age: float = STALE_TEMP_AGE) -> int:
        """Remove temp files older than ``max_age`` seconds (crashed puts); returns how many."""
        self._check_open()
        cutoff = time.time() - max_age
        removed = 0
        try:
            for entry in _entries(str(self._tmp)):
                if not _TEMP.fullmatch(entry.name):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
        except OSError as exc:
            raise self._error("remove stale temp files", exc) from exc
        return removed

    def close(self) -> None:
        """Refuse further calls with ``RuntimeError`` (idempotent; nothing is buffered)."""
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
        return f"FileCAS({str(self._root)!r}, durability={self.durability!r})"


# --------------------------------------------------------------------------- helpers


def _entries(path: str | os.PathLike[str]) -> list[os.DirEntry[str]]:
    """A directory's entries by name; none if it is gone or not a directory."""
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # pragma: no cover - regular files write or raise
            raise OSError(errno.EIO, "short write")
        view = view[written:]


def _datasync(fd: int) -> None:
    """``fdatasync`` where the OS has it (Linux), else ``fsync`` (macOS)."""
    getattr(os, "fdatasync", os.fsync)(fd)


def _fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
