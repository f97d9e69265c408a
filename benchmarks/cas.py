"""CAS throughput, the payload codec chain, and its cost per small payload.

``python -m benchmarks.cas [--quick] [--repeat N] [--results-dir DIR]``

Sizes are binary (1 KB = 1,024 bytes); throughput is in MB/s of 10^6 bytes.
``--quick`` keeps only 1 KB and 64 KB, and few objects.

1. **CAS** (``MemoryCAS``; ``FileCAS`` at ``fsync`` and ``none`` in a temporary
   directory): ``put`` of fresh content (distinct random bytes per put, made
   before the clock starts, into a fresh CAS each repetition), ``get`` of stored
   content (every get rehashes with sha256; a ``FileCAS`` reads from a warm page
   cache), and a dedup ``put`` of content already stored (hash, then only a
   refreshed time).
2. **Codec chain**: ``PayloadCodec.seal`` then ``open`` (the other order is
   impossible) of plain JSON payloads of those sizes, for plain, zstd, AES-GCM,
   both, both with per-workflow data keys, and CAS offload (above the default
   64 KiB) to a ``MemoryCAS`` and a ``FileCAS``.  The content is JSON order
   records (ids, hex references, SKUs, amounts, dates from a seeded
   ``random.Random``): semi-compressible, like real results.  Each sealed
   payload is a distinct variant, so a CAS put is never a dedup.  "ratio" is
   the stored size (the CAS blob when offloaded) over the plain encoding.
3. **Small payloads** (``{"cents": 999}``), in microseconds: ``JsonCodec``
   encode + decode alone, then with the worker's store boundary
   (``Payloads.seal`` + ``open``) around it; the difference is the added cost
   per payload, against a goal of at most 2 us.  Then ``seal_events`` +
   ``open_events`` over a 10-event history, per event.

Every figure is the median over ``--repeat`` repetitions (min and max in the
JSON); small operations are timed in batches and divided.
"""

from __future__ import annotations

import gc
import os
import pathlib
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

import cas
from engine import JsonCodec, Keyring, MemoryKeyVault, PayloadCodec
from engine._payloads import Payloads
from engine.events import (
    ActivityCompleted,
    ActivityScheduled,
    CasRef,
    CommandRecord,
    Event,
    Json,
    Payload,
    SignalReceived,
    TimerFired,
    TimerStarted,
    WorkflowCompleted,
    WorkflowStarted,
    WorkflowTaskCompleted,
    encode_payload,
)

from . import _common as c

KB = 1024
SIZES = {"1 KB": KB, "64 KB": 64 * KB, "1 MB": KB * KB, "16 MB": 16 * KB * KB}
QUICK_SIZES = ("1 KB", "64 KB")
GOAL_US = 2.0  # added cost of the store boundary per small payload
SMALL = {"cents": 999}
T0 = datetime(2026, 1, 1, tzinfo=UTC)
WF = "wf-1"

