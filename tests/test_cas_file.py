"""FileCAS: the conformance suite at both durability levels, its layout, every bit flip
and truncation of a blob, many processes putting at once, hostile digests, foreign
files, stale temp files, races with GC's conditional delete, and OS errors."""

from __future__ import annotations

import errno
import multiprocessing
import os
import pathlib
import random
import shutil
import stat
import time
from collections.abc import Callable
from typing import Any

import pytest

from cas import CAS, BlobNotFoundError, FileCAS, digest_of, verify
from engine import CorruptionError, StoreError
from tests.cas_conformance import MALFORMED, CASConformance, MakeCAS, info_of


def blob_path(cas: CAS, digest: str) -> pathlib.Path:
    """Where a FileCAS keeps ``digest`` (the documented layout, as a person would find it)."""
    assert isinstance(cas, FileCAS)
    hexdigest = digest.removeprefix("sha256:")
    return cas.path / "sha256" / hexdigest[:2] / hexdigest[2:4] / hexdigest


def corrupt_file(cas: CAS, digest: str, data: bytes) -> None:
    """Overwrite (or create) ``digest``'s blob file with ``data``, as a bad disk would."""
    path = blob_path(cas, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.chmod(0o644)
    path.write_bytes(data)
    path.chmod(0o444)


def set_modified_file(cas: CAS, digest: str, when: float) -> None:
    os.utime(blob_path(cas, digest), (when, when))


def tree(root: pathlib.Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for directories)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def files_under(root: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in root.rglob("*") if p.is_file()]


# --------------------------------------------------------------------------- conformance


class TestFileCAS(CASConformance):
    reopen = True
    durability = "none"

    @pytest.fixture
    def make_cas(self, tmp_path: pathlib.Path) -> MakeCAS:
        return lambda: FileCAS(tmp_path / "cas", durability=self.durability)

    def corrupt(self, cas: CAS, digest: str, data: bytes) -> None:
        corrupt_file(cas, digest, data)

    def set_modified(self, cas: CAS, digest: str, when: float) -> None:
        set_modified_file(cas, digest, when)


class TestFileCASFsync(TestFileCAS):
    durability = "fsync"


@pytest.fixture
def cas(tmp_path: pathlib.Path) -> Any:
    with FileCAS(tmp_path / "cas", durability="none") as handle:
        yield handle


# --------------------------------------------------------------------------- layout


def test_layout(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "deep" / "cas"
    with FileCAS(root) as cas:
        assert repr(cas) == f"FileCAS({str(root)!r}, durability='fsync')"
        digest = cas.put(b"hello")
        hexdigest = digest.removeprefix("sha256:")
    path = root / "sha256" / hexdigest[:2] / hexdigest[2:4] / hexdigest
    assert path.read_bytes() == b"hello"
    assert stat.S_IMODE(path.stat().st_mode) & 0o222 == 0  # published read-only
    assert (root / "FORMAT").read_bytes() == b"temporalpp file cas 1\n"
    assert sorted(tree(root)) == sorted(
        [
            "FORMAT",
            "sha256",
            f"sha256/{hexdigest[:2]}",
            f"sha256/{hexdigest[:2]}/{hexdigest[2:4]}",
            str(path.relative_to(root)),
            "tmp",
        ]
    )


def test_a_relative_path_is_fixed_at_open(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with FileCAS("rel", durability="none") as cas:
        monkeypatch.chdir("/")
        digest = cas.put(b"x")
        assert cas.path == tmp_path / "rel"
    assert blob_path(cas, digest).exists()


def test_opening_the_wrong_thing(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a-file").write_bytes(b"not a directory")
    with pytest.raises(ValueError, match="not a directory"):
        FileCAS(tmp_path / "a-file")
    with pytest.raises(ValueError, match="not a directory"):
        FileCAS(tmp_path / "a-file" / "below")
    assert (tmp_path / "a-file").read_bytes() == b"not a directory"
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "FORMAT").write_bytes(b"temporalpp file store 1\n")
    with pytest.raises(ValueError, match="not a FileCAS"):
        FileCAS(tmp_path / "store")
    with pytest.raises(ValueError, match="durability"):
        FileCAS(tmp_path / "x", durability="flush")


# --------------------------------------------------------------------------- damage


def test_every_bit_flip_and_truncation_is_detected(tmp_path: pathlib.Path) -> None:
    """4096 * 8 single-bit flips and 4096 truncations of a 4 KiB blob: 36,864 reads."""
    data = random.Random(4096).randbytes(4096)
    undetected: list[str] = []

    with FileCAS(tmp_path / "cas", durability="none") as cas:
        digest = cas.put(data)

        def check(case: str) -> None:
            try:
                cas.get(digest)
            except BlobNotFoundError:
                undetected.append(f"{case}: reported missing, not corrupt")
            except CorruptionError:
                return
            else:
                undetected.append(f"{case}: returned bytes")

        path = blob_path(cas, digest)
        path.chmod(0o644)
        fd = os.open(path, os.O_RDWR)
        try:
            for i, byte in enumerate(data):
                for bit in range(8):
                    os.pwrite(fd, bytes([byte ^ (1 << bit)]), i)
                    check(f"bit {bit} of byte {i}")
                os.pwrite(fd, bytes([byte]), i)
            assert cas.get(digest) == data  # every flip was undone
            for size in range(len(data) - 1, -1, -1):
                os.ftruncate(fd, size)
                check(f"cut to {size} bytes")
        finally:
            os.close(fd)
    assert undetected == []


def test_damage_names_the_digest_and_the_file(cas: FileCAS) -> None:
    digest = cas.put(b"payload")
    corrupt_file(cas, digest, b"paylaod")
    with pytest.raises(CorruptionError) as caught:
        cas.get(digest)
    message = str(caught.value)
    assert digest in message and str(blob_path(cas, digest)) in message
    assert blob_path(cas, digest).read_bytes() == b"paylaod"  # left as found
    with pytest.raises(BlobNotFoundError) as missing:
        cas.get(digest_of(b"nothing"))
    assert str(cas.path) in str(missing.value)


# --------------------------------------------------------------------------- processes


def _put_together(root: str, seed: int, barrier: Any, results: Any) -> None:
    data = random.Random(seed).randbytes(1 << 20)
    with FileCAS(root, durability="fsync") as cas:
        barrier.wait(timeout=60)
        results.put(cas.put(data))


def test_processes_putting_the_same_content_at_once(tmp_path: pathlib.Path) -> None:
    """8 processes put one 1 MiB blob at the same moment: one file, no temp files left."""
    root = tmp_path / "cas"
    FileCAS(root).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(8)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_put_together, args=(str(root), 7, barrier, results)) for _ in range(8)
    ]
    for p in procs:
        p.start()
    try:
        digests = [results.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * 8
    data = random.Random(7).randbytes(1 << 20)
    assert digests == [digest_of(data)] * 8
    assert list((root / "tmp").iterdir()) == []
    with FileCAS(root) as cas:
        assert files_under(root / "sha256") == [blob_path(cas, digests[0])]
        assert cas.get(digests[0]) == data
        assert list(cas) == [digests[0]]


# --------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:../../..",
        "sha256:../../../../../../../../etc/passwd",
        "sha256:/etc/passwd",
        "sha256:" + "../" * 21 + "x",
        "sha256:" + "a" * 62 + "/.",
        "sha256:" + "aa/" * 21 + "a",
        "sha256:..\\..\\" + "a" * 58,
        "../sha256/" + "a" * 64,
    ],
)
def test_a_digest_cannot_escape_the_directory(tmp_path: pathlib.Path, digest: str) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep me")
    with FileCAS(tmp_path / "cas", durability="none") as cas:
        cas.put(b"inside")
        before = tree(tmp_path)
        for call in (cas.get, cas.has, cas.delete):
            with pytest.raises(ValueError, match="malformed CAS digest"):
                call(digest)
        with pytest.raises(ValueError, match="malformed CAS digest"):
            cas.delete(digest, older_than=time.time() + 1e6)
        assert tree(tmp_path) == before


