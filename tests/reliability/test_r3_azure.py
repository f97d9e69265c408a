"""R3 on Azurite: a damaged ``AzureBlobCAS`` blob is always detected, never returned.

Each case is one object (4 KiB in the default tier) put through the CAS, then
damaged *around* it, straight through azure-storage-blob (the test may; the CAS
never sees the damage happen), then read back with ``get``:

* ``flip``: one seeded bit of the blob flipped;
* ``cut``: the blob truncated to a seeded 1..n-1 bytes;
* ``empty``: the blob replaced by zero bytes;
* ``missing``: the blob deleted;
* ``swap``: the blob replaced by another object's (A's) bytes, under B's digest.

Must hold: every damaged read raises ``CorruptionError`` (``BlobNotFoundError``,
a subclass, for ``missing`` only, and never for the others), no read returns
bytes, and a put of the right content afterwards repairs the blob.  The kinds
are drawn from ``random.Random(seed)`` (flips weighted most, as FileCAS's
exhaustive test is mostly flips), so one seed gives the same 1,000 cases; the
cases run on 8 threads sharing one ``AzureBlobCAS`` and one ``ContainerClient``
(each case has its own object, hence its own blob, so the order in which
threads run them changes nothing).

Racing identical puts: 8 handles on 8 threads put the same content at once
(a barrier per round), over a blob that is absent, intact or damaged; every
put returns the digest, one blob exists, and it reads back right.

Tiers: default 1,000 cases (seed 3100) and 24 racing rounds (seed 3101); soak
``pytest -m soak`` takes ``TPP_CASES`` cases (1,000) of random objects of 1 byte
to ``TPP_CAS_MAX_BYTES`` (4 MiB), and ``TPP_ROUNDS`` racing rounds (200).
Replay a failure with ``TPP_SEED=<seed> TPP_SEEDS=1``.
"""

from __future__ import annotations

import collections
import hashlib
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import pytest

pytest.importorskip("azure.storage.blob", reason="the azure extra is not installed")

from azure.storage.blob import ContainerClient

from cas import AzureBlobCAS, BlobNotFoundError, digest_of
from engine import CorruptionError
from tests.azurite import Azurite
from tests.reliability._seeds import count, replaying, seeds

KINDS: Final = ("flip", "cut", "empty", "missing", "swap")
WEIGHTS: Final = (70, 15, 5, 5, 5)
THREADS: Final = 8
KiB: Final = 1024
MiB: Final = 1024 * KiB


