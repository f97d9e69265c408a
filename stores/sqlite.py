"""SQLiteStore: the whole store in one SQLite database file, in WAL mode.

Rules (on top of ``stores._protocol``):

* One database file; every change a call makes (events, run summaries, the
  ready index, ownership, heartbeats) commits in **one** ``BEGIN IMMEDIATE``
  transaction, retried while the database is busy.  ``append`` is a group
  commit: all its batches in one transaction (one fsync), each batch in its own
  ``SAVEPOINT``, so it lands whole or not at all, independently of the others.
* What a run *is* (status, due time, id-reuse and decision checks, cross-run
  effects) comes from ``stores._summary`` alone, exactly as in ``MemoryStore``;
  this module keeps the summaries' results in columns, and the summaries in a
  cache brought up to date from the events (below).
* Ownership: ``claim`` holds the owner's ``Liveness`` lock (``<db>.owners/``)
  and writes the owner on its runs.  An owner is alive exactly while its lock
  is held (the protocol's liveness rule: ``lease`` is not consulted); when its
  process dies, however it dies, its runs are claimable at once, as every
  claim and renew first gives a dead owner's runs back.  A claim that finds
  nothing due and no owner dead takes no write lock.
* Ids are data: workflow and run ids, types, queues, owners and ``blocked``
  texts are UTF-8 BLOBs (``surrogatepass``), so any string (NUL, lone
  surrogates) round-trips exactly, and BLOB order (memcmp) is code point order.
  An event or payload holding a lone surrogate (which msgspec will not encode)
  is stored escaped: ``0xC1`` (never a msgpack first byte), then msgpack with
  such strings as extension type 1 holding their ``surrogatepass`` bytes.
* sqlite3 errors leave as engine errors: busy is retried up to ``timeout``,
  damage is ``CorruptionError``, the rest ``WorkflowError`` (``raise ... from``).

Theory of operation.  The schema::

    runs(rk PK, wid, rid, pos, type, queue, parent, start_us, status, close_us,
         length, due_us, not_before_us, blocked, owner, touched)
        UNIQUE(wid, rid), UNIQUE(wid, pos)     -- pos: the run's place in its id's chain
        INDEX runs_ready(queue, due_us, touched) WHERE due_us IS NOT NULL AND owner IS NULL
        INDEX runs_owner(owner) WHERE owner IS NOT NULL
        INDEX runs_list(start_us, wid, rid)
    events(rk, idx, data)         PK(rk, idx)  -- one msgpack-encoded event per row
    heartbeats(rk, seq, details)  PK(rk, seq)  -- msgpack-encoded payloads
    owners(owner PK)                           -- owners that may hold runs: probed

``due_us`` is ``RunSummary.due`` (NULL when closed or waiting on the outside),
so ``claim`` reads only the partial index ``runs_ready``: closed and owned runs
are not in it, and a poll costs the same beside a million closed runs.  Times
are integer microseconds since the epoch, UTC.  Events are msgpack
(``engine.events.encode_event``), not JSON: a third smaller, faster both ways,
read back as one array in one msgspec call, and a database is not greppable
anyway (``tpp`` shows histories to people).

An append needs its run's ``RunSummary``.  The store caches summaries and
checks them against the stored ``length``: events are append-only, so a stale
summary (another process appended) catches up by folding only the events it
missed; ``not_before`` and ``blocked`` come from their columns.  A summary that
a failed batch changed is dropped (its savepoint rolled the rows back) and is
refolded when next needed.

``durability`` sets ``PRAGMA synchronous`` for what records progress (create,
append): ``"fsync"`` FULL (the WAL is fsync'd at every commit: a returned call
survives a process crash and a power loss), ``"flush"`` NORMAL (handed to the
OS at every commit, fsync'd at checkpoints: survives a process crash; a power
loss may lose the last commits, never the database), ``"none"`` OFF (never
fsync'd: survives a process crash; a power loss may corrupt the database).
Claims, renewals, releases and heartbeats need no fsync of their own (after a
power loss every owner is dead anyway, and heartbeat details are a hint): they
commit at NORMAL at most, and the next fsync'd commit makes them durable too.

>>> import pathlib, tempfile
>>> from stores.sqlite import SQLiteStore
>>> with tempfile.TemporaryDirectory() as tmp:
...     with SQLiteStore(pathlib.Path(tmp) / "tpp.db", durability="none") as store:
...         store.list().counts
{}
"""

from __future__ import annotations

import base64
import binascii
import builtins
import contextlib
import functools
import itertools
import os
import pathlib
import random
import sqlite3
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar, overload

import msgspec

