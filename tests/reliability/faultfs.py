"""A fault-injecting file layer for the FileStore: unsynced writes, then "power loss".

``FaultOS(root, rng, crash_at)`` stands in for the ``os`` module that
``stores.file`` uses (install it with ``stores.file.os = fault``).  Every call
passes through to the real ``os``, so the store runs on real files; the layer
also keeps, per file under ``root``, the content the disk is known to hold:

* a file's content becomes durable at ``fdatasync``/``fsync`` of one of its fds;
* a file created since its directory was last ``fsync``-ed may vanish;
* ``os.replace`` is taken as atomic and durable (lenient: the snapshot files);
* files that existed when the layer was installed are durable as they are.

The ``crash_at``-th mutating call (``write``, ``pwrite``, ``ftruncate``,
``fsync``, ``fdatasync``, ``replace``) raises ``PowerLoss`` *before* doing
anything.  ``survivors()`` then says what each file holds after the power
comes back: a file whose content changed since its last sync keeps, at
random (from ``rng``), either its synced content or that content's common
prefix with the current bytes plus a random prefix of the rest, whose tail
may read as NUL bytes (the size reached the disk, the block did not).
Writes reach the disk in order: sectors persisted out of order inside an
unsynced tail are not modelled (``RELIABILITY.md``).
"""

from __future__ import annotations

import os as _os
import pathlib
import random
from typing import Any

__all__ = ["FaultOS", "PowerLoss", "apply"]


class PowerLoss(BaseException):
    """The power went out (a ``BaseException``: nothing in the store may catch it)."""


class FaultOS:
    def __init__(self, root: pathlib.Path, rng: random.Random, crash_at: int | None) -> None:
        self._root = str(root.resolve())
        self._rng = rng
        self.crash_at = crash_at
        self.calls = 0
        self._fds: dict[int, str] = {}
        self.durable: dict[str, bytes] = {}
        self.fresh: set[str] = set()  # created since their directory's last fsync
        for path in root.rglob("*"):
            if path.is_file():
                self.durable[str(path.resolve())] = path.read_bytes()

    def __getattr__(self, name: str) -> Any:
        return getattr(_os, name)

    # ------------------------------------------------------------------ tracking

    def _mine(self, path: str) -> bool:
        return path == self._root or path.startswith(self._root + "/")

    def _tick(self) -> None:
        self.calls += 1
        if self.crash_at is not None and self.calls >= self.crash_at:
            raise PowerLoss(f"power loss at mutating call {self.calls}")

    def open(self, path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        full = _os.path.abspath(_os.fspath(path))
        existed = _os.path.exists(full)
        fd = _os.open(path, flags, mode, **kw)
        if self._mine(full):
            self._fds[fd] = full
            if not existed:
                self.fresh.add(full)
        return fd

    def close(self, fd: int) -> None:
        self._fds.pop(fd, None)
        _os.close(fd)

    def write(self, fd: int, data: Any) -> int:
        if fd in self._fds:
            self._tick()
        return _os.write(fd, data)

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        if fd in self._fds:
            self._tick()
        return _os.pwrite(fd, data, offset)

    def ftruncate(self, fd: int, size: int) -> None:
        if fd in self._fds:
            self._tick()
        _os.ftruncate(fd, size)

    def truncate(self, path: Any, size: int) -> None:
        self._tick()
        _os.truncate(path, size)

    def _synced(self, fd: int) -> None:
        path = self._fds.get(fd)
        if path is None:
            return
        if _os.path.isdir(path):
            self.fresh = {p for p in self.fresh if _os.path.dirname(p) != path}
        else:
            with open(path, "rb") as f:
                self.durable[path] = f.read()

    def fsync(self, fd: int) -> None:
        if fd in self._fds:
            self._tick()
        _os.fsync(fd)
        self._synced(fd)

    def fdatasync(self, fd: int) -> None:
        if fd in self._fds:
            self._tick()
        _os.fdatasync(fd)
        self._synced(fd)

    def replace(self, src: Any, dst: Any) -> None:
        self._tick()
        _os.replace(src, dst)
        full = _os.path.abspath(_os.fspath(dst))
        with open(full, "rb") as f:
            self.durable[full] = f.read()
        self.fresh.discard(full)

    # ------------------------------------------------------------------ power loss

    def survivors(self) -> dict[str, bytes | None]:
        """What each changed file holds after the power comes back (None: gone)."""
        out: dict[str, bytes | None] = {}
        rng = self._rng
        for path in sorted(self._tracked()):
            try:
                with open(path, "rb") as f:
                    current = f.read()
            except (FileNotFoundError, IsADirectoryError):
                continue
            synced = self.durable.get(path)
            if path in self.fresh and rng.random() < 0.5:
                out[path] = None  # its directory entry never reached the disk
                continue
            base = synced or b""
            if base == current:
                continue
            if synced is not None and rng.random() < 0.25:
                out[path] = synced
                continue
            p = 0
            while p < min(len(base), len(current)) and base[p] == current[p]:
                p += 1
            k = rng.randint(0, len(current) - p)
            kept = bytearray(current[: p + k])
            if k and rng.random() < 0.3:
                j = rng.randint(0, k - 1)
                kept[p + j :] = bytes(k - j)
            out[path] = bytes(kept)
        return out

    def _tracked(self) -> set[str]:
        found = set(self.durable) | self.fresh
        for dirpath, _dirs, files in _os.walk(self._root):
            found.update(_os.path.join(dirpath, f) for f in files)
        return found


def apply(survivors: dict[str, bytes | None]) -> None:
    """Write the post-power-loss contents back to disk (after the writer is gone)."""
    for path, data in survivors.items():
        if data is None:
            with __import__("contextlib").suppress(FileNotFoundError):
                _os.unlink(path)
        else:
            with open(path, "wb") as f:
                f.write(data)
