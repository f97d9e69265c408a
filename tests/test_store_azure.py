"""AzureBlobStore against Azurite: the store conformance suite (a container per test), and
what only Azure has: blob names, segment rollover, conditional appends racing across
handles, lost replies, partition leases, ``stores.open("azure://...")``, outages.

Azurite is started by the ``azurite`` fixtures (``tests/azurite.py``); without
``npm ci`` these tests are skipped (and fail under ``TPP_REQUIRE_AZURITE``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("azure.storage.blob", reason="the azure extra is not installed")

from stores import Store
from stores.azure import AzureBlobStore
from tests.azurite import Azurite
from tests.store_conformance import MakeStore, StoreConformance

#: Small settings that keep the suite quick: few partitions, short leases and segments.
FAST: dict[str, Any] = {"partitions": 4, "lease_seconds": 15, "segment_blocks": 20}


def make(azurite: Azurite, container: str, **options: Any) -> AzureBlobStore:
    return AzureBlobStore(azurite.connection_string, container, **{**FAST, **options})


class TestAzureBlobStore(StoreConformance):
    """The suite, with ``reopen`` (everything lives in blobs).

    ``shared`` is off: two handles do share the data and never own one run, but a
    handle keeps the partitions it holds until it closes or its leases expire, so a
    run one handle released is not claimable by another at once, as the suite's
    two-handle test expects; ``test_two_handles_*`` below check sharing instead.
    """

    reopen = True

    @pytest.fixture
    def make_store(self, azurite: Azurite) -> Callable[[], Store]:
        container = azurite.new_container("st")
        return lambda: make(azurite, container)

    @pytest.mark.ci  # NB: 2,000 starts and terminations, ~10,000 sequential requests
    def test_claim_ignores_closed_runs(self, store: Store) -> None:
        super().test_claim_ignores_closed_runs(store)


@pytest.fixture
def container(azurite: Azurite) -> str:
    return azurite.new_container("sa")


@pytest.fixture
def store(azurite: Azurite, container: str) -> Iterator[AzureBlobStore]:
    with make(azurite, container) as handle:
        yield handle


def test_opens(store: AzureBlobStore, make_store: MakeStore | None = None) -> None:
    assert store.list().counts == {}
