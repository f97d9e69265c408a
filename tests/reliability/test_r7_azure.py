"""R7 on Azurite: hostile workflow ids on ``AzureBlobStore``.

The 79 hand-picked ids of ``tests/test_names.TRICKY`` (path tricks, NUL, device
names, case and normalisation twins, lone surrogates, 10,000 characters) and
1,000 seeded random Unicode ids (``test_r7_ids.random_ids``: every plane, lone
surrogates, lengths 0 to 2,000; seed 7101) (1,076 distinct) are started on one container by 8
handles on 8 threads (as 8 client processes).  Then, from fresh handles: every
id describes and reads back as itself, ``list`` (paged) finds each exactly
once, and every blob in the container has a name that Azure takes
(1 to 1,024 characters, URL-safe ASCII, no empty, ``.`` or ``..`` segment, no
trailing ``.`` or ``/``, at most 254 segments); the history blobs sit in one
directory per id, distinct per id, the one ``Names.id_dir`` computes.

Long ids are never too long for a blob name: an id whose escaped form passes
122 characters is named by a digest (``stores._names``), so even under the
longest prefix (512 characters) a name stays far below 1,024.  A second test
proves it with real blobs: ids of up to 1,000,000 characters under a 512-character
prefix.  What a store must refuse -- an id that is not a string -- is refused
with a ``TypeError`` that names it, and nothing is stored.

Tiers: default 1,079 ids (seed 7101) + the long ids (seed 7102); soak ``pytest -m
soak`` starts ``TPP_IDS`` random ids (1,000,000).  Replay with ``TPP_SEED=<seed>
TPP_SEEDS=1``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import pytest

pytest.importorskip("azure.storage.blob", reason="the azure extra is not installed")

from azure.storage.blob import ContainerClient

from engine import Client
from engine.events import Json, WorkflowStarted
from stores import _azure_format as fmt
from stores.azure import AzureBlobStore
from tests.azurite import Azurite
from tests.reliability._seeds import count, replaying, seeds
from tests.reliability.test_r7_ids import random_ids
from tests.test_names import TRICKY

HANDLES: Final = 8
#: Small settings: few partitions, the shortest lease.
OPTIONS: Final[dict[str, Any]] = {"partitions": 4, "lease_seconds": 15}
LONGEST_PREFIX: Final = "p" * 200 + "/" + "q" * 311  # 512 characters, the most a prefix may have
_URL_SAFE: Final = re.compile(r"[A-Za-z0-9_.~!$&'()*+,;=:@%/^-]+")


def azure_name_problem(name: str) -> str | None:
    """Why Azure would refuse (or mangle) blob name ``name``; None when it is fine."""
    if not 1 <= len(name) <= 1024:
        return f"{len(name)} characters"
    if not _URL_SAFE.fullmatch(name):
        return "characters outside URL-safe ASCII"
    segments = name.split("/")
    if len(segments) > 254:
        return f"{len(segments)} segments"
    if any(s in ("", ".", "..") for s in segments):
        return "an empty, '.' or '..' segment"
    if name.endswith((".", "/")):
        return "a trailing '.' or '/'"
    return None


def _chunks(items: Sequence[str], n: int) -> list[Sequence[str]]:
    return [items[i::n] for i in range(n)]


def start_all(azurite: Azurite, container: str, ids: Sequence[str], **options: Any) -> None:
    """Start every id, spread over ``HANDLES`` handles on as many threads."""

    def start(part: Sequence[str]) -> None:
        with AzureBlobStore(azurite.connection_string, container, **options) as store:
            client = Client(store)
            for wid in part:
                assert client.start("hostile", id=wid) == wid, repr(wid)[:80]

    with ThreadPoolExecutor(HANDLES) as pool:
        list(pool.map(start, _chunks(ids, HANDLES)))


def check_all(azurite: Azurite, container: str, ids: Sequence[str], **options: Any) -> None:
    """From fresh handles: each id reads back, describes, lists; the blob names are fine."""

    def read_back(part: Sequence[str]) -> list[str]:
        wrong = []
        with AzureBlobStore(azurite.connection_string, container, **options) as store:
            for wid in part:
                info = store.describe(wid)
                [ev] = store.read(wid)
                if info.id != wid or ev.workflow_id != wid or info.type != "hostile":  # type: ignore[union-attr]
                    wrong.append(repr(wid)[:80])
        return wrong

    with ThreadPoolExecutor(HANDLES) as pool:
        wrong = [w for part in pool.map(read_back, _chunks(ids, HANDLES)) for w in part]
    assert wrong == [], f"{len(wrong)} ids do not read back: {wrong[:10]}"
    with AzureBlobStore(azurite.connection_string, container, **options) as store:
        listed: list[str] = []
        token = None
        while True:
            page = store.list(page_size=500, page_token=token)
            listed += [i.id for i in page.items]
            token = page.next_page_token
            if token is None:
                break
        assert sum(page.counts.values()) == len(ids), page.counts
        assert sorted(listed) == sorted(ids)
        names = fmt.Names(store._prefix)
    dirs = {names.id_dir(wid): wid for wid in ids}
    assert len(dirs) == len(ids)  # injective
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    with client:
        blobs = [b.name for b in client.list_blobs()]
    bad = [(n, p) for n in blobs if (p := azure_name_problem(n))]
    assert bad == [], bad[:10]
    history = [n for n in blobs if n.startswith(names.histories)]
    assert sorted(n.rsplit("/", 1)[0] + "/" for n in history) == sorted(dirs)
    assert all(n.endswith("/00000000") for n in history)  # one run per id, segment 0 only
    print(f"{len(ids)} ids, {len(blobs)} blobs, longest name {max(map(len, blobs))} characters")


def hostile(azurite: Azurite, seed: int, random_count: int) -> None:
    with replaying(seed, "R7 on Azurite"):
        ids = sorted(set(TRICKY) | set(random_ids(random_count, seed)))
        assert len(ids) >= random_count + 40  # a few short random ids are TRICKY ones
        container = azurite.new_container("r7")
        start_all(azurite, container, ids, **OPTIONS)
        check_all(azurite, container, ids, **OPTIONS)


def test_hostile_ids_on_azure(azurite: Azurite) -> None:
    for seed in seeds(7101, 1):
        hostile(azurite, seed, 1000)


@pytest.mark.soak
def test_hostile_ids_soak(azurite: Azurite) -> None:
    for seed in seeds(7103, 1):
        hostile(azurite, seed, count(1_000_000, "TPP_IDS"))


def test_the_longest_ids_under_the_longest_prefix(azurite: Azurite) -> None:
    """Ids up to 1,000,000 characters, TRICKY and 50 random ones, under a 512-character prefix."""
    [seed] = seeds(7102, 1)
    with replaying(seed, "R7 long ids"):
        rng = random.Random(seed)
        long = ["x" * 121, "x" * 122, "\ud800" * 41, "\U0010ffff" * 1000, "é" * 1_000_000]
        long += ["".join(chr(rng.randrange(0x20, 0x2FFFF)) for _ in range(100_000))]
        ids = sorted(set(TRICKY) | set(random_ids(50, seed)) | set(long))
        container = azurite.new_container("r7long")
        options = {**OPTIONS, "prefix": LONGEST_PREFIX}
        start_all(azurite, container, ids, **options)
        check_all(azurite, container, ids, **options)


@pytest.mark.parametrize("bad", [b"bytes", 7, ["a"], ("t",)], ids=repr)
def test_an_id_that_is_not_a_string_is_refused_and_nothing_is_stored(
    azurite: Azurite, bad: Any
) -> None:
    container = azurite.new_container("r7bad")
    with AzureBlobStore(azurite.connection_string, container, **OPTIONS) as store:
        client = Client(store)
        with pytest.raises(TypeError, match="workflow id must be a string"):
            client.start("hostile", id=bad)
        started = WorkflowStarted(
            time=client.clock.now(),
            workflow_type="hostile",
            workflow_id=bad,
            run_id="r",
            input=Json(text="null"),
        )
        with pytest.raises(TypeError, match=re.escape(repr(bad))):
            store.create(started)
        assert store.list(page_size=1).counts == {}
    with ContainerClient.from_connection_string(azurite.connection_string, container) as c:
        names = [b.name for b in c.list_blobs()] if c.exists() else []
    assert [n for n in names if n.startswith(("h/", "b/"))] == []
