"""MemoryCAS runs the CAS conformance suite (it neither reopens nor shares its data)."""

from __future__ import annotations

import time

import pytest

from cas import CAS, MemoryCAS
from tests.cas_conformance import CASConformance, MakeCAS


def corrupt_memory(cas: CAS, digest: str, data: bytes) -> None:
    """Put ``data`` under ``digest`` behind the CAS's back (its private dict)."""
    assert isinstance(cas, MemoryCAS)
    modified = cas._blobs.get(digest, (b"", time.time()))[1]
    cas._blobs[digest] = (data, modified)


def set_modified_memory(cas: CAS, digest: str, when: float) -> None:
    assert isinstance(cas, MemoryCAS)
    cas._blobs[digest] = (cas._blobs[digest][0], when)


class TestMemoryCAS(CASConformance):
    @pytest.fixture
    def make_cas(self) -> MakeCAS:
        return MemoryCAS

    def corrupt(self, cas: CAS, digest: str, data: bytes) -> None:
        corrupt_memory(cas, digest, data)

    def set_modified(self, cas: CAS, digest: str, when: float) -> None:
        set_modified_memory(cas, digest, when)


def test_repr_counts_blobs() -> None:
    cas = MemoryCAS()
    cas.put(b"a")
    assert repr(cas) == "<MemoryCAS of 1 blobs>"