from engine._errors import (
    CorruptionError,
    StoreError,
    WorkflowAlreadyStartedError,
    WorkflowError,
    WorkflowNotFoundError,
)
from engine._events import (
    CLOSING_EVENTS,
    ActivityCompleted,
    ActivityFailed,
    Event,
    Link,
    Payload,
    WorkflowStarted,
    WorkflowTerminated,
    decode_event,
    decode_history,
    decode_payload,
    encode_event,
    encode_payload,
    with_index,
)
from engine._info import IdReusePolicy, Status, WorkflowInfo, WorkflowPage

from ._liveness import Liveness
from ._protocol import AppendBatch, AppendResult, Claims, RunRef
from ._summary import (
    RunSummary,
    check_decision,
    check_start,
    child_refused,
    is_repeated_child,
    parent_notice,
)

__all__ = ["Durability", "SQLiteStore"]

Durability = Literal["fsync", "flush", "none"]
_T = TypeVar("_T")

_SYNCHRONOUS: Final[dict[str, str]] = {"fsync": "FULL", "flush": "NORMAL", "none": "OFF"}
_OWNERSHIP_SYNC: Final[dict[str, str]] = {"fsync": "NORMAL", "flush": "NORMAL", "none": "OFF"}
_SCHEMA_VERSION: Final = 1
_BUSY_TIMEOUT: Final = 5.0  # seconds SQLite's own busy handler waits, per attempt
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CORRUPT, _SQLITE_NOTADB = 5, 6, 11, 26
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)

_SCHEMA: Final = (
    """CREATE TABLE runs (
        rk INTEGER PRIMARY KEY, wid BLOB NOT NULL, rid BLOB NOT NULL, pos INTEGER NOT NULL,
        type BLOB NOT NULL, queue BLOB NOT NULL, parent BLOB, start_us INTEGER NOT NULL,
        status TEXT NOT NULL, close_us INTEGER, length INTEGER NOT NULL, due_us INTEGER,
        not_before_us INTEGER, blocked BLOB, owner BLOB, touched INTEGER NOT NULL,
        UNIQUE (wid, rid), UNIQUE (wid, pos))""",
    """CREATE INDEX runs_ready ON runs (queue, due_us, touched)
        WHERE due_us IS NOT NULL AND owner IS NULL""",
    "CREATE INDEX runs_owner ON runs (owner) WHERE owner IS NOT NULL",
    "CREATE INDEX runs_list ON runs (start_us, wid, rid)",
    """CREATE TABLE events (rk INTEGER NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (rk, idx)) WITHOUT ROWID""",
    """CREATE TABLE heartbeats (rk INTEGER NOT NULL, seq INTEGER NOT NULL,
        details BLOB NOT NULL, PRIMARY KEY (rk, seq)) WITHOUT ROWID""",
    "CREATE TABLE owners (owner BLOB PRIMARY KEY) WITHOUT ROWID",
)

_INFO: Final = "wid, rid, type, status, queue, start_us, close_us, length, parent, due_us, blocked"
_ROW: Final = "rk, length, not_before_us, blocked"  # what a cached summary is checked with
_Row = tuple[int, int, int | None, bytes | None]

