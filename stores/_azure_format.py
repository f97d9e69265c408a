"""AzureBlobStore's bytes: blob names, frames, inbox records, checkpoints, run metadata.

Pure: no I/O and no Azure SDK, so every rule here is tested without Azurite.

**Names** (``PREFIX`` is the store's prefix, "" or ending in "/")::

    PREFIX h/<sha3>/<id>/<n:08>           run n of the id: history segment 0 (append blob)
    PREFIX h/<sha3>/<id>/<n:08>.<k:04>    its segment k >= 1
    PREFIX b/<sha3>/<id>/<n:08>/<seq>     heartbeat slot of activity seq (block blob)
    PREFIX p/<queue>/<p:04>.ckpt          partition p's checkpoint (block blob, leased)
    PREFIX p/<queue>/<p:04>.in.<k:04>     partition p's inbox, segment k (append blob)

``<id>`` and ``<queue>`` are ``stores._names.name``: injective, at most 122
characters of ``[a-z0-9_%^~-]``; ``<sha3>`` is the first three hex digits of the
id's SHA-256, so that consecutive ids spread over Azure's range partitions.
The longest name is far below Azure's 1,024 characters (the prefix is at most
512).  A run's **ordinal** ``n`` (0, 1, 2... per id) is its place in the id's
chain: creating run ``n`` with ``If-None-Match: *`` is the one atomic step that
makes it exist, so two racing starts of one id cannot both succeed.

**Frames.**  An append blob is read as one byte string (block boundaries are
not visible), so every block is one self-delimiting frame::

    0xA7, u32 length, u32 crc32(body), body = msgpack [batch id, part, parts, chunk]

A batch (a history batch, or one inbox record) is its parts' chunks joined, in
order; it counts only when parts ``0..parts-1`` stand next to each other.  One
block holds at most ``max_block`` bytes, so a larger batch takes several blocks
and a crash between them leaves a torn batch, which readers drop (the next
append lands after it).  A frame that fails its magic, length or CRC is damage:
``CorruptionError``.

Values (events, records) are msgpack; one holding a lone surrogate (which
msgspec refuses to encode) is escaped as in ``stores.sqlite``: ``0xC1``, then
msgpack with such strings as extension type 1.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Final, NamedTuple, TypeVar

import msgspec

from engine._errors import CorruptionError
from engine._events import Event, Payload, WorkflowStarted, decode_history
from engine._info import Status

from . import _names

__all__ = [
    "MAGIC",
    "Abandon",
    "Checkpoint",
    "CheckpointRun",
    "Frame",
    "Names",
    "Record",
    "Start",
    "Touch",
    "blocked_meta",
    "decode",
    "decode_events",
    "encode",
    "encode_events",
    "frames",
    "id_hash",
    "pack_frames",
    "parse_frames",
    "partition_of",
    "read_blocked",
    "started_from_meta",
    "started_meta",
]

_T = TypeVar("_T")

MAGIC: Final = 0xA7
_HEAD: Final = struct.Struct(">BII")
_ESCAPED: Final = b"\xc1"  # never begins msgpack: marks an encoding with lone surrogates
_STARTED_META_MAX: Final = 6000  # base64 characters of WorkflowStarted kept in metadata
_BLOCKED_META_MAX: Final = 1500  # bytes of blocked text kept in metadata

_tree_decoder: Final = msgspec.msgpack.Decoder(
    ext_hook=lambda code, data: bytes(data).decode("utf-8", "surrogatepass")
)
_encoder: Final = msgspec.msgpack.Encoder()


# --------------------------------------------------------------------------- values


def encode(value: Any) -> bytes:
    """msgpack, or for values with lone surrogates (msgspec refuses them) the escape."""
    try:
        return _encoder.encode(value)
    except UnicodeEncodeError:
        tree = msgspec.to_builtins(value, builtin_types=(bytes, datetime))
        return _ESCAPED + msgspec.msgpack.encode(_escape(tree))


def _escape(tree: Any) -> Any:
    if isinstance(tree, str):
        try:
            tree.encode("utf-8")
        except UnicodeEncodeError:
            return msgspec.msgpack.Ext(1, tree.encode("utf-8", "surrogatepass"))
        return tree
    if isinstance(tree, dict):
        return {_escape(k): _escape(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_escape(v) for v in tree]
    return tree


def decode(data: bytes, type_: type[_T] | Any) -> _T:
    """The inverse of :func:`encode`; damage is ``CorruptionError``."""
    try:
        if data[:1] == _ESCAPED:
            return msgspec.convert(_tree_decoder.decode(data[1:]), type_)
        return msgspec.msgpack.decode(data, type=type_)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptionError(f"stored bytes do not decode: {exc}") from exc


def encode_events(events: Sequence[Event]) -> bytes:
    """A batch's events, without their indices (a reader numbers them by position)."""
    return encode([msgspec.structs.replace(ev, index=-1) for ev in events])