def test_malformed_digests_create_no_files(cas: FileCAS) -> None:
    before = tree(cas.path)
    for digest, _ in MALFORMED:
        with pytest.raises(ValueError):
            cas.has(digest)
    assert tree(cas.path) == before


def test_foreign_files_are_ignored(cas: FileCAS) -> None:
    real = cas.put(b"real")
    other = digest_of(b"other").removeprefix("sha256:")
    top = cas.path / "sha256"
    hexdigest = real.removeprefix("sha256:")
    shard = top / hexdigest[:2] / hexdigest[2:4]
    (top / "README").write_text("hello")
    (top / "zz").mkdir()
    (top / "zz" / "zz").mkdir()
    (top / "zz" / "zz" / ("zz" + "0" * 62)).write_bytes(b"x")
    (top / hexdigest[:2] / "notes.txt").write_text("x")
    (shard / "notahexname").write_text("x")
    (shard / (hexdigest.upper())).write_text("x")
    (shard / other).write_bytes(b"in the wrong shard")
    (shard / (hexdigest[:4] + "f" * 60)).mkdir()  # a directory in a blob's place
    (shard / (hexdigest[:4] + "e" * 60)).symlink_to(blob_path(cas, real))
    (top / "ab").write_text("a file where a shard directory goes")
    (cas.path / "tmp" / "123-0123456789abcdef.tmp").write_bytes(b"half a put")
    (cas.path / "stray").write_text("x")
    assert list(cas) == [real]
    assert verify(cas).damaged == []
    directory = "sha256:" + hexdigest[:4] + "f" * 60
    assert not cas.has(directory)
    with pytest.raises(StoreError):
        cas.get(directory)
    assert cas.get(real) == b"real"


