"""The FileStore's bytes on disk: framed lines, their parser, and the index records.

A **run log** holds one event per line, framed by batch::

    <crc32, 8 hex> <batch number> <i>/<n> <event as JSON>\\n

The CRC covers everything after its space up to the newline.  Batch numbers
count 1, 2, 3... within the file; a batch is its lines ``1/n`` to ``n/n``, and
counts only when line ``n/n`` is there.  Line 1 of a file is the run's
``WorkflowStarted`` (index 0); a ``WorkflowStarted`` line anywhere else is a run
that the batch starts (a child, the next run of a continue-as-new), kept with
the batch so that a crash between the batch and that start can be repaired.

``parse_log`` tells a torn tail from damage:

* torn (dropped, the next append truncates it): a last line without its newline;
  the end of the file inside a batch after intact lines; a last damaged line
  holding NUL bytes (a block a power cut left unwritten);
* damage (``CorruptionError``): any other line that fails its checksum or its
  framing, wherever it is: a flipped byte is never silently skipped.

**Index records** (the journal, snapshots) are lines ``<crc32> <JSON>\\n``
holding the tagged ``msgspec`` structs below.  Journal lines are written with
``O_APPEND`` by many processes; a line torn by a crash is skipped (a torn write
comes from a dead process, whose records are void anyway), and a record that
another writer appended right after a torn one is found again inside the line.

JSON keeps files greppable.  A Python string (a workflow id, a signal name)
may hold lone surrogates, which UTF-8 cannot carry and JSON's ``\\udxxx`` escapes
cannot keep apart from a real pair (``"\\ud83d\\ude00"`` decodes as one
character).  Such a value is written as ``~`` and JSON in which every surrogate
is ``U+E000`` followed by ``U+E100 + (code - 0xD800)``, and ``U+E000`` itself is
doubled (private-use characters, so the text stays valid UTF-8); ``loads``
undoes it exactly.
"""

from __future__ import annotations

import json
import re
import zlib
from datetime import datetime
from typing import Any, Final, NamedTuple

import msgspec

from engine._errors import CorruptionError
from engine._events import Event, Payload, WorkflowStarted
from engine._info import Status

__all__ = [
    "Boot",
    "Claim",
    "Done",
    "Heartbeat",
    "LogBatch",
    "OwnerEpoch",
    "Record",
    "Release",
    "RunRecord",
    "SnapshotEnd",
    "SnapshotHead",
    "SummaryRecord",
    "Touch",
    "decode_event",
    "decode_events",
    "decode_record",
    "dumps",
    "encode_record",
    "frame_log_line",
    "loads",
    "parse_log",
    "split_records",
]

_encoder: Final = msgspec.json.Encoder()
_event_decoder: Final = msgspec.json.Decoder(Event)


_ESC: Final = "\ue000"
_HIDDEN: Final = re.compile("[\ud800-\udfff\ue000]")
_SHOWN: Final = re.compile("\ue000(.)", re.DOTALL)