_link_decoder: Final = msgspec.msgpack.Decoder(Link)
_tree_decoder: Final = msgspec.msgpack.Decoder(
    ext_hook=lambda code, data: bytes(data).decode("utf-8", "surrogatepass")
)
_ESCAPED: Final = b"\xc1"  # never begins msgpack: marks an encoding with lone surrogates
_token_decoder: Final = msgspec.msgpack.Decoder(tuple[int, bytes, bytes])


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _s(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def _us(when: datetime) -> int:
    if when.tzinfo is None:  # NB: a naive time is taken as UTC
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _US


def _time(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def _check_ids(workflow_id: object, run_id: object = "") -> None:
    if not isinstance(workflow_id, str):
        raise TypeError(f"a workflow id must be a string, got {workflow_id!r}")
    if not isinstance(run_id, str):
        raise TypeError(f"a run id must be a string, got {run_id!r}")


def _busy(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


def _encode(value: Any, fast: Callable[[Any], bytes]) -> bytes:
    """``fast(value)``, or for values with lone surrogates (msgspec refuses them) an escape."""
    try:
        return fast(value)
    except UnicodeEncodeError:
        tree = msgspec.to_builtins(value, builtin_types=(bytes, datetime))
        return _ESCAPED + msgspec.msgpack.encode(_escape(tree))


def _escape(tree: Any) -> Any:
    """Strings that are not UTF-8 become msgpack extensions holding their surrogatepass bytes."""
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


def _decode(data: bytes, fast: Callable[[bytes], _T], type_: type[_T] | Any) -> _T:
    try:
        if data[:1] == _ESCAPED:
            return msgspec.convert(_tree_decoder.decode(data[1:]), type_)
        return fast(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptionError(f"stored bytes do not decode: {exc}") from exc


def _decode_events(rows: Sequence[bytes]) -> list[Event]:
    """Decode stored events in one msgspec call, as one msgpack array (array32 header)."""
    data = b"".join([b"\xdd", struct.pack(">I", len(rows)), *rows])
    try:
        return decode_history(data, format="msgpack")
    except (msgspec.DecodeError, msgspec.ValidationError):  # damage, or an escaped event
        return [_decode(row, _decode_one_event, Event) for row in rows]


def _decode_one_event(data: bytes) -> Event:
    return decode_event(data, format="msgpack")


def _encode_event(event: Event) -> bytes:
    return encode_event(event, format="msgpack")


def _info(row: Sequence[Any]) -> WorkflowInfo:
    wid, rid, type_, status, queue, start, close, length, parent, due, blocked = row
    return WorkflowInfo(
        id=_s(wid),
        run_id=_s(rid),
        type=_s(type_),
        status=Status(status),
        task_queue=_s(queue),
        start_time=_EPOCH + timedelta(microseconds=start),
        close_time=_time(close),
        history_length=length,
        parent=None if parent is None else _decode(parent, _link_decoder.decode, Link),
        due=_time(due),
        blocked=None if blocked is None else _s(blocked),
    )


def _columns(summary: RunSummary) -> tuple[object, ...]:
    """What the runs table keeps of a summary: status, close, length, due, not_before, blocked."""
    due = summary.due
    return (
        summary.status.value,
        None if summary.close_time is None else _us(summary.close_time),
        summary.length,
        None if due is None else _us(due),
        None if summary.not_before is None else _us(summary.not_before),
        None if summary.blocked is None else _b(summary.blocked),
    )


def _find(conn: sqlite3.Connection, workflow_id: str, run_id: str | None, cols: str) -> Any:
    """A run's columns (the latest run's when ``run_id`` is None), or ``WorkflowNotFoundError``."""
    wid = _b(workflow_id)
    if run_id is None:
        query = f"SELECT {cols} FROM runs WHERE wid=? ORDER BY pos DESC LIMIT 1"
        row = conn.execute(query, (wid,)).fetchone()
    else:
        query = f"SELECT {cols} FROM runs WHERE wid=? AND rid=?"
        row = conn.execute(query, (wid, _b(run_id))).fetchone()
    if row is not None:
        return row
    if run_id is None or conn.execute("SELECT 1 FROM runs WHERE wid=?", (wid,)).fetchone() is None:
        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
    raise WorkflowNotFoundError(f"workflow {workflow_id!r} has no run {run_id!r}")


def _encode_token(info: WorkflowInfo) -> str:
    key = (_us(info.start_time), _b(info.id), _b(info.run_id))
    return base64.urlsafe_b64encode(msgspec.msgpack.encode(key)).decode()


def _decode_token(token: str) -> tuple[int, bytes, bytes]:
    try:
        return _token_decoder.decode(base64.urlsafe_b64decode(token.encode("ascii")))
    except (binascii.Error, UnicodeEncodeError, msgspec.DecodeError, msgspec.ValidationError):
        raise ValueError(f"invalid page token {token!r}") from None


class _Chain(Sequence[RunSummary]):
    """An id's runs, oldest first, each folded only when looked at (``check_start`` reads one)."""

    def __init__(self, store: SQLiteStore, rows: list[_Row]) -> None:
        self._store = store
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, i: int) -> RunSummary: ...
    @overload
    def __getitem__(self, i: slice) -> list[RunSummary]: ...
    def __getitem__(self, i: int | slice) -> RunSummary | list[RunSummary]:
        if isinstance(i, slice):
            return [self._store._summary(row) for row in self._rows[i]]
        return self._store._summary(self._rows[i])


class SQLiteStore:
    """An event store in one SQLite file (see ``stores._protocol.Store`` and this module).

    ``timeout`` bounds how long a call waits for a busy database before it
    raises ``WorkflowError``; ``cache_size`` is how many run summaries stay cached.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        durability: Durability = "fsync",
        *,
        timeout: float = 60.0,
        cache_size: int = 10_000,
    ) -> None:
        if durability not in _SYNCHRONOUS:
            raise ValueError(f"durability must be 'fsync', 'flush' or 'none', got {durability!r}")
        if str(path) in ("", ":memory:"):
            raise ValueError("SQLiteStore needs a file path (MemoryStore keeps a store in memory)")
        self.path = pathlib.Path(path)
        self.durability = durability
        self._timeout = timeout
        self._cache_size = max(1, cache_size)
        self._cache: OrderedDict[int, RunSummary] = OrderedDict()
        self._txn: dict[int, RunSummary] = {}  # summaries this transaction has looked at
        self._dirty: list[set[int]] = []  # per open transaction and savepoint: runs it changed
        self._savepoints = itertools.count()
        self._wlock = threading.RLock()  # the writer connection and the summaries
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []  # read-only connections not in use
        self._owners: set[str] = set()  # owners whose liveness lock this handle holds
        self._registered: set[str] = set()  # ... and whose row it has written
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sync = _SYNCHRONOUS[durability]  # the writer's PRAGMA synchronous now
        self._conn = self._retrying(lambda: self._connect(query_only=False))
        try:
            self._retrying(self._setup)
        except BaseException:
            self._conn.close()
            raise
        self._liveness = Liveness(pathlib.Path(f"{self.path}.owners"))

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, durability={self.durability!r})"

    # ------------------------------------------------------------------ connections

    def _connect(self, *, query_only: bool) -> sqlite3.Connection:
        busy_timeout = min(_BUSY_TIMEOUT, self._timeout)
        conn = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA synchronous={_SYNCHRONOUS[self.durability]}")
            if query_only:
                conn.execute("PRAGMA query_only=ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _setup(self) -> None:
        conn = self._conn
        if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise StoreError(f"SQLite store {self.path}: cannot switch to WAL mode")
        try:
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            elif version != _SCHEMA_VERSION:
                raise StoreError(
                    f"SQLite store {self.path} has schema version {version}; this version of "
                    f"Temporal++ reads version {_SCHEMA_VERSION}"
                )
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this SQLiteStore is closed")

    def _translate(self, exc: sqlite3.Error) -> Exception:
        if self._closed:
            return RuntimeError("this SQLiteStore is closed")
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return CorruptionError(f"SQLite store {self.path} is damaged: {exc}")
        if _busy(exc):
            return StoreError(f"SQLite store {self.path} stayed busy for {self._timeout} s")
        # NB: the error tree has no store-failure error (disk full, I/O error) yet
        return StoreError(f"SQLite store {self.path} failed: {exc}")

    def _retrying(self, attempt: Callable[[], _T]) -> _T:
        """``attempt()``, again while the database is busy, for up to ``timeout`` seconds."""
        deadline = time.monotonic() + self._timeout
        delay = 0.001
        while True:
            try:
                return attempt()
            except sqlite3.Error as exc:
                if _busy(exc) and not self._closed and time.monotonic() < deadline:
                    time.sleep(random.uniform(0, delay))
                    delay = min(2 * delay, 0.05)
                    continue
                raise self._translate(exc) from exc

    def _read(self, fn: Callable[[sqlite3.Connection], _T], *, snapshot: bool = False) -> _T:
        """``fn(conn)`` on a read-only connection; ``snapshot``: in one read transaction."""

        def attempt() -> _T:
            with self._pool_lock:
                self._check_open()
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._connect(query_only=True)
            try:
                if snapshot:
                    conn.execute("BEGIN")
                return fn(conn)
            finally:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("COMMIT")
                with self._pool_lock:
                    if not self._closed:
                        self._idle.append(conn)
                        conn = None
                if conn is not None:  # the store closed meanwhile
                    conn.close()

        return self._retrying(attempt)

    def _write(self, fn: Callable[[], _T], *, progress: bool = True) -> _T:
        """``fn()`` in one write transaction; the summaries it looked at are cached on commit.

        ``progress=False`` (claims, releases, heartbeats) commits without an fsync.
        """
        with self._wlock:
            self._check_open()
            sync = _SYNCHRONOUS[self.durability] if progress else _OWNERSHIP_SYNC[self.durability]
            return self._retrying(lambda: self._transaction(fn, sync))

    def _transaction(self, fn: Callable[[], _T], sync: str) -> _T:
        conn = self._conn
        if sync != self._sync:
            conn.execute(f"PRAGMA synchronous={sync}")
            self._sync = sync
        self._txn, self._dirty = {}, [set()]
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = fn()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            for rk, summary in self._txn.items():  # the unchanged ones are still good
                if rk not in self._dirty[0]:
                    self._cache[rk] = summary
            raise
        finally:
            txn, self._txn, self._dirty = self._txn, {}, []
        self._cache.update(txn)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    def _savepoint(self, fn: Callable[[], _T]) -> _T:
        """``fn()``, so that a ``WorkflowError`` from it leaves nothing behind."""
        conn = self._conn
        name = f"b{next(self._savepoints)}"
        conn.execute(f"SAVEPOINT {name}")
        self._dirty.append(set())
        try:
            result = fn()
        except WorkflowError:
            conn.execute(f"ROLLBACK TO {name}")
            conn.execute(f"RELEASE {name}")
            for rk in self._dirty.pop():
                self._txn.pop(rk, None)  # refolded from the rolled-back rows when needed
            raise
        conn.execute(f"RELEASE {name}")
        changed = self._dirty.pop()
        self._dirty[-1] |= changed
        return result

    # ------------------------------------------------------------------ runs and summaries

    def _summary(self, row: _Row) -> RunSummary:
        """The run's summary, brought up to date with its stored events and columns."""
        rk, length, not_before, blocked = row
        summary = self._txn.get(rk)
        if summary is not None:
            return summary
        summary = self._cache.pop(rk, None)
        if summary is None or summary.length > length:
            summary = RunSummary.fold(self._events(rk, 0))
        elif summary.length < length:
            summary.apply(self._events(rk, summary.length))  # another handle appended
        if summary.length != length:
            raise CorruptionError(f"run {rk} has {summary.length} events, its row says {length}")
        summary.not_before = _time(not_before)
        summary.blocked = None if blocked is None else _s(blocked)
        self._txn[rk] = summary
        return summary

    def _events(self, rk: int, after: int) -> list[Event]:
        query = "SELECT data FROM events WHERE rk=? AND idx>=? ORDER BY idx"
        return _decode_events([row[0] for row in self._conn.execute(query, (rk, after))])

    def _save(self, rk: int, summary: RunSummary) -> None:
        self._dirty[-1].add(rk)
        self._conn.execute(
            "UPDATE runs SET status=?, close_us=?, length=?, due_us=?, not_before_us=?, "
            "blocked=?, touched=? WHERE rk=?",
            (*_columns(summary), time.time_ns(), rk),
        )

    def _last(self, workflow_id: str) -> _Row | None:
        query = f"SELECT {_ROW} FROM runs WHERE wid=? ORDER BY pos DESC LIMIT 1"
        return self._conn.execute(query, (_b(workflow_id),)).fetchone()  # type: ignore[no-any-return]

    def _chain(self, workflow_id: str) -> _Chain:
        query = f"SELECT {_ROW} FROM runs WHERE wid=? ORDER BY pos"
        return _Chain(self, self._conn.execute(query, (_b(workflow_id),)).fetchall())

    def _exists(self, workflow_id: str, run_id: str) -> bool:
        query = "SELECT 1 FROM runs WHERE wid=? AND rid=?"
        return self._conn.execute(query, (_b(workflow_id), _b(run_id))).fetchone() is not None

    def _create(self, started: WorkflowStarted) -> None:
        wid, rid = started.workflow_id, started.run_id
        if self._exists(wid, rid):
            raise WorkflowAlreadyStartedError(f"workflow {wid!r} already has a run {rid!r}")
        last = self._conn.execute("SELECT MAX(pos) FROM runs WHERE wid=?", (_b(wid),)).fetchone()
        summary = RunSummary(started)
        parent = None if started.parent is None else _encode(started.parent, msgspec.msgpack.encode)
        cursor = self._conn.execute(
            "INSERT INTO runs (wid, rid, pos, type, queue, parent, start_us, status, close_us, "
            "length, due_us, not_before_us, blocked, touched) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                _b(wid),
                _b(rid),
                0 if last[0] is None else last[0] + 1,
                _b(started.workflow_type),
                _b(started.task_queue),
                parent,
                _us(started.time),
                *_columns(summary),
                time.time_ns(),
            ),
        )
        rk = cursor.lastrowid
        assert rk is not None
        self._conn.execute(
            "INSERT INTO events (rk, idx, data) VALUES (?, 0, ?)",
            (rk, _encode(with_index(started, 0), _encode_event)),
        )
        self._txn[rk] = summary
        self._dirty[-1].add(rk)

    def _append_one(self, batch: AppendBatch) -> int:
        row = _find(self._conn, batch.workflow_id, batch.run_id, _ROW)
        rk = row[0]
        summary = self._summary(row)
        expected = batch.expected_length
        tail: list[Event] = []
        if expected is not None and 0 <= expected < summary.length:
            tail = self._events(rk, expected)
        check_decision(summary, batch.events, tail, expected)
        self._check_starts(batch, rk)
        index = summary.length
        stamped = [with_index(ev, index + i) for i, ev in enumerate(batch.events)]
        self._dirty[-1].add(rk)
        self._conn.executemany(
            "INSERT INTO events (rk, idx, data) VALUES (?, ?, ?)",
            [(rk, ev.index, _encode(ev, _encode_event)) for ev in stamped],
        )
        summary.apply(stamped)
        outcomes = (ActivityCompleted, ActivityFailed)
        done = [(rk, ev.seq) for ev in stamped if isinstance(ev, outcomes)]
        if done:
            self._conn.executemany("DELETE FROM heartbeats WHERE rk=? AND seq=?", done)
        for started in batch.starts:
            self._start_from(started)
        if not summary.running:
            self._conn.execute("DELETE FROM heartbeats WHERE rk=?", (rk,))
            notice = parent_notice(summary)
            if notice is not None:
                self._external(*notice)
        self._save(rk, summary)
        return index

    def _check_starts(self, batch: AppendBatch, rk: int) -> None:
        """Refuse, before anything lands, a batch whose parentless starts cannot happen.

        A refused child start is its parent's news (``ChildWorkflowFailed``), but a
        continue-as-new that cannot start must fail its batch whole.
        """
        closes = any(type(ev) in CLOSING_EVENTS for ev in batch.events)
        for started in batch.starts:
            if started.parent is not None:
                continue
            wid = started.workflow_id
            if self._exists(wid, started.run_id):
                raise WorkflowAlreadyStartedError(
                    f"workflow {wid!r} already has a run {started.run_id!r}"
                )
            last = self._last(wid)
            if last is None:
                continue
            summary = self._summary(last)
            if summary.running and not (last[0] == rk and closes):
                raise WorkflowAlreadyStartedError(
                    f"workflow {wid!r} is already running (run {summary.started.run_id})"
                )

    def _start_from(self, started: WorkflowStarted) -> None:
        """A run started by a batch: a child (idempotent by parent link) or a continuation."""
        runs = self._chain(started.workflow_id)
        if is_repeated_child(started, runs):
            return  # this child exists already (a retried decision)
        try:
            check_start(started, runs, IdReusePolicy.ALLOW_DUPLICATE)
            self._create(started)
        except WorkflowAlreadyStartedError as exc:
            if started.parent is None:
                raise
            self._external(*child_refused(started, exc))

    def _external(self, workflow_id: str, run_id: str, event: Event) -> None:
        """A store-made event (child outcome, refusal) for a run that may have closed."""
        batch = AppendBatch(workflow_id=workflow_id, run_id=run_id, events=[event])
        # the parent may be gone or closed: then nobody waits for this any more
        with contextlib.suppress(WorkflowError):
            self._savepoint(functools.partial(self._append_one, batch))

    def _reap(self) -> None:
        """Give back the runs of dead owners: those whose liveness lock nobody holds."""
        conn = self._conn
        for (owner,) in conn.execute("SELECT owner FROM owners").fetchall():
            if not self._liveness.alive(_s(owner)):
                conn.execute(
                    "UPDATE runs SET owner=NULL, touched=? WHERE owner=?", (time.time_ns(), owner)
                )
                conn.execute("DELETE FROM owners WHERE owner=?", (owner,))

    def _hold(self, owner: str) -> None:
        for attempt in range(20):
            try:
                self._liveness.hold(owner)
            except RuntimeError:  # NB: also while another process probes the lock, briefly
                if attempt == 19:
                    raise
                time.sleep(0.005)
            else:
                self._owners.add(owner)
                return

    # ------------------------------------------------------------------ protocol

    def create(
        self,
        started: WorkflowStarted,
        *,
        id_reuse: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE,
    ) -> None:
        self._check_open()
        if not isinstance(started, WorkflowStarted):
            raise TypeError(f"create() needs a WorkflowStarted event, got {started!r}")
        _check_ids(started.workflow_id, started.run_id)

        def txn() -> None:
            wid, rid = started.workflow_id, started.run_id
            if self._exists(wid, rid):
                # before TERMINATE_IF_RUNNING acts: a refused start changes nothing
                raise WorkflowAlreadyStartedError(f"workflow {wid!r} already has a run {rid!r}")
            running = check_start(started, self._chain(wid), id_reuse)
            if running is not None:
                reason = f"terminated by a new start ({rid}) with TERMINATE_IF_RUNNING"
                terminated = WorkflowTerminated(time=started.time, reason=reason)
                old = running.started.run_id
                self._append_one(AppendBatch(workflow_id=wid, run_id=old, events=[terminated]))
                assert not running.running
            self._create(started)

        self._write(txn)

    def append(self, batches: Sequence[AppendBatch]) -> list[AppendResult]:
        for batch in batches:  # bad input refuses the whole call before anything lands
            _check_ids(batch.workflow_id, batch.run_id)
        self._check_open()
        if not batches:
            return []

        def txn() -> list[AppendResult]:
            results: list[AppendResult] = []
            for batch in batches:
                try:
                    index = self._savepoint(functools.partial(self._append_one, batch))
                except WorkflowError as exc:
                    results.append(AppendResult(error=exc))
                else:
                    results.append(AppendResult(index=index))
            return results

        return self._write(txn)

    def read(self, workflow_id: str, run_id: str | None = None, after: int = 0) -> list[Event]:
        _check_ids(workflow_id, "" if run_id is None else run_id)
        wid = _b(workflow_id)
        if run_id is None:
            which, params = "r.pos=(SELECT MAX(pos) FROM runs WHERE wid=?)", (wid, wid)
        else:
            which, params = "r.rid=?", (wid, _b(run_id))
        # one statement (UNIQUE (wid, ...) makes r one row, so events come in key order):
        # a row per event, or one (rk, NULL) row for none, or no row for an unknown run
        query = (
            "SELECT r.rk, e.data FROM runs r LEFT JOIN events e ON e.rk=r.rk AND e.idx>=? "
            f"WHERE r.wid=? AND {which} ORDER BY e.idx"
        )

        def fn(conn: sqlite3.Connection) -> list[Event]:
            start = after
            if after < 0:  # from the end, as a list slice would
                start = max(0, _find(conn, workflow_id, run_id, "length")[0] + after)
            rows = conn.execute(query, (start, *params)).fetchall()
            if not rows:
                _find(conn, workflow_id, run_id, "rk")  # raises not found
            if rows[0][1] is None:
                return []
            return _decode_events([data for _, data in rows])

        return self._read(fn)

    def describe(self, workflow_id: str, run_id: str | None = None) -> WorkflowInfo:
        _check_ids(workflow_id, "" if run_id is None else run_id)
        return self._read(lambda conn: _info(_find(conn, workflow_id, run_id, _INFO)))

    def list(
        self,
        *,
        status: Status | None = None,
        type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> WorkflowPage:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        after = _decode_token(page_token) if page_token else None
        where: builtins.list[str] = ["1"]
        params: builtins.list[object] = []
        for clause, value in (
            ("type=?", None if type is None else _b(type)),
            ("start_us>=?", None if since is None else _us(since)),
            ("start_us<?", None if until is None else _us(until)),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        filters = " AND ".join(where)
        if status is not None:
            where.append("status=?")
            params.append(status.value)
        if after is not None:  # a keyset, not an offset: runs started since never shift pages
            where.append("(start_us, wid, rid) < (?, ?, ?)")
            params.extend(after)
        count_params = params[: filters.count("?")]

        def fn(conn: sqlite3.Connection) -> WorkflowPage:
            query = f"SELECT status, COUNT(*) FROM runs WHERE {filters} GROUP BY status"
            counts = {Status(s): n for s, n in conn.execute(query, count_params).fetchall()}
            rows = conn.execute(
                f"SELECT {_INFO} FROM runs WHERE {' AND '.join(where)} "
                "ORDER BY start_us DESC, wid DESC, rid DESC LIMIT ?",
                (*params, page_size + 1),
            ).fetchall()
            page = [_info(row) for row in rows[:page_size]]
            token = _encode_token(page[-1]) if len(rows) > page_size else None
            return WorkflowPage(items=page, next_page_token=token, counts=counts)

        return self._read(fn, snapshot=True)

    def runs(self) -> Iterator[WorkflowInfo]:
        self._check_open()
        return self._iter_runs()

    def _iter_runs(self) -> Iterator[WorkflowInfo]:
        def page(after: int, conn: sqlite3.Connection) -> builtins.list[Any]:
            query = f"SELECT {_INFO}, rk FROM runs WHERE rk>? ORDER BY rk LIMIT 1000"
            return conn.execute(query, (after,)).fetchall()

        after = 0
        while rows := self._read(functools.partial(page, after)):
            for row in rows:
                yield _info(row[:-1])
            after = rows[-1][-1]

    def claim(
        self,
        owner: str,
        *,
        now: datetime,
        task_queues: Sequence[str] = ("default",),
        limit: int = 64,
        lease: float = 30.0,
    ) -> Claims:
        self._check_open()
        self._hold(owner)
        me, now_us = _b(owner), _us(now)
        if owner in self._registered:  # nothing to claim or reap: no write lock taken
            idle = self._read(lambda conn: self._idle_claim(conn, task_queues, limit, now_us))
            if idle is not None:
                return idle

        def txn() -> Claims:
            conn = self._conn
            self._reap()
            conn.execute("INSERT OR IGNORE INTO owners (owner) VALUES (?)", (me,))
            got: builtins.list[RunRef] = []
            next_due: int | None = None
            for queue in task_queues:
                rows = conn.execute(
                    "SELECT rk, wid, rid, due_us FROM runs WHERE queue=? AND owner IS NULL "
                    "AND due_us IS NOT NULL ORDER BY due_us, touched LIMIT ?",
                    (_b(queue), max(0, limit - len(got)) + 1),
                ).fetchall()
                for rk, wid, rid, due in rows:
                    if due > now_us or len(got) >= limit:
                        next_due = due if next_due is None else min(next_due, due)
                        break
                    conn.execute("UPDATE runs SET owner=? WHERE rk=?", (me, rk))
                    got.append(RunRef(workflow_id=_s(wid), run_id=_s(rid)))
            return Claims(runs=got, next_due=_time(next_due))

        claims = self._write(txn, progress=False)
        self._registered.add(owner)
        return claims

    def _idle_claim(
        self, conn: sqlite3.Connection, task_queues: Sequence[str], limit: int, now_us: int
    ) -> Claims | None:
        """What ``claim`` returns when no owner died and nothing is due; else None."""
        for (owner,) in conn.execute("SELECT owner FROM owners").fetchall():
            if not self._liveness.alive(_s(owner)):
                return None
        next_due: int | None = None
        for queue in task_queues:
            row = conn.execute(
                "SELECT due_us FROM runs WHERE queue=? AND owner IS NULL "
                "AND due_us IS NOT NULL ORDER BY due_us, touched LIMIT 1",
                (_b(queue),),
            ).fetchone()
            if row is None:
                continue
            if row[0] <= now_us and limit > 0:
                return None
            next_due = row[0] if next_due is None else min(next_due, row[0])
        return Claims(runs=[], next_due=_time(next_due))

    def renew(self, owner: str, *, lease: float = 30.0) -> builtins.list[RunRef]:
        me = _b(owner)

        def txn() -> builtins.list[RunRef]:
            conn = self._conn
            self._reap()
            if conn.execute("SELECT 1 FROM owners WHERE owner=?", (me,)).fetchone() is None:
                return []  # dead (or never claimed): its runs went back
            rows = conn.execute("SELECT wid, rid FROM runs WHERE owner=? ORDER BY rk", (me,))
            return [RunRef(workflow_id=_s(w), run_id=_s(r)) for w, r in rows.fetchall()]

        return self._write(txn, progress=False)

    def release(
        self,
        owner: str,
        run: RunRef,
        *,
        not_before: datetime | None = None,
        blocked: str | None = None,
    ) -> None:
        _check_ids(run.workflow_id, run.run_id)

        key = (_b(run.workflow_id), _b(run.run_id), _b(owner))

        def txn() -> None:
            conn = self._conn
            if not_before is None and blocked is None:
                # NB: the stored due time is the summary's with the stored not_before;
                # when neither backoff nor blocked changes, neither does the due time
                released = conn.execute(
                    "UPDATE runs SET owner=NULL, touched=? WHERE wid=? AND rid=? AND owner=? "
                    "AND not_before_us IS NULL AND blocked IS NULL",
                    (time.time_ns(), *key),
                )
                if released.rowcount:
                    return
            query = f"SELECT {_ROW} FROM runs WHERE wid=? AND rid=? AND owner=?"
            row = conn.execute(query, key).fetchone()
            if row is None:
                return  # unknown, or not the owner's to give
            summary = self._summary(row)
            summary.not_before = not_before
            summary.blocked = blocked
            self._save(row[0], summary)
            conn.execute("UPDATE runs SET owner=NULL WHERE rk=?", (row[0],))

        self._write(txn, progress=False)

    def heartbeat(self, run: RunRef, seq: int, details: Payload | None = None) -> Payload | None:
        _check_ids(run.workflow_id, run.run_id)
        query = "SELECT details FROM heartbeats WHERE rk=? AND seq=?"

        def stored(conn: sqlite3.Connection, rk: int) -> Payload | None:
            row = conn.execute(query, (rk, seq)).fetchone()
            return None if row is None else _decode(row[0], decode_payload, Payload)

        if details is None:

            def read(conn: sqlite3.Connection) -> Payload | None:
                row = conn.execute(
                    "SELECT h.details FROM runs r LEFT JOIN heartbeats h ON h.rk=r.rk AND h.seq=? "
                    "WHERE r.wid=? AND r.rid=?",
                    (seq, _b(run.workflow_id), _b(run.run_id)),
                ).fetchone()
                if row is None:
                    _find(conn, run.workflow_id, run.run_id, "rk")  # raises not found
                return None if row[0] is None else _decode(row[0], decode_payload, Payload)

            return self._read(read)
        data = _encode(details, encode_payload)

        def txn() -> Payload | None:
            row = _find(self._conn, run.workflow_id, run.run_id, _ROW)
            if seq in self._summary(row).activities:  # only a pending activity has a slot
                self._conn.execute(
                    "INSERT OR REPLACE INTO heartbeats (rk, seq, details) VALUES (?, ?, ?)",
                    (row[0], seq, data),
                )
            return stored(self._conn, row[0])

        return self._write(txn, progress=False)

    def close(self) -> None:
        with self._wlock:
            if self._closed:
                return
            if self._owners:  # this handle's owners die with it: give their runs back now
                with contextlib.suppress(WorkflowError):
                    self._write(self._drop_owners, progress=False)
            with self._pool_lock:
                self._closed = True
                idle, self._idle = self._idle, []
            for conn in idle:  # a reader in use is closed when it comes back
                conn.close()
            self._conn.close()
            self._liveness.close()

    def _drop_owners(self) -> None:
        for owner in sorted(self._owners):
            self._conn.execute("UPDATE runs SET owner=NULL WHERE owner=?", (_b(owner),))
            self._conn.execute("DELETE FROM owners WHERE owner=?", (_b(owner),))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
