"""Key vaults: where per-workflow data keys are kept, wrapped by the keyring.

A vault stores opaque bytes (a data key encrypted under a keyring key) by data
key id; it never sees a plaintext key.  Deleting an entry is crypto-shredding:
every payload sealed under that key becomes unreadable, wherever it was copied.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Protocol

from ._errors import StoreError

__all__ = ["FileKeyVault", "KeyVault", "MemoryKeyVault"]

_KEY_ID = re.compile(r"wf:[0-9a-f]{32}")


def _check(key_id: str) -> str:
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise ValueError(f"a data key id looks like 'wf:' and 32 hex digits, got {key_id!r}")
    return key_id[3:]


class KeyVault(Protocol):
    """Wrapped data keys by id."""

    def get(self, key_id: str) -> bytes | None:
        """The wrapped key, or None if there is none (never made, or deleted)."""
        ...

    def add(self, key_id: str, wrapped: bytes) -> bytes:
        """Keep ``wrapped`` unless the id has a key already; return the key that is kept.

        Two processes adding a key for one id at once both get the same winner.
        """
        ...

    def delete(self, key_id: str) -> bool:
        """Delete the key for good; False if there was none."""
        ...


class MemoryKeyVault:
    """A vault in this process's memory (tests, embedded use)."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "MemoryKeyVault()"

    def get(self, key_id: str) -> bytes | None:
        _check(key_id)
        return self._keys.get(key_id)

    def add(self, key_id: str, wrapped: bytes) -> bytes:
        _check(key_id)
        with self._lock:
            return self._keys.setdefault(key_id, wrapped)

    def delete(self, key_id: str) -> bool:
        _check(key_id)
        with self._lock:
            return self._keys.pop(key_id, None) is not None


class FileKeyVault:
    """A directory of wrapped keys, one small file each (``<hex>.key``, mode 0600).

    A new key is written to a temporary file, fsynced, and linked into place, so
    racing writers agree on one key; a deletion is fsynced before it returns.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(f"cannot create the key vault directory {self.path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"FileKeyVault({str(self.path)!r})"

    def _file(self, key_id: str) -> Path:
        return self.path / f"{_check(key_id)}.key"

    def get(self, key_id: str) -> bytes | None:
        try:
            return self._file(key_id).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read data key {key_id!r} in {self.path}: {exc}") from exc

    def add(self, key_id: str, wrapped: bytes) -> bytes:
        final = self._file(key_id)
        tmp = self.path / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, wrapped)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, final)
            except FileExistsError:
                kept = final.read_bytes()
            else:
                kept = wrapped
                self._sync_dir()
            return kept
        except OSError as exc:
            raise StoreError(f"cannot store data key {key_id!r} in {self.path}: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def delete(self, key_id: str) -> bool:
        try:
            self._file(key_id).unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot delete data key {key_id!r} in {self.path}: {exc}") from exc
        self._sync_dir()
        return True

    def _sync_dir(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