def decode_events(data: bytes) -> list[Event]:
    if data[:1] != _ESCAPED:
        try:
            return decode_history(data, format="msgpack")
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
    return decode(data, list[Event])


# --------------------------------------------------------------------------- names


def id_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def partition_of(task_queue: str, workflow_id: str, partitions: int) -> int:
    """The partition of (task queue, id): the first 8 bytes of a SHA-256, mod ``partitions``."""
    queue = task_queue.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(
        len(queue).to_bytes(4, "big") + queue + workflow_id.encode("utf-8", "surrogatepass")
    ).digest()
    return int.from_bytes(digest[:8], "big") % partitions


class Names:
    """Blob names under one prefix (see the module docstring)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.histories = prefix + "h/"

    def id_dir(self, workflow_id: str) -> str:
        return f"{self.histories}{id_hash(workflow_id)[:3]}/{_names.name(workflow_id)}/"

    def segment(self, workflow_id: str, ordinal: int, k: int) -> str:
        base = f"{self.id_dir(workflow_id)}{ordinal:08d}"
        return base if k == 0 else f"{base}.{k:04d}"

    def heartbeats(self, workflow_id: str, ordinal: int) -> str:
        """The directory of a run's heartbeat slots."""
        return (
            f"{self.prefix}b/{id_hash(workflow_id)[:3]}/{_names.name(workflow_id)}/{ordinal:08d}/"
        )

    def heartbeat(self, workflow_id: str, ordinal: int, seq: int) -> str:
        return f"{self.heartbeats(workflow_id, ordinal)}{seq}"

    def queue_dir(self, task_queue: str) -> str:
        return f"{self.prefix}p/{_names.name(task_queue)}/"

    def checkpoint(self, task_queue: str, p: int) -> str:
        return f"{self.queue_dir(task_queue)}{p:04d}.ckpt"

    def inbox(self, task_queue: str, p: int, k: int) -> str:
        return f"{self.queue_dir(task_queue)}{p:04d}.in.{k:04d}"

    @staticmethod
    def run_ordinal(name: str) -> int | None:
        """The ordinal of a run's segment-0 blob name (its last component), else None."""
        last = name.rsplit("/", 1)[-1]
        return int(last) if len(last) == 8 and last.isdigit() else None


# --------------------------------------------------------------------------- frames


class Frame(NamedTuple):
    """One decoded block: where it starts and ends in its blob, and what it holds."""

    start: int
    end: int
    batch: str
    part: int
    parts: int
    chunk: bytes


def pack_frames(batch_id: str, payload: bytes, max_block: int) -> list[bytes]:
    """The blocks that carry ``payload`` as batch ``batch_id`` (one unless it is large)."""
    room = max(1, max_block - 128 - len(batch_id.encode("utf-8", "surrogatepass")))
    chunks = [payload[i : i + room] for i in range(0, len(payload), room)] or [b""]
    out = []
    for part, chunk in enumerate(chunks):
        body = _encoder.encode((batch_id, part, len(chunks), chunk))
        out.append(_HEAD.pack(MAGIC, len(body), zlib.crc32(body)) + body)
    return out


def parse_frames(data: bytes, base: int, where: Callable[[], str]) -> Iterator[Frame]:
    """The frames of ``data`` (read from offset ``base`` of a blob); damage raises."""
    i = 0
    size = len(data)
    while i < size:
        if size - i < _HEAD.size:
            raise CorruptionError(f"{where()}: a frame header is cut at byte {base + i}")
        magic, length, crc = _HEAD.unpack_from(data, i)
        end = i + _HEAD.size + length
        if magic != MAGIC or end > size:
            raise CorruptionError(f"{where()}: no frame at byte {base + i}")
        body = data[i + _HEAD.size : end]
        if zlib.crc32(body) != crc:
            raise CorruptionError(f"{where()}: the frame at byte {base + i} fails its checksum")
        try:
            batch, part, parts, chunk = msgspec.msgpack.decode(
                body, type=tuple[str, int, int, bytes]
            )
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CorruptionError(f"{where()}: the frame at byte {base + i}: {exc}") from exc
        yield Frame(base + i, base + end, batch, part, parts, chunk)
        i = end


class Batch(NamedTuple):
    start: int
    end: int
    batch: str
    payload: bytes


def frames(data: bytes, base: int, where: Callable[[], str]) -> tuple[list[Batch], int]:
    """Complete batches in ``data``, and where an unfinished batch at its end begins.

    A batch whose parts are interrupted by another frame was torn by a crash and
    is dropped; one still unfinished at the end may be in the middle of being
    written: the second value is its start (``base + len(data)`` when there is none),
    where a reader resumes.
    """
    done: list[Batch] = []
    open_: list[Frame] = []
    for f in parse_frames(data, base, where):
        if open_ and (f.batch != open_[0].batch or f.part != len(open_)):
            open_ = []  # torn: another frame came between its parts
        if f.part != len(open_):
            continue  # a stray later part of a torn batch
        open_.append(f)
        if len(open_) == f.parts:
            done.append(Batch(open_[0].start, f.end, f.batch, b"".join(x.chunk for x in open_)))
            open_ = []
    resume = open_[0].start if open_ else base + len(data)
    return done, resume


