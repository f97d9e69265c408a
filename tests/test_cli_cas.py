"""``tpp`` with payload codecs and a CAS: --keys/--key-vault/--compression, cas verify, cas gc."""

from __future__ import annotations

import os
import pathlib
import time

from cas import FileCAS
from engine import Client, PayloadCodec, Worker
from engine.events import ActivityScheduled, Encrypted, WorkflowStarted
from stores.file import FileStore

from . import cliapp
from .clikit import APP_FIXED, as_json, ok, tpp

KEY = bytes(range(32))
KEYS = f"k1={KEY.hex()}"


def _aged(cas_dir: pathlib.Path, digest: str, seconds: float) -> None:
    (path,) = (p for p in cas_dir.rglob(digest.split(":")[1]) if p.is_file())
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_encrypted_runs_through_the_command_line(tmp_path: pathlib.Path) -> None:
    store_url, cas_url = f"file:{tmp_path / 's'}", f"file:{tmp_path / 'c'}"
    codec = ["--keys", KEYS, "--key-vault", str(tmp_path / "keys"), "--compression", "zstd"]
    g = ["--store", store_url, "--cas", cas_url]
    ok(
        tpp(
            *g,
            *codec,
            "workflow",
            "start",
            "--type",
            "checkout",
            "-w",
            "o-1",
            "--input",
            '"o-1"',
            "--input",
            "999",
        )
    )
    with FileStore(tmp_path / "s") as store:
        (started,) = store.read("o-1")
        assert isinstance(started, WorkflowStarted) and isinstance(started.input, Encrypted)
    ok(tpp(*g, *codec, "worker", "--app", APP_FIXED, "--until-idle"))
    result = as_json(tpp(*g, *codec, "workflow", "result", "-w", "o-1", "-o", "json"))
    assert result["result"] == {"slot": "slot-for-o-1", "receipt": "charged 999 for o-1"}
    with FileStore(tmp_path / "s") as store:
        scheduled = [e for e in store.read("o-1") if isinstance(e, ActivityScheduled)]
        assert scheduled and all(isinstance(e.args, Encrypted) for e in scheduled)
    ok(tpp(*g, *codec, "verify", "--app", APP_FIXED, store_url))
    # without the keys: one clear line, no traceback, a failing status
    bad = tpp(*g, "workflow", "result", "-w", "o-1")
    assert bad.exit_code != 0
    assert "encrypted" in bad.stderr and "Traceback" not in bad.stderr
    wrong = tpp(*g, "--keys", "k1=zz", "workflow", "result", "-w", "o-1")
    assert wrong.exit_code != 0 and "bad payload codec options" in wrong.stderr


def test_cas_verify_and_gc(tmp_path: pathlib.Path) -> None:
    with FileStore(tmp_path / "s") as store, FileCAS(tmp_path / "c") as blobs:
        client = Client(store, cas=blobs, codec=PayloadCodec(offload_above=0))
        client.start(cliapp.checkout, "o-2", 5, id="o-2")
        Worker(
            store,
            cliapp.app_fixed.workflows,
            cliapp.app_fixed.activities,
            cas=blobs,
            codec=PayloadCodec(offload_above=0),
        ).run_until_idle()
        assert client.result("o-2")["receipt"] == "charged 5 for o-2"
        orphan = blobs.put(b"nobody refers to me")
        young = blobs.put(b"put just now")
        referenced = len(list(blobs)) - 2
    _aged(tmp_path / "c", orphan, 3600)
    g = ["--store", f"file:{tmp_path / 's'}", "--cas", f"file:{tmp_path / 'c'}"]

    report = as_json(tpp(*g, "cas", "verify", "-o", "json"))
    assert report["checked"] == referenced + 2 and report["damaged"] == []
    dry = as_json(tpp(*g, "cas", "gc", "--dry-run", "-o", "json"))
    assert dry["deleted"] == [orphan] and dry["dry_run"] is True
    done = as_json(tpp(*g, "cas", "gc", "-o", "json"))
    assert done["deleted"] == [orphan] and done["missing"] == [] and done["marked"] == referenced
    assert "deleted 0 (0 B)" in ok(tpp(*g, "cas", "gc")).stdout  # nothing left to collect
    with FileCAS(tmp_path / "c") as blobs:
        assert not blobs.has(orphan) and blobs.has(young)
        victim = next(d for d in blobs if d != young)
    # damage a referenced blob: verify says which and fails
    (path,) = (p for p in (tmp_path / "c").rglob(victim.split(":")[1]) if p.is_file())
    path.chmod(0o644)
    path.write_bytes(b"rotten")
    damaged = tpp(*g, "cas", "verify", "-o", "json")
    assert damaged.exit_code == 1
    import json

    assert [d["digest"] for d in json.loads(damaged.stdout)["damaged"]] == [victim]
    text = tpp(*g, "cas", "verify")
    assert text.exit_code == 1 and "1 damaged" in text.stdout and victim in text.stdout
    # a referenced blob that is gone is reported by gc as lost data
    path.unlink()
    lost = tpp(*g, "cas", "gc", "--grace", "0")
    assert lost.exit_code == 1 and f"missing: {victim}" in lost.stderr


def test_cas_commands_need_a_cas(tmp_path: pathlib.Path) -> None:
    result = tpp("--store", f"file:{tmp_path}", "cas", "verify")
    assert result.exit_code != 0 and "no CAS given" in result.stderr
    assert "Traceback" not in result.stderr
    empty = as_json(tpp("cas", "verify", f"file:{tmp_path / 'c'}", "-o", "json"))
    assert empty["checked"] == 0
