"""MemoryStore runs the store conformance suite (it neither reopens nor shares its data)."""

from __future__ import annotations

import pytest

from stores import MemoryStore
from tests.store_conformance import MakeStore, StoreConformance


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def make_store(self) -> MakeStore:
        return MemoryStore


def test_page_tokens_keep_adjacent_lone_surrogates_apart() -> None:
    """A high and a low surrogate side by side are two code points, not one character."""
    from stores import MemoryStore
    from tests.store_conformance import at, started

    ids = ["a", "\ud912\udf5a", "\U00054b5a", "b"]  # the second would fuse into the third
    with MemoryStore() as store:
        for i, wid in enumerate(ids):
            store.create(started(wid, time=at(i)))
        seen, token = [], None
        while True:
            page = store.list(page_size=1, page_token=token)
            seen += [i.id for i in page.items]
            token = page.next_page_token
            if token is None:
                break
    assert seen == ids[::-1]