def test_a_missing_tree_lists_nothing(cas: FileCAS) -> None:
    cas.put(b"x")
    shutil.rmtree(cas.path / "sha256")
    assert list(cas.blobs()) == []
    assert verify(cas).checked == 0


def test_cleanup_removes_only_stale_temp_files(cas: FileCAS) -> None:
    tmp = cas.path / "tmp"
    old = time.time() - 2 * 3600
    names = ["1-0123456789abcdef.tmp", "2-0123456789abcdef.del", "3-0123456789abcdef.tmp"]
    for name in names:
        (tmp / name).write_bytes(b"x")
    (tmp / "foreign.txt").write_bytes(b"not ours")
    for name in [*names[:2], "foreign.txt"]:
        os.utime(tmp / name, (old, old))
    digest = cas.put(b"blob")
    assert list(cas) == [digest]  # temp files are never blobs
    assert cas.cleanup() == 2
    assert sorted(p.name for p in tmp.iterdir()) == ["3-0123456789abcdef.tmp", "foreign.txt"]
    assert cas.cleanup(max_age=0) == 1
    assert cas.get(digest) == b"blob"


# --------------------------------------------------------------------------- delete vs put


def test_a_put_between_gc_looking_and_deleting_keeps_the_blob(
    cas: FileCAS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GC saw an old blob; a worker re-puts it just before GC's rename: it stays."""
    digest = cas.put(b"wanted again")
    set_modified_file(cas, digest, time.time() - 3600)
    cutoff = time.time() - 600
    real_rename = os.rename

    def put_first(src: Any, dst: Any) -> None:
        monkeypatch.setattr(os, "rename", real_rename)
        assert cas.put(b"wanted again") == digest  # refreshes the time, just in time
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", put_first)
    assert cas.delete(digest, older_than=cutoff) is False
    assert cas.get(digest) == b"wanted again"
    assert info_of(cas, digest).modified >= cutoff
    assert list((cas.path / "tmp").iterdir()) == []


def test_a_put_after_gc_renamed_the_blob_writes_it_again(
    cas: FileCAS, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = cas.put(b"wanted again")
    set_modified_file(cas, digest, time.time() - 3600)
    real_rename = os.rename

    def put_after(src: Any, dst: Any) -> None:
        monkeypatch.setattr(os, "rename", real_rename)
        real_rename(src, dst)
        assert cas.put(b"wanted again") == digest  # finds no file: writes a new one

    monkeypatch.setattr(os, "rename", put_after)
    cas.delete(digest, older_than=time.time() - 600)
    assert cas.get(digest) == b"wanted again"
    assert list((cas.path / "tmp").iterdir()) == []


def test_a_put_between_refresh_and_restore(cas: FileCAS, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refreshed before GC's rename, and written anew after it: one blob, no leftovers."""
    digest = cas.put(b"twice")
    set_modified_file(cas, digest, time.time() - 3600)
    real_rename = os.rename

    def both(src: Any, dst: Any) -> None:
        monkeypatch.setattr(os, "rename", real_rename)
        os.utime(src)
        real_rename(src, dst)
        assert cas.put(b"twice") == digest

    monkeypatch.setattr(os, "rename", both)
    assert cas.delete(digest, older_than=time.time() - 600) is False
    assert cas.get(digest) == b"twice"
    assert list((cas.path / "tmp").iterdir()) == []


def test_restoring_without_hard_links(cas: FileCAS, monkeypatch: pytest.MonkeyPatch) -> None:
    digest = cas.put(b"x")
    set_modified_file(cas, digest, time.time() - 3600)
    real_rename = os.rename

    def refresh_first(src: Any, dst: Any) -> None:
        os.utime(src)  # a put's refresh, landing just before the rename
        real_rename(src, dst)

    def no_links(src: Any, dst: Any) -> None:
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "rename", refresh_first)
    monkeypatch.setattr(os, "link", no_links)
    assert cas.delete(digest, older_than=time.time() - 600) is False
    assert cas.get(digest) == b"x"
    assert list((cas.path / "tmp").iterdir()) == []


# --------------------------------------------------------------------------- OS errors


def _failing(code: int) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize(
    ("function", "code"),
    [
        ("write", errno.ENOSPC),
        ("fdatasync" if hasattr(os, "fdatasync") else "fsync", errno.EIO),
        ("replace", errno.EACCES),
        ("mkdir", errno.EACCES),
    ],
)
def test_a_failed_put_is_a_store_error_and_leaves_nothing(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, function: str, code: int
) -> None:
    with FileCAS(tmp_path / "cas", durability="fsync") as cas:
        kept = cas.put(b"already here")
        before = sorted(files_under(cas.path))
        with monkeypatch.context() as patch:
            patch.setattr(os, function, _failing(code))
            with pytest.raises(StoreError, match=str(tmp_path)) as caught:
                cas.put(b"new content")
        assert isinstance(caught.value.__cause__, OSError)
        assert caught.value.__cause__.errno == code
        assert os.strerror(code) in str(caught.value)
        assert sorted(files_under(cas.path)) == before  # no blob, no temp file (shards may stay)
        assert not cas.has(digest_of(b"new content"))
        assert cas.put(b"new content") == digest_of(b"new content")  # works once the disk does
        assert cas.get(kept) == b"already here"


def test_a_blob_whose_time_we_may_not_set_is_replaced(
    cas: FileCAS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's read-only blob: utime is refused, so put publishes its own copy."""
    digest = cas.put(b"theirs")
    set_modified_file(cas, digest, time.time() - 3600)
    inode = blob_path(cas, digest).stat().st_ino
    before = time.time()
    with monkeypatch.context() as patch:
        patch.setattr(os, "utime", _failing(errno.EPERM))
        assert cas.put(b"theirs") == digest
    assert blob_path(cas, digest).stat().st_ino != inode
    assert info_of(cas, digest).modified >= before - 1.0
    assert cas.get(digest) == b"theirs"
    assert list(cas) == [digest] and list((cas.path / "tmp").iterdir()) == []


def test_other_os_errors_are_store_errors(cas: FileCAS, monkeypatch: pytest.MonkeyPatch) -> None:
    digest = cas.put(b"data")
    with monkeypatch.context() as patch:
        patch.setattr(os, "utime", _failing(errno.EROFS))
        with pytest.raises(StoreError, match="store blob"):
            cas.put(b"data")  # the dedup refresh
    with monkeypatch.context() as patch:
        patch.setattr(os, "stat", _failing(errno.EACCES))
        with pytest.raises(StoreError, match="look up"):
            cas.has(digest)
        with pytest.raises(StoreError, match="delete"):
            cas.delete(digest, older_than=time.time())
    with monkeypatch.context() as patch:
        patch.setattr(os, "unlink", _failing(errno.EACCES))
        with pytest.raises(StoreError, match="delete"):
            cas.delete(digest)
    with monkeypatch.context() as patch:
        patch.setattr(os, "scandir", _failing(errno.EACCES))
        with pytest.raises(StoreError, match="list the blobs"):
            list(cas.blobs())
        with pytest.raises(StoreError, match="temp files"):
            cas.cleanup()
    assert cas.get(digest) == b"data"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_directory(tmp_path: pathlib.Path) -> None:  # pragma: no cover - not root
    with FileCAS(tmp_path / "cas") as cas:
        kept = cas.put(b"kept")
        (cas.path / "tmp").chmod(0o555)
        try:
            with pytest.raises(StoreError, match="Permission denied"):
                cas.put(b"new")
        finally:
            (cas.path / "tmp").chmod(0o755)
        assert cas.get(kept) == b"kept"


def test_an_unopenable_directory(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "open", _failing(errno.EACCES))
    with pytest.raises(StoreError, match="cannot open"):
        FileCAS(tmp_path / "cas")
