"""R2 torn writes on the FileStore: cuts at every byte, flipped bytes, power loss.

* the recovery parser (``stores._fileformat.parse_log``) at every byte offset of
  a 16 KiB and a 64 KiB log in memory (16,385 + 65,537 = 81,922 cuts): it keeps
  exactly the batches complete before the cut and ends at the last one's end;
* a flipped byte anywhere before the last batch (every offset of the 16 KiB log,
  a seeded mask each; every bit of the first lines) raises ``CorruptionError``;
* real files: a ``FileStore`` reopened on a log cut at every batch boundary and
  one byte either side, plus a seeded sample of cuts, reads exactly the
  complete batches and appends after them;
* power loss: ``tests/reliability/faultfs.py`` (``test_r2_power.py``).

Seeds: ``$TPP_SEED`` replaces the defaults below (see ``_seeds``).
"""

from __future__ import annotations

import pathlib
import random
import shutil

import pytest

from engine._errors import CorruptionError
from engine.events import Event, WorkflowStarted
from stores._fileformat import parse_log
from stores.file import FileStore
from tests.reliability._logs import Log, make_log
from tests.reliability._seeds import replaying, seeds
from tests.store_conformance import append_ok, batch, history, ref, signal, started
from tests.test_store_file import log_of

SIZES = {16 * 1024: 1601, 64 * 1024: 6401}  # log size -> its seed


def _check_cut(log: Log, data: bytes, cut: int, start_batch: int) -> None:
    """Parse ``data[start:cut]`` (``start`` the offset of batch ``start_batch``)."""
    start = log.spans[start_batch][0]
    batches, end = parse_log(data[start:cut], start, start_batch + 1)
    whole = log.complete_before(cut)
    assert [b.number for b in batches] == list(range(start_batch + 1, whole + 1)), cut
    assert end == (log.spans[whole - 1][1] if whole > start_batch else start), cut
    for b in batches:
        assert (b.offset, b.end) == log.spans[b.number - 1], cut


@pytest.mark.parametrize("size", SIZES)
def test_the_parser_at_every_byte_offset(size: int) -> None:
    """Every cut 0..size, parsed from the batch boundary before the one cut (as a
    handle tailing the log does); every 97th cut (and the last batch's every byte)
    also parsed from byte 0, as a fresh open does.  All from 0: the ci tier."""
    [seed] = seeds(SIZES[size], 1)
    with replaying(seed, f"{size}-byte log"):
        log = make_log(size, seed)
        data = bytes(log.data)
        assert len(data) == size
        last = log.spans[-1][0]
        for cut in range(size + 1):
            _check_cut(log, data, cut, max(0, log.complete_before(cut) - 2))
            if cut % 97 == 0 or cut >= last:
                _check_cut(log, data, cut, 0)
        # decoding what was kept gives the events back
        batches, _ = parse_log(data, 0, 1)
        assert sum(len(b.bodies) for b in batches) == sum(map(len, log.events))


@pytest.mark.ci
@pytest.mark.parametrize("size", SIZES)
def test_the_parser_from_byte_0_at_every_offset(size: int) -> None:
    [seed] = seeds(SIZES[size], 1)
    with replaying(seed, f"{size}-byte log"):
        log = make_log(size, seed)
        data = bytes(log.data)
        for cut in range(size + 1):
            _check_cut(log, data, cut, 0)


def test_a_flipped_byte_before_the_last_batch_is_corruption() -> None:
    """Every offset of the 16 KiB log before its last batch, a seeded non-zero XOR mask."""
    for seed in seeds(1602, 1):
        with replaying(seed):
            log = make_log(16 * 1024, seed)
            rng = random.Random(seed)
            data = bytes(log.data)
            for pos in range(log.spans[-1][0]):
                damaged = bytearray(data)
                damaged[pos] ^= rng.randrange(1, 256)
                with pytest.raises(CorruptionError):
                    parse_log(bytes(damaged), 0, 1)
                    raise AssertionError(f"flip at byte {pos} accepted")


def test_every_bit_of_the_first_lines() -> None:
    """Every single-bit flip in the first 4 batches (regression: the CRC's hex was read
    with ``int(_, 16)``, so flipping a letter's case bit ``a`` -> ``A`` went unseen)."""
    log = make_log(16 * 1024, 1603)
    data = bytes(log.data)
    for pos in range(log.spans[4][0]):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[pos] ^= 1 << bit
            with pytest.raises(CorruptionError):
                parse_log(bytes(damaged), 0, 1)
                raise AssertionError(f"bit {bit} of byte {pos} accepted")


# --------------------------------------------------------------------------- real files


def _pristine(root: pathlib.Path, seed: int) -> tuple[WorkflowStarted, list[Event], list[int]]:
    """A store with one run of 25 batches of 1-4 signals: its history, and the byte
    offset where each batch ends (one event per line)."""
    rng = random.Random(seed)
    s = started("torn")
    with FileStore(root, durability="none") as store:
        store.create(s)
        for b in range(25):
            append_ok(store, batch(s, *[signal(f"s{b}.{i}") for i in range(rng.randint(1, 4))]))
        whole = history(store, s)
    data = log_of(root, ref(s)).read_bytes()
    ends: list[int] = []  # ends[k]: where the batch holding event k ends
    pos = 0
    for line in data.splitlines(keepends=True):
        pos += len(line)
        i, n = map(int, line.split(b" ")[2].split(b"/"))
        ends.append(-1)
        if i == n:
            ends[-i:] = [pos] * i
    assert len(ends) == len(whole) and pos == len(data)
    return s, whole, ends


def test_real_files_cut_at_every_batch_boundary_and_a_seeded_sample(
    tmp_path: pathlib.Path,
) -> None:
    """Each cut: reopen (fsync level), read exactly the complete batches, append after."""
    for seed in seeds(1604, 1):
        with replaying(seed):
            pristine = tmp_path / "pristine"
            s, whole, ends = _pristine(pristine, seed)
            size = ends[-1]
            rng = random.Random(seed)
            cuts = {end + d for end in set(ends) for d in (-1, 0, 1)}
            cuts |= set(rng.sample(range(size), 40))
            cuts = {c for c in cuts if ends[0] <= c <= size}
            assert len(cuts) >= 26 * 3 - 1
            work = tmp_path / "work"
            for cut in sorted(cuts):
                shutil.rmtree(work, ignore_errors=True)
                shutil.copytree(pristine, work)
                with open(log_of(work, ref(s)), "r+b") as f:
                    f.truncate(cut)
                length = sum(end <= cut for end in ends)
                with FileStore(work, durability="fsync") as store:
                    assert history(store, s) == whole[:length], cut
                    assert append_ok(store, batch(s, signal("after"))) == length, cut
                with FileStore(work, durability="none") as store:
                    got = history(store, s)
                    assert got[:length] == whole[:length] and len(got) == length + 1, cut
