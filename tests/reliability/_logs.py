"""Synthetic FileStore run logs, built with the store's own framing (``stores._fileformat``)."""

from __future__ import annotations

import random
import uuid
from typing import Final

from engine.events import Event, Json, MarkerRecorded, with_index
from stores._fileformat import dumps, frame_log_line
from tests.store_conformance import T0, scheduled, signal, started, wtc

__all__ = ["Log", "make_log"]


class Log:
    """A log's bytes, its batches' ``(start, end)`` offsets and events."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.spans: list[tuple[int, int]] = []
        self.events: list[list[Event]] = []

    def add(self, events: list[Event]) -> None:
        number = len(self.spans) + 1
        start = len(self.data)
        for i, ev in enumerate(events, 1):
            self.data += frame_log_line(number, i, len(events), dumps(ev))
        self.spans.append((start, len(self.data)))
        self.events.append(events)

    def complete_before(self, cut: int) -> int:
        """How many batches end at or before ``cut``."""
        return sum(end <= cut for _, end in self.spans)


_PAD_NAME: Final = "pad"


def make_log(size: int, seed: int) -> Log:
    """A log of exactly ``size`` bytes: a run's start, then random batches of 1-5 events."""
    rng = random.Random(seed)
    log = Log()
    s = started("w", run_id=uuid.UUID(int=rng.getrandbits(128)).hex)
    log.add([s])
    index = 1
    seq = 0

    def one(kind: int, at: int) -> Event:
        nonlocal seq
        if kind == 0:
            return with_index(wtc(at, batch_id=f"b{at}"), at)
        if kind == 1:
            seq += 1
            return with_index(scheduled(seq), at)
        if kind == 2:
            return with_index(signal(f"sig-{rng.randrange(10**6)}", request_id=f"r{at}"), at)
        text = '"' + "\u00e9x" * rng.randrange(1, 40) + '"'
        return with_index(MarkerRecorded(time=T0, name="m", value=Json(text=text)), at)

    while True:
        n = rng.randint(1, 5)
        events = [one(rng.randrange(4), index + i) for i in range(n)]
        trial = Log()
        trial.data = bytearray(log.data)
        trial.spans = list(log.spans)
        trial.add(events)
        if len(trial.data) > size - 400:
            break
        log.add(events)
        index += n
    # pad to the exact size with one last marker whose text fits
    for width in range(0, 4000):
        ev = with_index(
            MarkerRecorded(time=T0, name=_PAD_NAME, value=Json(text=f'"{"p" * width}"')), index
        )
        line = frame_log_line(len(log.spans) + 1, 1, 1, dumps(ev))
        if len(log.data) + len(line) == size:
            log.add([ev])
            return log
    raise AssertionError(f"cannot pad a log to {size} bytes (seed {seed})")
