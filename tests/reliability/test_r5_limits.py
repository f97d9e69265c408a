"""R5, the rest of the row: payloads at and over the limits, and bounded memory.

* A payload of exactly ``max_payload`` encoded bytes is written and read back;
  one byte more is ``PayloadTooLargeError`` (a ``ValueError``) before anything
  is stored, for an activity result (the attempt fails for good), a start input
  and a signal.
* A compressed payload that would decompress past ``max_payload`` (a zstd
  "bomb": 256 MiB of zeros in a few KiB) never allocates its size: with its
  size in the frame header it is ``PayloadTooLargeError`` (found: the codec
  allocated the declared size, as python-zstandard ignores ``max_output_size``
  for such frames), without it ``CorruptionError``.
* Memory: the three R5 targets (decode, replay, the FileStore parser) over
  seeded malformed inputs allocate at most a small multiple of their input
  (``tracemalloc`` peak per case), and a 4 MiB payload replays within a bound.
"""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable, Generator
from typing import Any

import msgspec
import pytest

from engine import (
    Client,
    PayloadTooLargeError,
    ScheduleActivity,
    Status,
    WaitSignal,
    Worker,
    activity,
    workflow,
)
from engine._errors import CorruptionError, NonDeterminismError
from engine._payloads import PayloadCodec
from engine.events import ActivityFailed, Compressed, Inline, decode_history, encode_history
from engine.testing import replay
from stores import MemoryStore
from stores._fileformat import decode_events, dumps, frame_log_line, parse_log
from tests.reliability._seeds import replaying
from tests.reliability.test_r5_malformed import GOLDEN, _base

zstandard = pytest.importorskip("zstandard", reason="the codecs extra is not installed")

LIMIT = 4096
TYPED = (NonDeterminismError, CorruptionError, ValueError, TypeError)


def _text_of(size: int) -> str:
    """A str whose JSON encoding is exactly ``size`` bytes ("x..x" plus two quotes)."""
    return "x" * (size - 2)


@activity
def sized(n: int) -> str:
    return _text_of(n)


@workflow
def produce(n: int) -> Generator[Any, Any, int]:
    text = yield ScheduleActivity(sized, n)
    return len(text)


@workflow
def listen() -> Generator[Any, Any, int]:
    text = yield WaitSignal("data")
    return len(text)


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_a_payload_at_the_limit_passes_and_one_byte_more_is_refused(
    compression: str | None,
) -> None:
    codec = PayloadCodec(compression=compression, max_payload=LIMIT)
    store = MemoryStore()
    client = Client(store, codec=codec)
    worker = Worker(store, workflows=[produce, listen], activities=[sized], codec=codec)

    at = client.start(produce, LIMIT, id="at")
    over = client.start(produce, LIMIT + 1, id="over")
    worker.run_until_idle()
    assert client.result(at) == LIMIT - 2
    assert client.describe(over).status is Status.FAILED
    [failed] = [ev for ev in client.history(over) if isinstance(ev, ActivityFailed)]
    assert failed.attempt == 1 and "max_payload" in failed.error.message  # no retry helps

    # [text] encodes to len(text) + 4 bytes: "[", "]" and the quotes
    client.start(listen, id="input-at")
    before = {i.id: len(store.read(i.id)) for i in store.runs()}
    with pytest.raises(PayloadTooLargeError, match="max_payload"):
        client.start(produce, _text_of(LIMIT - 1), id="input-over")  # type: ignore[arg-type]
    with pytest.raises(PayloadTooLargeError, match="max_payload"):
        client.signal("input-at", "data", _text_of(LIMIT + 1))
    assert {i.id: len(store.read(i.id)) for i in store.runs()} == before  # nothing stored
    client.signal("input-at", "data", _text_of(LIMIT))
    worker.run_until_idle()
    assert client.result("input-at") == LIMIT - 2