Factory = Callable[[pathlib.Path], cas.CAS]


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def count(size: int, budget: int, lo: int, hi: int) -> int:
    """Objects per repetition: about ``budget`` bytes, within [lo, hi]."""
    return max(lo, min(hi, budget // size))


# ---------------------------------------------------------------------------- 1. CAS


def cas_backends() -> list[tuple[str, Factory]]:
    return [
        ("memory", lambda _d: cas.MemoryCAS()),
        ("file fsync", lambda d: cas.FileCAS(d, durability="fsync")),
        ("file none", lambda d: cas.FileCAS(d, durability="none")),
    ]


def bench_cas(
    factory: Factory, size: int, n: int, repeat: int, tmp: pathlib.Path
) -> dict[str, list[float]]:
    """MB/s per repetition of put (fresh), get and dedup put of ``n`` objects of ``size``."""
    made: list[tuple[cas.CAS, pathlib.Path]] = []

    def setup() -> tuple[cas.CAS, list[bytes]]:
        for old, where in made:  # each repetition starts from an empty CAS
            old.close()
            shutil.rmtree(where, ignore_errors=True)
        made.clear()
        where = tmp / f"cas-{time.perf_counter_ns()}"
        store = factory(where)
        made.append((store, where))
        return store, [os.urandom(size) for _ in range(n)]

    def put_all(state: tuple[cas.CAS, list[bytes]]) -> None:
        put = state[0].put
        for blob in state[1]:
            put(blob)

    total = size * n
    puts = [mbps(total, t) for t in c.measure_with_setup(setup, put_all, repeat + 1)[1:]]
    store, blobs = setup()
    digests = [store.put(b) for b in blobs]

    def get_all() -> None:
        get = store.get
        for d in digests:
            get(d)

    gets = [mbps(total, t) for t in c.measure(get_all, repeat)]
    dedups = [mbps(total, t) for t in c.measure(lambda: put_all((store, blobs)), repeat)]
    assert store.get(digests[-1]) == blobs[-1]
    setup()  # closes and removes the last one
    return {"put": puts, "get": gets, "dedup put": dedups}


# ---------------------------------------------------------------------------- 2. codec chain


def records_text(size: int) -> str:
    """A JSON list of order records of about ``size`` bytes (seeded, so every run agrees)."""
    rng = random.Random(size)
    skus = [f"SKU-{rng.getrandbits(24):06X}" for _ in range(200)]
    statuses = ("paid", "pending", "refunded", "shipped")
    encode = msgspec.json.encode
    parts: list[bytes] = []
    length = 2
    i = 0
    while length < size - 48:
        day = T0 + timedelta(seconds=rng.randrange(86400 * 365))
        part = encode(
            {
                "id": i,
                "order": f"ord-{rng.getrandbits(48):012x}",
                "customer": f"cus-{rng.getrandbits(24):06x}",
                "sku": rng.choice(skus),
                "qty": rng.randint(1, 9),
                "cents": rng.randint(100, 99_999),
                "currency": rng.choice(("EUR", "USD", "GBP")),
                "status": rng.choice(statuses),
                "created": day.isoformat(),
            }
        )
        parts.append(part)
        length += len(part) + 1
        i += 1
    return "[" + b",".join(parts).decode() + "]"


def chain_configs(tmp: pathlib.Path) -> list[tuple[str, PayloadCodec, cas.CAS | None]]:
    ring = Keyring({"k": Keyring.generate()})
    file_cas = cas.FileCAS(tmp / "codec-cas", durability="fsync")
    both = PayloadCodec(compression="zstd", keys=ring)
    return [
        ("plain", PayloadCodec(), None),
        ("zstd", PayloadCodec(compression="zstd"), None),
        ("aes-gcm", PayloadCodec(keys=ring), None),
        ("zstd + aes-gcm", both, None),
        (
            "zstd + aes + data keys",
            PayloadCodec(compression="zstd", keys=ring, data_keys=MemoryKeyVault()),
            None,
        ),
        ("offload memory", PayloadCodec(), cas.MemoryCAS()),
        ("offload file fsync", PayloadCodec(), file_cas),
        ("zstd + aes + offload file", both, file_cas),
    ]


def stored_size(sealed: Payload) -> int:
    return sealed.size if isinstance(sealed, CasRef) else len(encode_payload(sealed))


def bench_chain(
    codec: PayloadCodec, store: cas.CAS | None, text: str, n: int, repeat: int
) -> dict[str, Any]:
    """Seal, open and seal+open MB/s per repetition of ``n`` distinct variants of ``text``."""
    seals, opens, both = [], [], []
    sealed: list[Payload] = []
    for rep in range(repeat + 1):  # the first is a warm-up
        # distinct content of one size: a different first element in the list
        plains = [Json(text=f'["v{rep:03d}-{i:06d}",' + text[1:]) for i in range(n)]
        gc.collect()
        t0 = time.perf_counter()
        sealed = [codec.seal(p, WF, store) for p in plains]
        t1 = time.perf_counter()
        opened = [codec.open(s, store) for s in sealed]
        t2 = time.perf_counter()
        assert opened == plains
        plain_bytes = len(encode_payload(plains[0]))
        if rep:
            total = n * plain_bytes
            seals.append(mbps(total, t1 - t0))
            opens.append(mbps(total, t2 - t1))
            both.append(mbps(total, t2 - t0))
    stored = stored_size(sealed[0])
    return {
        "seal": seals,
        "open": opens,
        "seal+open": both,
        "plain_bytes": plain_bytes,
        "stored_bytes": stored,
        "ratio": stored / plain_bytes,
        "offloaded": isinstance(sealed[0], CasRef),
    }


# ---------------------------------------------------------------------------- 3. small payloads


def history() -> list[Event]:
    """A 10-event run of a workflow with two activities, a timer and a signal."""
    small = JsonCodec().encode
    return [
        WorkflowStarted(
            time=T0, workflow_type="charge", workflow_id=WF, run_id="r1", input=small(SMALL)
        ),
        WorkflowTaskCompleted(
            time=T0, seen=1, batch_id="b1", commands=(CommandRecord(1, "activity", "charge"),)
        ),
        ActivityScheduled(
            time=T0, seq=1, activity_type="charge", args=small([SMALL]), args_digest=1
        ),
        ActivityCompleted(time=T0, seq=1, result=small({"charge_id": "ch_1", "cents": 999})),
        TimerStarted(time=T0, seq=2, duration=timedelta(hours=1), fire_at=T0),
        TimerFired(time=T0, seq=2),
        SignalReceived(time=T0, name="approve", payload=small({"by": "ops"}), request_id="s1"),
        ActivityScheduled(
            time=T0, seq=3, activity_type="receipt", args=small(["ch_1"]), args_digest=2
        ),
        ActivityCompleted(time=T0, seq=3, result=small(None)),
        WorkflowCompleted(time=T0, result=small({"ok": True})),
    ]


def paired_us(runs: Sequence[Callable[[], Any]], ops: int, repeat: int) -> list[list[float]]:
    """Microseconds per operation of each run, all timed in every repetition.

    Timing the baseline and its variants back to back (after a warm-up round)
    makes their per-repetition differences immune to drift in clock speed.
    """
    out: list[list[float]] = [[] for _ in runs]
    for rep in range(repeat + 1):
        for samples, run in zip(out, runs, strict=True):
            gc.collect()
            t0 = time.perf_counter()
            run()
            elapsed = time.perf_counter() - t0
            if rep:
                samples.append(1e6 * elapsed / ops)
    return out


def bench_small(n: int, repeat: int) -> list[tuple[str, str, list[float], dict[str, Any]]]:
    """(name, unit, samples, extra) rows for the small-payload costs."""
    codec = JsonCodec()
    enc, dec = codec.encode, codec.decode
    ring = Keyring({"k": Keyring.generate()})
    boundaries = [
        ("cas None", Payloads(PayloadCodec(), None)),
        ("cas MemoryCAS", Payloads(PayloadCodec(), cas.MemoryCAS())),
        ("zstd (below compress_above)", Payloads(PayloadCodec(compression="zstd"), None)),
        ("aes-gcm", Payloads(PayloadCodec(keys=ring), None)),
    ]
    items = range(n)

    def baseline() -> None:
        for _ in items:
            dec(enc(SMALL))

    def with_boundary(payloads: Payloads) -> Callable[[], None]:
        seal, open_ = payloads.seal, payloads.open
        assert dec(open_(seal(enc(SMALL), WF))) == SMALL

        def run() -> None:
            for _ in items:
                dec(open_(seal(enc(SMALL), WF)))

        return run

    base, *fulls = paired_us([baseline, *(with_boundary(b) for _, b in boundaries)], n, repeat)
    rows: list[tuple[str, str, list[float], dict[str, Any]]] = [
        ("small: JsonCodec encode + decode", "us/payload", base, {})
    ]
    for (label, _), full in zip(boundaries, fulls, strict=True):
        added = [b - a for a, b in zip(base, full, strict=True)]
        # NB: the goal holds when no offload, compression or encryption applies
        goal = (
            {}
            if "aes" in label
            else {"goal_us": GOAL_US, "met": statistics.median(added) <= GOAL_US}
        )
        rows.append((f"small: + seal + open, {label}", "us/payload", full, {}))
        rows.append((f"small: added, {label}", "us/payload", added, goal))
    events = history()
    rounds = max(1, n // len(events))

    def round_trip(payloads: Payloads) -> Callable[[], None]:
        assert payloads.open_events(payloads.seal_events(events, WF)) == events

        def run() -> None:
            for _ in range(rounds):
                payloads.open_events(payloads.seal_events(events, WF))

        return run

    per_event = paired_us([round_trip(b) for _, b in boundaries], rounds * len(events), repeat)
    for (label, _), us in zip(boundaries, per_event, strict=True):
        rows.append((f"events: seal_events + open_events, {label}", "us/event", us, {}))
    return rows


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    p = c.parser("CAS put/get throughput, the payload codec chain, small-payload overhead.")
    args = p.parse_args(argv)
    repeat = max(5, args.repeat)
    sizes = {k: v for k, v in SIZES.items() if not args.quick or k in QUICK_SIZES}
    cas_budget, cas_max = (64 * KB, 16) if args.quick else (16 * KB * KB, 500)
    chain_budget, chain_max = (64 * KB, 8) if args.quick else (8 * KB * KB, 500)
    small_n = 2_000 if args.quick else 50_000
    results: list[dict[str, Any]] = []
    params: dict[str, Any] = {
        "quick": args.quick,
        "repeat": repeat,
        "sizes": sizes,
        "cas_objects": {k: count(v, cas_budget, 3, cas_max) for k, v in sizes.items()},
        "chain_payloads": {k: count(v, chain_budget, 2, chain_max) for k, v in sizes.items()},
        "small_batch": small_n,
        "small_payload": SMALL,
        "goal_added_us": GOAL_US,
        "content": "JSON order records (seeded random ids, SKUs, amounts, dates)",
    }
    cas_rows, chain_rows, small_rows = [], [], []
    with tempfile.TemporaryDirectory(prefix="tpp-bench-cas-") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        for label, factory in cas_backends():
            for size_label, size in sizes.items():
                n = params["cas_objects"][size_label]
                got = bench_cas(factory, size, n, repeat, tmp)
                row = [label, size_label]
                for what, values in got.items():
                    name = f"cas {label}: {what} {size_label}"
                    results.append(c.summary(name, "MB/s", values, size=size, objects=n))
                    row.append(c.fmt(statistics.median(values)))
                cas_rows.append(row)
            print(f"  cas {label} done", flush=True)
        texts = {k: records_text(v) for k, v in sizes.items()}
        configs = chain_configs(tmp)
        for label, codec, store in configs:
            for size_label, text in texts.items():
                n = params["chain_payloads"][size_label]
                got = bench_chain(codec, store, text, n, repeat)
                extra = {k: got[k] for k in ("plain_bytes", "stored_bytes", "ratio", "offloaded")}
                row = [label, size_label]
                for what in ("seal", "open", "seal+open"):
                    name = f"codec {label}: {what} {size_label}"
                    results.append(c.summary(name, "MB/s", got[what], payloads=n, **extra))
                    row.append(c.fmt(statistics.median(got[what])))
                row += [f"{got['ratio']:.3f}", "cas" if got["offloaded"] else ""]
                chain_rows.append(row)
            print(f"  codec {label} done", flush=True)
        for store in {id(s): s for _, _, s in configs if s is not None}.values():
            store.close()  # once each: two chains share the FileCAS
    for name, unit, values, extra in bench_small(small_n, repeat):
        results.append(c.summary(name, unit, values, **extra))
        verdict = ("met" if extra["met"] else "NOT met") if "met" in extra else ""
        small_rows.append([name, unit, f"{statistics.median(values):.3f}", verdict])
    small = msgspec.json.encode(SMALL).decode()
    for title, headers, rows in (
        (
            "CAS throughput, MB/s (fresh put, get with rehash, dedup put)",
            ["cas", "size", "put", "get", "dedup put"],
            cas_rows,
        ),
        (
            "Codec chain, MB/s of plain payload (ratio: stored / plain bytes)",
            ["chain", "size", "seal", "open", "seal+open", "ratio", "where"],
            chain_rows,
        ),
        (
            f"Small payload {small} (added: minus the codec alone) and a 10-event history",
            ["what", "unit", "median", f"goal <= {GOAL_US:g} us"],
            small_rows,
        ),
    ):
        print(c.table(title, headers, rows), end="\n\n")
    path = c.write_results("cas", params, results, args.results_dir)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
