"""The CAS conformance suite: the definition of "a CAS backend".

Every backend runs this suite unchanged.  A backend's test file subclasses
``CASConformance``, provides a ``make_cas`` fixture (a callable that opens the
backend at this test's location; for a durable backend every call opens the
*same* data) and implements two hooks that reach behind the protocol::

    # tests/test_cas_file.py
    class TestFileCAS(CASConformance):
        reopen = True  # data survives close() and make_cas() again

        @pytest.fixture
        def make_cas(self, tmp_path):
            return lambda: FileCAS(tmp_path / "cas", durability="none")

        def corrupt(self, cas, digest, data):
            ...  # store ``data`` under ``digest``, as a bad disk would

        def set_modified(self, cas, digest, when):
            ...  # pretend the blob was last put at ``when``

Only the ``cas.CAS`` protocol is used otherwise.  Rules the suite pins down
where the protocol's prose is open: ``put`` takes ``bytes``, ``bytearray`` and
``memoryview`` and refuses anything else with ``TypeError``; every method of a
closed CAS raises ``RuntimeError`` (``close`` is idempotent); a malformed
digest raises ``ValueError`` from every method and changes nothing; a put of
content whose blob has the wrong size rewrites it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Final

import pytest

from cas import CAS, BlobInfo, BlobNotFoundError, check_digest, digest_of
from engine import CorruptionError

__all__ = ["MALFORMED", "CASConformance", "MakeCAS", "info_of"]

MakeCAS = Callable[[], CAS]

_HEX64: Final = "0123456789abcdef" * 4

#: Malformed digests, each with a fragment of the message that says what is wrong.
MALFORMED: Final[list[tuple[Any, str]]] = [
    ("", "no algorithm prefix"),
    (_HEX64, "no algorithm prefix"),
    ("md5:" + _HEX64[:32], "'md5'"),
    ("SHA256:" + _HEX64, "'SHA256'"),
    ("sha-256:" + _HEX64, "'sha-256'"),
    (" sha256:" + _HEX64, "' sha256'"),
    ("sha256:", "0 characters"),
    ("sha256:" + _HEX64[:63], "63 characters"),
    ("sha256:" + _HEX64 + "0", "65 characters"),
    ("sha256:" + _HEX64 + "\n", "65 characters"),
    ("sha256:" + _HEX64.upper(), "lowercase"),
    ("sha256:" + "g" * 64, "not hex digits"),
    ("sha256:" + "\uff10" * 64, "not hex digits"),  # FULLWIDTH DIGIT ZERO: a digit, not hex
    ("sha256:" + _HEX64[:62] + "/.", "not hex digits"),
    ("sha256:../../../../etc/passwd", "characters after"),
    ("sha256:" + "../" * 21 + "x", "not hex digits"),
    ("sha256:/" + _HEX64[:63], "not hex digits"),
    ("sha256:" + _HEX64[:32] + "\x00" + _HEX64[:31], "not hex digits"),
    (("sha256:" + _HEX64).encode(), "not bytes"),
    (None, "not NoneType"),
    (42, "not int"),
]


def info_of(cas: CAS, digest: str) -> BlobInfo:
    """The one ``BlobInfo`` of ``digest`` (fails if it is listed other than once)."""
    [info] = [b for b in cas.blobs() if b.digest == digest]
    return info


class CASConformance:
    """Subclass as ``TestXxxCAS``, provide ``make_cas`` and the hooks (see the module)."""

    reopen: ClassVar[bool] = False

    def corrupt(self, cas: CAS, digest: str, data: bytes) -> None:
        """Hook: make ``digest``'s stored content ``data`` (a bad disk, a bad copy)."""
        raise NotImplementedError

    def set_modified(self, cas: CAS, digest: str, when: float) -> None:
        """Hook: make ``digest``'s blob look last put at ``when`` (``time.time()`` seconds)."""
        raise NotImplementedError

    # ------------------------------------------------------------ fixtures

    @pytest.fixture
    def opened(self, make_cas: MakeCAS) -> Iterator[MakeCAS]:
        """Opens CASes with ``make_cas`` and closes every one at teardown."""
        handles: list[CAS] = []

        def open_cas() -> CAS:
            handle = make_cas()
            handles.append(handle)
            return handle

        yield open_cas
        for handle in handles:
            handle.close()

    @pytest.fixture
    def cas(self, opened: MakeCAS) -> CAS:
        return opened()

    # ------------------------------------------------------------ put / get

    def test_is_a_cas(self, cas: CAS) -> None:
        assert isinstance(cas, CAS)

    @pytest.mark.parametrize(
        "data",
        [b"", b"x", b"\x00" * 7, bytes(range(256)), random.Random(1).randbytes(100_000)],
        ids=["empty", "one", "zeros", "all-bytes", "100k"],
    )
    def test_round_trip(self, cas: CAS, data: bytes) -> None:
        digest = cas.put(data)
        assert digest == digest_of(data)
        assert check_digest(digest) == digest.removeprefix("sha256:")
        assert cas.has(digest)
        assert cas.get(digest) == data
        assert info_of(cas, digest).size == len(data)

    def test_16_mib_round_trip(self, cas: CAS) -> None:
        data = random.Random(16).randbytes(16 << 20)
        digest = cas.put(data)
        assert cas.get(digest) == data
        assert info_of(cas, digest).size == 16 << 20

    def test_put_takes_bytes_like_and_refuses_the_rest(self, cas: CAS) -> None:
        buffers: list[Any] = [bytearray(b"abc"), memoryview(b"abcdef")[:3]]
        for buffer in buffers:
            assert cas.put(buffer) == digest_of(b"abc")
        for bad in ("abc", 42, None, [1, 2]):
            with pytest.raises(TypeError, match="bytes"):
                cas.put(bad)  # type: ignore[arg-type]
        assert list(cas) == [digest_of(b"abc")]

    def test_put_is_idempotent(self, cas: CAS) -> None:
        data = b"the same content"
        first = cas.put(data)
        assert cas.put(data) == cas.put(bytes(data)) == first
        assert [b.digest for b in cas.blobs()] == [first]
        assert list(cas) == [first]
        assert cas.get(first) == data

    def test_blob_time_is_wall_clock(self, cas: CAS) -> None:
        before = time.time()
        digest = cas.put(b"now")
        after = time.time()
        # file systems stamp with a coarse clock: allow it to lag a little
        assert before - 1.0 <= info_of(cas, digest).modified <= after + 1.0

    def test_dedup_put_refreshes_the_blob_time(self, cas: CAS) -> None:
        digest = cas.put(b"old news")
        other = cas.put(b"untouched")
        past = time.time() - 7200
        self.set_modified(cas, digest, past)
        self.set_modified(cas, other, past)
        assert info_of(cas, digest).modified == pytest.approx(past, abs=1e-3)
        before = time.time()
        assert cas.put(b"old news") == digest
        assert info_of(cas, digest).modified >= before - 1.0
        assert info_of(cas, other).modified == pytest.approx(past, abs=1e-3)
        assert cas.get(digest) == b"old news"

    def test_threads_putting_the_same_content(self, cas: CAS) -> None:
        datas = [random.Random(i % 3).randbytes(50_000) for i in range(12)]
        barrier = threading.Barrier(len(datas))
        results: list[str] = [""] * len(datas)

        def put(i: int) -> None:
            barrier.wait()
            results[i] = cas.put(datas[i])

        threads = [threading.Thread(target=put, args=(i,)) for i in range(len(datas))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [digest_of(d) for d in datas]
        assert sorted(cas) == sorted({digest_of(d) for d in datas})
        for d in datas:
            assert cas.get(digest_of(d)) == d

    # ------------------------------------------------------------ has / delete / listing

    def test_has_and_delete(self, cas: CAS) -> None:
        keep, drop = cas.put(b"keep"), cas.put(b"drop")
        assert cas.has(drop)
        assert cas.delete(drop) is True
        assert not cas.has(drop)
        assert cas.delete(drop) is False
        with pytest.raises(BlobNotFoundError):
            cas.get(drop)
        assert list(cas) == [keep]
        assert cas.get(keep) == b"keep"
        assert cas.put(b"drop") == drop  # content can come back
        assert cas.get(drop) == b"drop"

    def test_conditional_delete_spares_blobs_put_since(self, cas: CAS) -> None:
        young, old = cas.put(b"young"), cas.put(b"old")
        now = time.time()
        self.set_modified(cas, old, now - 100)
        self.set_modified(cas, young, now - 10)
        assert cas.delete(young, older_than=now - 50) is False
        assert cas.delete(old, older_than=now - 50) is True
        assert list(cas) == [young]
        assert cas.delete(old, older_than=now) is False  # absent

    def test_listing_and_iteration(self, cas: CAS) -> None:
        datas = [b"", b"a", b"bb", b"ccc" * 1000]
        digests = [cas.put(d) for d in datas]
        infos = list(cas.blobs())
        assert sorted(i.digest for i in infos) == sorted(digests)
        assert {i.digest: i.size for i in infos} == {digest_of(d): len(d) for d in datas}
        assert all(isinstance(i, BlobInfo) for i in infos)
        assert sorted(cas) == sorted(digests)
        for digest in digests:
            cas.delete(digest)
        assert list(cas.blobs()) == [] and list(cas) == []

    def test_deleting_while_listing(self, cas: CAS) -> None:
        digests = {cas.put(bytes([i]) * i) for i in range(40)}
        seen = set()
        for info in cas.blobs():
            seen.add(info.digest)
            assert cas.delete(info.digest)
        assert seen == digests
        assert list(cas) == []

    def test_blob_info_is_a_frozen_record(self) -> None:
        info = BlobInfo("sha256:" + _HEX64, 3, 1.5)
        assert (info.digest, info.size, info.modified) == ("sha256:" + _HEX64, 3, 1.5)
        with pytest.raises(AttributeError):
            info.size = 4  # type: ignore[misc]

    # ------------------------------------------------------------ bad digests, damage

    @pytest.mark.parametrize(("digest", "problem"), MALFORMED, ids=repr)
    def test_malformed_digests_are_refused_and_touch_nothing(
        self, cas: CAS, digest: Any, problem: str
    ) -> None:
        stored = cas.put(b"precious")
        before = list(cas.blobs())
        for call in (cas.get, cas.has, cas.delete, check_digest):
            with pytest.raises(ValueError, match="malformed CAS digest") as caught:
                call(digest)
            message = str(caught.value)
            assert problem in message
            assert "sha256:<64 lowercase hex digits>" in message
        with pytest.raises(ValueError, match="malformed"):
            cas.delete(digest, older_than=time.time() + 1000)
        assert list(cas.blobs()) == before
        assert cas.get(stored) == b"precious"

    def test_absent_digest_is_not_found(self, cas: CAS) -> None:
        absent = digest_of(b"never stored")
        assert not cas.has(absent)
        with pytest.raises(BlobNotFoundError, match="missing") as caught:
            cas.get(absent)
        assert absent in str(caught.value)
        assert isinstance(caught.value, CorruptionError)
        assert list(cas) == []

    def test_wrong_content_under_a_digest_is_corruption(self, cas: CAS) -> None:
        a, b = cas.put(b"content A"), cas.put(b"content B, longer")
        self.corrupt(cas, b, b"content A")
        for _ in range(2):  # the failed read changed nothing: it fails again
            with pytest.raises(CorruptionError) as caught:
                cas.get(b)
            assert not isinstance(caught.value, BlobNotFoundError)
            assert b in str(caught.value) and "corrupt" in str(caught.value)
        assert cas.has(b)
        assert info_of(cas, b).size == len(b"content A")
        assert cas.get(a) == b"content A"

    @pytest.mark.parametrize(
        "damage",
        [b"", b"content", b"content!", b"\x00" * 100],
        ids=["empty", "cut", "flip", "junk"],
    )
    def test_damaged_blob_is_never_returned(self, cas: CAS, damage: bytes) -> None:
        digest = cas.put(b"content")
        self.corrupt(cas, digest, damage if damage != b"content" else b"cOntent")
        with pytest.raises(CorruptionError, match="corrupt") as caught:
            cas.get(digest)
        assert not isinstance(caught.value, BlobNotFoundError)
        assert cas.has(digest)

    def test_put_rewrites_a_blob_of_the_wrong_size(self, cas: CAS) -> None:
        digest = cas.put(b"content")
        self.corrupt(cas, digest, b"")
        with pytest.raises(CorruptionError):
            cas.get(digest)
        assert cas.put(b"content") == digest
        assert cas.get(digest) == b"content"
        assert list(cas) == [digest]

    # ------------------------------------------------------------ lifecycle

    def test_close_and_context_manager(self, make_cas: MakeCAS) -> None:
        with make_cas() as cas:
            digest = cas.put(b"x")
            assert cas.get(digest) == b"x"
        calls: list[Callable[[], object]] = [
            lambda: cas.put(b"y"),
            lambda: cas.get(digest),
            lambda: cas.has(digest),
            lambda: cas.delete(digest),
            lambda: list(cas.blobs()),
            lambda: list(cas),
        ]
        for call in calls:
            with pytest.raises(RuntimeError, match="closed"):
                call()
        cas.close()  # idempotent

    def test_reopen_sees_the_same_blobs(self, make_cas: MakeCAS) -> None:
        if not self.reopen:
            pytest.skip(f"{type(self).__name__} does not reopen (reopen = False)")
        datas = [b"", b"one", random.Random(3).randbytes(70_000)]
        with make_cas() as cas:
            digests = [cas.put(d) for d in datas]
            cas.delete(cas.put(b"gone"))
            infos = sorted(cas.blobs(), key=lambda i: i.digest)
        with make_cas() as cas, make_cas() as second:
            assert sorted(cas.blobs(), key=lambda i: i.digest) == infos
            for digest, data in zip(digests, datas, strict=True):
                assert cas.get(digest) == data
            assert second.put(b"shared") == digest_of(b"shared")
            assert cas.get(digest_of(b"shared")) == b"shared"