def _hide(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        c = m.group()
        return _ESC + (_ESC if c == _ESC else chr(0xE100 + ord(c) - 0xD800))

    return _HIDDEN.sub(one, text)


def _show(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        c = m.group(1)
        return _ESC if c == _ESC else chr(ord(c) - 0xE100 + 0xD800)

    return _SHOWN.sub(one, text) if _ESC in text else text


def _walk(value: Any, fix: Any) -> Any:
    if isinstance(value, str):
        return fix(value)
    if isinstance(value, list | tuple):
        return [_walk(v, fix) for v in value]
    if isinstance(value, dict):
        return {fix(k) if isinstance(k, str) else k: _walk(v, fix) for k, v in value.items()}
    return value


def dumps(obj: Any) -> bytes:
    """JSON bytes of a msgspec value (see the module docstring for lone surrogates)."""
    try:
        return _encoder.encode(obj)
    except UnicodeEncodeError:
        hidden = _walk(msgspec.to_builtins(obj), _hide)
        return b"~" + json.dumps(hidden, ensure_ascii=False, separators=(",", ":")).encode()


def loads(data: bytes, type: Any, decoder: msgspec.json.Decoder[Any] | None = None) -> Any:
    """Decode what ``dumps`` wrote; ``msgspec.ValidationError``/``ValueError`` if it is not."""
    if data[:1] == b"~":
        return msgspec.convert(_walk(json.loads(data[1:]), _show), type)
    if decoder is not None:
        return decoder.decode(data)
    return msgspec.json.decode(data, type=type)


_events_decoder: Final = msgspec.json.Decoder(list[Event])


def decode_events(bodies: list[bytes]) -> list[Event]:
    """Decode many events' JSON at once (one ``msgspec`` call unless a line is escaped)."""
    if not any(b[:1] == b"~" for b in bodies):
        events: list[Event] = _events_decoder.decode(b"[" + b",".join(bodies) + b"]")
        if len(events) == len(bodies):
            return events
    return [decode_event(b) for b in bodies]


def decode_event(data: bytes) -> Event:
    event: Event = loads(data, Event, _event_decoder)
    return event


# --------------------------------------------------------------------------- run logs


def frame_log_line(batch: int, i: int, n: int, body: bytes) -> bytes:
    """One log line: ``body`` (an event's JSON) as line ``i`` of ``n`` of batch ``batch``."""
    rest = b"%d %d/%d %s" % (batch, i, n, body)
    return b"%08x %s\n" % (zlib.crc32(rest), rest)


class LogBatch(NamedTuple):
    """A complete batch found in a log: its number, its byte span and its lines' JSON."""

    number: int
    offset: int
    end: int
    bodies: list[bytes]


def _line_body(line: bytes) -> tuple[int, int, int, bytes] | None:
    """``(batch, i, n, json)`` of an intact line, or None if it fails its checksum."""
    try:
        rest = line[9:]
        # NB: compare the exact lower-case hex, not int(..., 16): that also takes
        # "Fdeaad53", " deaad53" or "0_eaad53", so a flipped bit there went unseen
        if line[8] != 0x20 or line[:8] != b"%08x" % zlib.crc32(rest):
            return None
        batch, position, body = rest.split(b" ", 2)
        i, n = position.split(b"/")
        return int(batch), int(i), int(n), body
    except (ValueError, IndexError):
        return None  # a short line, or checksummed garbage: damage all the same


def parse_log(data: bytes, offset: int, next_batch: int) -> tuple[list[LogBatch], int]:
    """The complete batches in ``data``: a log's bytes from ``offset``, a batch boundary.

    ``next_batch`` is the number the first batch must have.  Returns the batches
    and the file offset just after the last of them (the start of a torn tail,
    if any).  Raises ``CorruptionError`` for damage (see the module docstring).
    """
    batches: list[LogBatch] = []
    lines = data.split(b"\n")
    lines.pop()  # after the last newline: empty, or a line torn before its newline
    pos = start = 0  # the current line's and batch's offsets in ``data``
    bodies: list[bytes] = []
    expect_i = count = 1
    for index, line in enumerate(lines):
        parsed = _line_body(line)
        if parsed is None:
            if b"\x00" in line and _nothing_intact_after(lines[index + 1 :]):
                break  # a hole a power cut left: torn
            raise CorruptionError(
                f"log line at byte {offset + pos} fails its checksum (damaged file)"
            )
        batch, i, n, body = parsed
        if batch != next_batch or i != expect_i or i > n or (i > 1 and n != count):
            raise CorruptionError(
                f"log line at byte {offset + pos} is out of sequence: batch {batch} line "
                f"{i}/{n} where batch {next_batch} line {expect_i} was due"
            )
        if i == 1:
            start, count, bodies = pos, n, []
        bodies.append(body)
        pos += len(line) + 1
        if i == n:
            batches.append(LogBatch(next_batch, offset + start, offset + pos, bodies))
            next_batch += 1
            expect_i = 1
        else:
            expect_i = i + 1
    end = batches[-1].end if batches else offset
    return batches, end


def _nothing_intact_after(lines: list[bytes]) -> bool:
    return all(_line_body(line) is None for line in lines)


# --------------------------------------------------------------------------- index records


class Record(msgspec.Struct, frozen=True, kw_only=True, tag_field="k", omit_defaults=True):
    """A journal record; ``s`` is the session (store handle) that wrote it."""

    s: str


class Touch(Record, frozen=True, tag="t"):
    """Written *before* a log write: run ``w``/``r`` (file number ``n``) is about to grow.

    ``b`` is the first batch number the write adds; ``fx`` marks batches with
    cross-run effects (starts, a parent to notify), undone until a ``Done``.
    """

    w: str
    r: str
    n: int
    b: int = 1
    fx: bool = False


class Done(Record, frozen=True, tag="x"):
    """The cross-run effects of the batches from ``b`` on of run ``w``/``r`` are applied."""

    w: str
    r: str
    b: int


class OwnerEpoch(Record, frozen=True, tag="o"):
    """Session ``s`` now holds owner ``o``'s liveness lock: older claims of ``o`` are void."""

    o: str


class Claim(Record, frozen=True, tag="c"):
    o: str
    w: str
    r: str


class Release(Record, frozen=True, tag="r"):
    """Owner ``o`` gives the run back; ``nb``/``bl`` hold unless a decision lands after ``l``."""

    o: str
    w: str
    r: str
    l: int  # noqa: E741 - the run's length when released
    nb: datetime | None = None
    bl: str | None = None


class Heartbeat(Record, frozen=True, tag="h"):
    w: str
    r: str
    q: int
    d: Payload


class Boot(Record, frozen=True, tag="boot"):
    """The store has been checked against its logs since boot ``id``."""

    id: str


class SummaryRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``stores._summary.RunSummary`` as data (snapshots)."""

    started: WorkflowStarted
    status: Status
    close_time: datetime | None = None
    closing: Event | None = None
    length: int = 1
    last_input: int = 0
    last_seen: int = 0
    activities: dict[int, datetime] = {}
    timers: dict[int, datetime] = {}
    not_before: datetime | None = None
    blocked: str | None = None


class SnapshotHead(Record, frozen=True, tag="snap"):
    gen: int
    fields: list[str]  # RunSummary's slots when written: a mismatch refolds from the logs
    boot: str = ""
    epochs: dict[str, str] = {}
    fx: list[Touch] = []


class RunRecord(Record, frozen=True, tag="run"):
    """One run in a snapshot (``summary`` None: not yet readable, refresh from the log)."""

    w: str
    r: str
    n: int
    size: int = 0
    batches: int = 0
    last_wtc: int = -1
    owner: str | None = None
    hb: dict[int, Payload] = {}
    rel: tuple[int, datetime | None, str | None] | None = None
    summary: SummaryRecord | None = None
    dirty: bool = False


class SnapshotEnd(Record, frozen=True, tag="end"):
    runs: int


_AnyRecord = (
    Touch
    | Done
    | OwnerEpoch
    | Claim
    | Release
    | Heartbeat
    | Boot
    | SnapshotHead
    | RunRecord
    | SnapshotEnd
)
_record_decoder: Final = msgspec.json.Decoder(_AnyRecord)


def encode_record(record: Record) -> bytes:
    body = dumps(record)
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_record(line: bytes) -> Record | None:
    """The record of an index line, or None if it fails its checksum or schema."""
    body = line[9:]
    try:
        if line[8] != 0x20 or zlib.crc32(body) != int(line[:8], 16):
            return None
    except (ValueError, IndexError):
        return None
    try:
        record: Record = loads(body, _AnyRecord, _record_decoder)
        return record
    except (msgspec.DecodeError, ValueError):
        return None


_RECORD_START: Final = re.compile(rb"[0-9a-f]{8} [{~]")


def split_records(data: bytes) -> tuple[list[Record], int]:
    """The records in ``data`` and how many bytes of it were whole lines."""
    out: list[Record] = []
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return out, pos
        line = data[pos:nl]
        pos = nl + 1
        record = decode_record(line)
        if record is None:  # torn by a dead writer; another record may follow inside
            for match in _RECORD_START.finditer(line, 1):
                record = decode_record(line[match.start() :])
                if record is not None:
                    break
        if record is not None:
            out.append(record)