class Case:
    """One object and the damage done to its blob, all drawn from the case's own seed."""

    def __init__(self, seed: int, number: int, kind: str, size: int) -> None:
        self.number, self.kind = number, kind
        rng = random.Random(f"r3-{seed}-{number}")
        self.data = rng.randbytes(size)
        self.digest = digest_of(self.data)
        if kind == "flip":
            self.bit = rng.randrange(size * 8)
            damaged = bytearray(self.data)
            damaged[self.bit // 8] ^= 1 << (self.bit % 8)
            self.damaged: bytes | None = bytes(damaged)
            self.what = f"bit {self.bit % 8} of byte {self.bit // 8}"
        elif kind == "cut":
            keep = rng.randrange(1, size) if size > 1 else 0
            self.damaged, self.what = self.data[:keep], f"cut to {keep} of {size} bytes"
        elif kind == "empty":
            self.damaged, self.what = b"", "zero length"
        elif kind == "missing":
            self.damaged, self.what = None, "deleted"
        else:
            other = rng.randbytes(rng.choice([size, rng.randrange(1, 2 * size + 1)]))
            self.damaged, self.what = other, f"A's {len(other)} bytes under B's digest"
        assert self.damaged != self.data

    def __repr__(self) -> str:
        return f"case {self.number} ({self.kind}: {self.what}, {len(self.data)}-byte object)"


def plan(seed: int, cases: int, size: Callable[[random.Random], int]) -> Iterator[Case]:
    """The cases of ``seed``: kind and size from ``random.Random(seed)``, in order."""
    rng = random.Random(seed)
    for number in range(cases):
        kind = rng.choices(KINDS, WEIGHTS)[0]
        yield Case(seed, number, kind, size(rng))


def blob_name(blobs: AzureBlobCAS, digest: str) -> str:
    """The blob behind ``digest`` (the CAS's documented layout)."""
    return f"{blobs.prefix}sha256/{digest.removeprefix('sha256:')}"


def run_case(blobs: AzureBlobCAS, client: ContainerClient, case: Case) -> str | None:
    """Put, damage, read, repair one case; a description of what went wrong, or None."""
    assert blobs.put(case.data) == case.digest
    blob = client.get_blob_client(blob_name(blobs, case.digest))
    if case.damaged is None:
        blob.delete_blob()
    else:
        metadata = blob.get_blob_properties().metadata  # a bad copy keeps its put time
        blob.upload_blob(case.damaged, overwrite=True, metadata=metadata)
    try:
        got = blobs.get(case.digest)
    except BlobNotFoundError:
        if case.kind != "missing":
            return f"{case}: reported missing, not corrupt"
    except CorruptionError as exc:
        if case.kind == "missing":
            return f"{case}: {exc!r}, not BlobNotFoundError"
        if case.digest not in str(exc):
            return f"{case}: the error does not name the digest: {exc}"
    else:
        return f"{case}: returned {len(got)} bytes ({'right' if got == case.data else 'WRONG'})"
    assert blobs.put(case.data) == case.digest  # the right content repairs it
    if blobs.get(case.digest) != case.data:
        return f"{case}: a put did not repair it"
    blob.delete_blob()  # keep the container small
    return None


def run_cases(
    azurite: Azurite, seed: int, cases: int, size: Callable[[random.Random], int]
) -> collections.Counter[str]:
    """Every case of ``seed``; asserts none went wrong; returns the count per kind."""
    container = azurite.new_container("r3")
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    kinds: collections.Counter[str] = collections.Counter()
    wrong: list[str] = []
    with (
        client,
        AzureBlobCAS.from_container_client(client) as blobs,
        ThreadPoolExecutor(THREADS) as pool,
    ):
        pending: collections.deque[Any] = collections.deque()
        for case in plan(seed, cases, size):  # NB: lazily, so 4 MiB objects are not all held
            kinds[case.kind] += 1
            pending.append(pool.submit(run_case, blobs, client, case))
            while len(pending) >= 4 * THREADS:
                problem = pending.popleft().result()
                if problem:
                    wrong.append(problem)
        wrong += [p for p in (f.result() for f in pending) if p]
        assert wrong == [], f"{len(wrong)} of {cases} cases: " + "; ".join(wrong[:20])
        assert list(blobs) == []
    return kinds


def test_damage_is_always_detected(azurite: Azurite) -> None:
    """A seeded 1,000 cases on 4 KiB objects: 100 % detected, wrong bytes never returned."""
    for seed in seeds(3100, 1):
        with replaying(seed, "R3 on Azurite"):
            kinds = run_cases(azurite, seed, 1000, lambda rng: 4 * KiB)
            assert sum(kinds.values()) == 1000 and set(kinds) == set(KINDS), kinds
            print(f"seed {seed}: {dict(kinds)}")


# --------------------------------------------------------------------------- racing puts


def race(azurite: Azurite, seed: int, rounds: int, size: Callable[[random.Random], int]) -> None:
    """``rounds`` rounds of ``THREADS`` handles putting one content at the same moment."""
    rng = random.Random(seed)
    container = azurite.new_container("r3race")
    handles = [AzureBlobCAS(azurite.connection_string, container) for _ in range(THREADS)]
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    stored: list[str] = []
    try:
        for number in range(rounds):
            data = rng.randbytes(size(rng))
            digest = digest_of(data)
            before = rng.choice(["absent", "intact", "flipped", "cut", "other"])
            blob = client.get_blob_client(blob_name(handles[0], digest))
            if before != "absent":
                handles[0].put(data)
            if before == "flipped":
                damaged = bytearray(data)
                damaged[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                blob.upload_blob(bytes(damaged), overwrite=True)
            elif before == "cut":
                blob.upload_blob(data[: rng.randrange(len(data))], overwrite=True)
            elif before == "other":
                blob.upload_blob(hashlib.sha512(data).digest(), overwrite=True)
            barrier = threading.Barrier(THREADS)

            def put(handle: AzureBlobCAS, data: bytes = data, barrier: Any = barrier) -> Any:
                barrier.wait(timeout=60)
                try:
                    return handle.put(data)
                except Exception as exc:  # reported below
                    return exc

            with ThreadPoolExecutor(THREADS) as pool:
                results = list(pool.map(put, handles))
            where = f"round {number} (blob {before} before)"
            assert results == [digest] * THREADS, f"{where}: {results}"
            assert handles[-1].get(digest) == data, where
            stored.append(digest)
        assert sorted(handles[0]) == sorted(set(stored))
        names = [b.name for b in client.list_blobs()]
        assert len(names) == len(set(stored)), names
    finally:
        for handle in handles:
            handle.close()
        client.close()


def test_racing_identical_puts_all_succeed(azurite: Azurite) -> None:
    """24 rounds (4 KiB to 5 MiB: block uploads too) of 8 handles racing one put."""
    sizes = [4 * KiB, 64 * KiB, 1 * MiB, 5 * MiB]
    for seed in seeds(3101, 1):
        with replaying(seed, "R3 racing puts"):
            race(azurite, seed, 24, lambda rng: rng.choices(sizes, [8, 4, 2, 1])[0])


# --------------------------------------------------------------------------- soak


def _soak_size(rng: random.Random) -> int:
    """1 byte to ``$TPP_CAS_MAX_BYTES`` (4 MiB), log-uniform so small and large both come."""
    top = count(4 * MiB, "TPP_CAS_MAX_BYTES")
    return max(1, min(top, int(2 ** rng.uniform(0, top.bit_length()))))


@pytest.mark.soak
def test_damage_soak(azurite: Azurite) -> None:
    for seed in seeds(3102, 1):
        with replaying(seed, "R3 soak"):
            print(run_cases(azurite, seed, count(1000, "TPP_CASES"), _soak_size))


@pytest.mark.soak
def test_racing_puts_soak(azurite: Azurite) -> None:
    for seed in seeds(3103, 1):
        with replaying(seed, "R3 racing soak"):
            race(azurite, seed, count(200, "TPP_ROUNDS"), _soak_size)