def _peak(call: Callable[[], Any]) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        try:
            out: Any = call()
        except Exception as exc:  # the caller checks the kind
            out = exc
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("with_size", [True, False])
def test_a_decompression_bomb_is_corruption_without_the_allocation(with_size: bool) -> None:
    inner = msgspec.msgpack.encode(Inline(data=bytes(256 << 20)))  # 256 MiB of zeros
    params = zstandard.ZstdCompressionParameters(write_content_size=with_size)
    data = zstandard.ZstdCompressor(compression_params=params).compress(inner)
    del inner
    assert len(data) < 64 << 10
    codec = PayloadCodec(compression="zstd", max_payload=1 << 20)
    out, peak = _peak(lambda: codec.decode(Compressed(data=data)))
    # a declared size above the limit is "too large" (a codec with a higher limit reads
    # it); an undeclared one stops at the limit: the frame is incomplete, corruption
    assert isinstance(out, PayloadTooLargeError if with_size else CorruptionError), out
    assert peak < 8 << 20, f"{peak:,} bytes allocated for a 1 MiB limit"


def _damage(rng: random.Random, data: bytes) -> bytes:
    raw = bytearray(data)
    for _ in range(rng.randint(1, 4)):  # flips, cuts and a wrong kind
        what = rng.random()
        if what < 0.5 and raw:
            raw[rng.randrange(len(raw))] ^= rng.randint(1, 255)
        elif what < 0.8 and raw:
            del raw[rng.randrange(len(raw)) :]
        else:
            raw = bytearray(bytes(raw).replace(b'"kind":"', b'"kind":"X', 1))
    return bytes(raw)


def _case(target: str, rng: random.Random) -> tuple[int, Callable[[], Any]]:
    """(input size, the call) of one seeded malformed input for ``target``."""
    fn, events = _base(rng.randrange(len(GOLDEN)))
    if target == "decode":
        raw = _damage(rng, encode_history(events))
        return len(raw), lambda: decode_history(raw)
    if target == "replay":  # drop, duplicate or swap events (indices kept)
        events = list(events)
        i, j = rng.randrange(1, len(events)), rng.randrange(1, len(events))
        what = rng.choice(["drop", "dup", "swap"])
        if what == "drop":
            del events[i]
        elif what == "dup":
            events.insert(i, events[i])
        else:
            events[i], events[j] = events[j], events[i]
        return len(encode_history(events)), lambda: replay(fn, events)
    log = b"".join(frame_log_line(k + 1, 1, 1, dumps(e)) for k, e in enumerate(events))
    raw = _damage(rng, log)

    def parse() -> Any:
        batches, _ = parse_log(raw, 0, 1)
        return decode_events([b for batch in batches for b in batch.bodies])

    return len(raw), parse


@pytest.mark.parametrize("target", ["decode", "parse", "replay"])
def test_memory_per_malformed_case_is_a_small_multiple_of_its_input(target: str) -> None:
    seed = 5301
    rng = random.Random(seed)
    worst = (0.0, 0, 0)
    for case in range(120):
        with replaying(seed, f"R5 memory, {target}, case {case}"):
            size, call = _case(target, rng)
            out, peak = _peak(call)
            if isinstance(out, Exception):
                assert isinstance(out, (*TYPED, msgspec.DecodeError)), out
            bound = 64 * size + (2 << 20)
            assert peak < bound, f"{peak:,} bytes for a {size:,}-byte input"
            worst = max(worst, (peak / size, peak, size))
    ratio, peak, size = worst
    print(f"\nR5 memory {target}: peak <= {ratio:.0f}x the input ({peak:,} B for {size:,} B)")


def test_a_large_payload_replays_within_a_bounded_multiple() -> None:
    store = MemoryStore()
    client = Client(store)
    worker = Worker(store, workflows=[produce], activities=[sized])
    wid = client.start(produce, 4 << 20, id="big")
    worker.run_until_idle()
    history = client.history(wid)
    out, peak = _peak(lambda: replay(produce, history))
    assert not isinstance(out, Exception), out
    assert peak < 3 * (4 << 20) + (2 << 20), f"{peak:,} bytes to replay a 4 MiB payload"
