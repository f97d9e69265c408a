"""Workflow ids as file names: injective, inside the store root, portable.

A workflow id is data: any Python string (``""``, ``".."``, ``"../x"``, NUL,
``"CON"``, 10,000 characters, full-width dots, lone surrogates).  ``name(id)``
maps it to one path component that every common file system stores as is:

* **readable** ``w-<escaped>`` while the escaped id has at most ``READABLE_MAX``
  bytes.  Escaping works on the id's UTF-8 bytes (lone surrogates through
  ``surrogatepass``): ``a-z``, ``0-9``, ``_`` and ``-`` stay; an upper-case ASCII
  letter becomes ``^`` and its lower case (``Order-7`` -> ``w-^order-7``); every
  other byte becomes ``%`` and two lower-case hex digits (``.`` -> ``%2e``).
* **digest** ``h-<first DIGEST_PREFIX bytes of the escaped id>~<sha256 hex>`` for
  longer ids: still greppable by its start, and unique by its digest.

Why this is safe:

* the alphabet is ``[a-z0-9_%^~-]``: no separator, no ``.`` (so never ``.``,
  ``..`` or a hidden file), no NUL, no upper case (two names never differ by case
  alone, so case-insensitive file systems keep them apart), ASCII only (so
  Unicode normalisation, as on macOS, never merges two names);
* the ``w-``/``h-`` prefix keeps names non-empty and clear of Windows device
  names (``CON``, ``NUL``, ``COM1``...), and no name ends in a dot or a space;
* injective: escaping is a prefix-free code (``id_of`` decodes it), the two forms
  differ in their first letter, and a digest name carries the SHA-256 of the
  whole id;
* short: at most 2 + ``READABLE_MAX`` = 122 bytes, far below the 255-byte limit
  of every file system in use (ext4, XFS, APFS, NTFS, eCryptfs' 143).

``shard(id)`` (two hex digits of the same digest) spreads workflow directories
over 256 subdirectories so that no directory grows huge.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["DIGEST_PREFIX", "READABLE_MAX", "id_of", "name", "shard"]

READABLE_MAX: Final = 120
DIGEST_PREFIX: Final = 40

_KEEP: Final = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-")
_CODES: Final[tuple[str, ...]] = tuple(
    chr(b) if b in _KEEP else "^" + chr(b).lower() if ord("A") <= b <= ord("Z") else f"%{b:02x}"
    for b in range(256)
)


def _utf8(workflow_id: str) -> bytes:
    if not isinstance(workflow_id, str):
        raise TypeError(f"a workflow id must be a string, got {workflow_id!r}")
    return workflow_id.encode("utf-8", "surrogatepass")


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def name(workflow_id: str) -> str:
    """The directory name of ``workflow_id`` (see the module docstring)."""
    raw = _utf8(workflow_id)
    codes = [_CODES[b] for b in raw]
    size = sum(map(len, codes))
    if size <= READABLE_MAX:
        return "w-" + "".join(codes)
    prefix: list[str] = []
    used = 0
    for code in codes:  # cut between codes, never inside one
        if used + len(code) > DIGEST_PREFIX:
            break
        prefix.append(code)
        used += len(code)
    return "h-" + "".join(prefix) + "~" + _digest(raw)


def shard(workflow_id: str) -> str:
    """Two hex digits that spread workflow directories over 256 subdirectories."""
    return _digest(_utf8(workflow_id))[:2]


def id_of(dir_name: str) -> str | None:
    """The id a readable name encodes; ``None`` for a digest name or a foreign one."""
    if not dir_name.startswith("w-"):
        return None
    out = bytearray()
    text = dir_name[2:]
    i = 0
    try:
        while i < len(text):
            c = text[i]
            if c == "^":
                letter = text[i + 1]
                if not "a" <= letter <= "z":
                    return None
                out.append(ord(letter.upper()))
                i += 2
            elif c == "%":
                pair = text[i + 1 : i + 3]
                if len(pair) != 2 or pair != pair.lower():
                    return None
                out.append(int(pair, 16))
                i += 3
            elif ord(c) < 128 and ord(c) in _KEEP:
                out.append(ord(c))
                i += 1
            else:
                return None
        decoded = out.decode("utf-8", "surrogatepass")
    except (IndexError, ValueError):
        return None
    return decoded if name(decoded) == dir_name else None
