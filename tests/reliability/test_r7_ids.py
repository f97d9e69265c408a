"""R7 hostile workflow ids on every local store.

79 hand-picked ids (``tests/test_names.TRICKY``: path tricks, NUL, device
names, case and normalisation twins, lone surrogates, 10,000 characters) and
10,000 seeded random Unicode ids (every plane, lone surrogates, lengths 0 to
2,000) are started on ``MemoryStore``, ``FileStore`` and ``SQLiteStore``, each
reached through a symlinked root that also holds a symlink pointing outside.
Then: every id lists, describes and reads back as itself; nothing is created
or changed outside the real root; every FileStore name is ASCII, at most 122
bytes, distinct per id, and a readable name decodes back to its id.
"""

from __future__ import annotations

import functools
import os
import pathlib
import random

import pytest

from engine import Client
from stores import MemoryStore, Store, _names
from stores.file import FileStore
from stores.sqlite import SQLiteStore
from tests.reliability._seeds import replaying, seeds
from tests.test_names import TRICKY


@functools.cache
def random_ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    ranges = [(0, 0x7F), (0x80, 0x7FF), (0x800, 0xFFFF), (0xD800, 0xDFFF), (0x10000, 0x10FFFF)]
    out: set[str] = set()
    while len(out) < count:
        size = rng.choice([0, 1, 2, 3, 5, 8, 20, 40, 60, 121, 130, 300, 2000])
        out.add("".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(size)))
    return sorted(out)


def _tree(path: pathlib.Path) -> dict[str, float]:
    return {str(p): p.lstat().st_mtime for p in path.rglob("*")}


STORES = {
    "memory": lambda root: MemoryStore(),
    "file": lambda root: FileStore(root / "store", durability="none"),
    "sqlite": lambda root: SQLiteStore(root / "tpp.db", durability="none"),
}


def test_names_are_injective_and_round_trip() -> None:
    for seed in seeds(7000, 1):
        with replaying(seed):
            ids = sorted(set(TRICKY) | set(random_ids(10_000, seed)))
            names = {_names.name(i) for i in ids}
            assert len(names) == len(ids)
            for wid in ids:
                n = _names.name(wid)
                assert n.isascii() and len(n.encode()) <= 2 + _names.READABLE_MAX, wid
                assert n == n.lower().replace("^", "^") and not n.endswith((".", " "))
                assert _names.id_of(n) in (wid, None)
                if n.startswith("w-"):
                    assert _names.id_of(n) == wid


@pytest.mark.parametrize("backend", STORES)
def test_hostile_ids_on_every_local_store(tmp_path: pathlib.Path, backend: str) -> None:
    [seed] = seeds(7001, 1)
    with replaying(seed, backend):
        real = tmp_path / "real"
        outside = tmp_path / "outside"
        real.mkdir()
        outside.mkdir()
        (outside / "keep").write_text("untouched")
        (real / "escape").symlink_to(outside, target_is_directory=True)
        root = tmp_path / "link"
        root.symlink_to(real, target_is_directory=True)
        before = _tree(outside)
        ids = sorted(set(TRICKY) | set(random_ids(10_000, seed)))
        assert len(ids) >= 10_040
        store: Store = STORES[backend](root)
        with store:
            client = Client(store)
            for wid in ids:
                assert client.start("hostile", id=wid) == wid
            assert store.list(page_size=1).counts and sum(
                store.list(page_size=1).counts.values()
            ) == len(ids)
            got = sorted(i.id for i in store.runs())
            assert got == ids
            rng = random.Random(seed)
            for wid in rng.sample(ids, 500) + list(TRICKY):
                assert store.describe(wid).id == wid
                assert store.read(wid)[0].workflow_id == wid  # type: ignore[union-attr]
        if backend == "file":
            with FileStore(root / "store", durability="none") as again:
                assert sorted(i.id for i in again.runs()) == ids
            for path in (real / "store").rglob("*"):
                assert path.resolve().is_relative_to(real.resolve()), path
                assert not path.is_symlink(), path
                assert path.name.isascii() and len(path.name.encode()) <= 255
        assert _tree(outside) == before
        assert set(os.listdir(tmp_path)) == {"real", "outside", "link"}
