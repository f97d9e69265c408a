"""Owner liveness through OS file locks: a dead worker's claims are free at once.

An owner (a worker's identity) is alive while some process holds an exclusive
``flock`` on ``<directory>/<digest of owner>.lock``.  The kernel drops the lock
when the process dies, however it dies (``kill -9`` included), so other workers
take its runs over without waiting for a lease to expire.  ``flock`` locks
belong to an open file description, so two handles in one process exclude each
other too (a second store object sees the first one's owners as alive).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import threading
import time
from typing import IO

import portalocker

__all__ = ["Liveness"]


class Liveness:
    """Liveness locks for the owners of one store."""

    def __init__(self, directory: pathlib.Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._held: dict[str, IO[bytes]] = {}
        self._lock = threading.Lock()

    def _path(self, owner: str) -> pathlib.Path:
        digest = hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return self._dir / f"{digest}.lock"

    def hold(self, owner: str) -> None:
        """Hold ``owner``'s lock for as long as this process lives (idempotent)."""
        with self._lock:
            if owner in self._held:
                return
            handle = open(self._path(owner), "ab")  # noqa: SIM115 - held open on purpose
            # NB: alive() probes take the lock for an instant; retry through those
            deadline = time.monotonic() + 0.2
            while True:
                try:
                    portalocker.lock(handle, portalocker.LOCK_EX | portalocker.LOCK_NB)
                    break
                except portalocker.LockException:
                    if time.monotonic() < deadline:
                        time.sleep(0.005)
                        continue
                    handle.close()
                    raise RuntimeError(
                        f"owner {owner!r} is already live in another process or store handle; "
                        f"give each worker its own identity"
                    ) from None
            handle.write(owner.encode("utf-8", "surrogatepass") + b"\n")
            handle.flush()
            self._held[owner] = handle

    def alive(self, owner: str) -> bool:
        """Whether some process (this one included) holds ``owner``'s lock."""
        with self._lock:
            if owner in self._held:
                return True
        path = self._path(owner)
        try:
            handle = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return False
        try:
            portalocker.lock(handle, portalocker.LOCK_EX | portalocker.LOCK_NB)
        except portalocker.LockException:
            return True
        else:
            portalocker.unlock(handle)
            return False
        finally:
            handle.close()

    def release(self, owner: str) -> None:
        """Let go of ``owner``'s lock (a graceful stop) and remove its file."""
        with self._lock:
            handle = self._held.pop(owner, None)
        if handle is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(owner))
            handle.close()

    def close(self) -> None:
        for owner in list(self._held):
            self.release(owner)