# --------------------------------------------------------------------------- inbox records


class Start(msgspec.Struct, frozen=True, tag="start", array_like=True):
    """A run is about to be created (written before it is): the partition's owner indexes it."""

    started: WorkflowStarted


class Touch(msgspec.Struct, frozen=True, tag="touch", array_like=True):
    """A run of this partition was appended to by a handle that does not own the partition.

    Where the batch landed comes along (``segment``, its bytes ``start:end``, the
    segment's ``blocks`` after it, the index ``at`` of its first event) and, when
    small, its encoded ``events``: a holder whose copy of the run ends exactly at
    ``start`` takes the batch from here instead of reading the history, and one
    that read past ``end`` already has it.  ``-1``: unknown (then it reads).
    """

    workflow_id: str
    run_id: str
    at: int = -1
    segment: int = -1
    start: int = -1
    end: int = -1
    blocks: int = -1
    events: bytes = b""


class Abandon(msgspec.Struct, frozen=True, tag="abandon", array_like=True):
    """A ``Start`` that did not happen (refused after its record was written)."""

    workflow_id: str
    run_id: str


Record = Start | Touch | Abandon


# --------------------------------------------------------------------------- checkpoints


class CheckpointRun(msgspec.Struct, frozen=True, array_like=True):
    workflow_id: str
    run_id: str
    ordinal: int  # -1: a Start whose run was not seen yet
    started: WorkflowStarted | None = None  # only for ordinal -1


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """What a partition's owner saves: its open runs and how far it read the inbox."""

    version: int = 1
    inbox_segment: int = 0
    inbox_offset: int = 0
    runs: list[CheckpointRun] = []


# --------------------------------------------------------------------------- run metadata

# NB: metadata keys are case-insensitive in Azure; values are ASCII header text.


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise CorruptionError(f"run metadata does not decode: {exc}") from exc


def started_meta(started: WorkflowStarted) -> dict[str, str]:
    """Segment 0's metadata at creation: the start itself when it fits (else it is event 0)."""
    text = _b64(encode(msgspec.structs.replace(started, index=-1)))
    meta = {"tpp": "1"}
    if len(text) <= _STARTED_META_MAX:
        meta["s"] = text
    return meta


def started_from_meta(meta: dict[str, str]) -> WorkflowStarted | None:
    text = meta.get("s")
    return None if text is None else decode(_unb64(text), WorkflowStarted)


def status_meta(
    meta: dict[str, str], status: Status, close_time: datetime | None
) -> dict[str, str]:
    out = dict(meta)
    if status is Status.RUNNING:
        out.pop("st", None)
        out.pop("ct", None)
    else:
        out["st"] = status.value
        if close_time is not None:
            out["ct"] = close_time.isoformat()
    return out


def meta_status(meta: dict[str, str]) -> Status:
    try:
        return Status(meta.get("st", "RUNNING"))
    except ValueError as exc:
        raise CorruptionError(f"run metadata holds an unknown status: {exc}") from exc


def blocked_meta(
    meta: dict[str, str], not_before: datetime | None, blocked: str | None, at: int
) -> dict[str, str]:
    """Metadata with a worker's backoff and reason, valid for history length ``at``."""
    out = {k: v for k, v in meta.items() if k not in ("nb", "bl", "ba")}
    if not_before is None and blocked is None:
        return out
    out["ba"] = str(at)
    if not_before is not None:
        out["nb"] = not_before.isoformat()
    if blocked is not None:
        raw = blocked.encode("utf-8", "surrogatepass")
        if len(raw) > _BLOCKED_META_MAX:  # metadata holds 8 KiB in all: keep the start
            raw = raw[:_BLOCKED_META_MAX].decode("utf-8", "ignore").encode() + b" [...]"
        out["bl"] = _b64(raw)
    return out


def read_blocked(meta: dict[str, str]) -> tuple[int, datetime | None, str | None] | None:
    """``(history length, not_before, blocked)`` saved by a release, if any."""
    at = meta.get("ba")
    if at is None:
        return None
    try:
        nb = meta.get("nb")
        bl = meta.get("bl")
        return (
            int(at),
            datetime.fromisoformat(nb) if nb else None,
            _unb64(bl).decode("utf-8", "surrogatepass") if bl is not None else None,
        )
    except ValueError as exc:
        raise CorruptionError(f"run metadata holds a bad backoff: {exc}") from exc


def encode_payload_slot(payload: Payload) -> bytes:
    return encode(payload)


def decode_payload_slot(data: bytes) -> Payload:
    return decode(data, Payload)
