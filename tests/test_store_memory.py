"""MemoryStore runs the store conformance suite (it neither reopens nor shares its data)."""

from __future__ import annotations

import pytest

from stores import MemoryStore
from tests.store_conformance import MakeStore, StoreConformance


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def make_store(self) -> MakeStore:
        return MemoryStore
