"""Payloads in the web UI: CAS blobs fetched on demand; encrypted ones shown as such, no keys."""

from __future__ import annotations

import html
import re
from typing import Any

from cas import MemoryCAS
from engine import Client, Keyring, PayloadCodec, VirtualClock, Worker
from engine.events import ActivityCompleted, CasRef, Encrypted, SignalReceived, WorkflowStarted
from engine.ui import create_app
from stores import MemoryStore

from .test_ui_support import ACTIVITIES, WORKFLOWS, client_for

KEYS = Keyring({"2026-11": bytes(range(32))})
BIG = "line of a long report\n" * 400  # ~9 KB: above offload_above below, so in the CAS


class CountingCAS(MemoryCAS):
    """A MemoryCAS that counts reads, to see that pages never fetch."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def get(self, digest: str) -> bytes:
        self.gets += 1
        return super().get(digest)


def _store(codec: PayloadCodec, blobs: CountingCAS) -> MemoryStore:
    store = MemoryStore()
    clock = VirtualClock()
    client = Client(store, cas=blobs, codec=codec, clock=clock)
    client.start("order", BIG, id="big-order")
    Worker(store, WORKFLOWS, ACTIVITIES, cas=blobs, codec=codec, clock=clock).run_until_idle()
    client.signal("big-order", "approve", {"secret": "launch code 0000"})
    return store


def _fetch_urls(page: str) -> list[str]:
    return [html.unescape(u) for u in re.findall(r'hx-get="(/payload\?[^"]+)"', page)]


def test_a_cas_payload_is_fetched_only_on_demand() -> None:
    blobs = CountingCAS()
    codec = PayloadCodec(offload_above=1024)
    store = _store(codec, blobs)
    started = store.read("big-order")[0]
    assert isinstance(started, WorkflowStarted) and isinstance(started.input, CasRef)
    http = client_for(create_app(store, cas=blobs, codec=codec))
    blobs.gets = 0
    page = http.get("/workflow", params={"id": "big-order"}).text
    assert blobs.gets == 0  # the page names the blob, and fetches nothing
    assert "in the CAS: sha256:" in page and "line of a long report" not in page
    (url, *_) = _fetch_urls(page)
    assert "event=0" in url and "n=0" in url
    fetched = http.get(url, headers={"HX-Request": "true"})
    assert fetched.status_code == 200 and blobs.gets == 1
    assert fetched.text.startswith("<pre>") and "line of a long report" in fetched.text
    assert fetched.text.count("line of a long report") == 400
    # the signal, small, is inline as usual
    assert "launch code 0000" in html.unescape(page)


def test_without_a_cas_the_fetch_says_what_is_missing() -> None:
    blobs = CountingCAS()
    store = _store(PayloadCodec(offload_above=1024), blobs)
    http = client_for(create_app(store))
    page = http.get("/workflow", params={"id": "big-order"}).text
    fetched = http.get(_fetch_urls(page)[0], headers={"HX-Request": "true"})
    assert fetched.status_code == 200 and "unreadable" in fetched.text
    assert "no CAS was given" in fetched.text


def _signal_payload(store: MemoryStore) -> Any:
    (signal,) = [e for e in store.read("big-order") if isinstance(e, SignalReceived)]
    return signal.payload


def test_encrypted_payloads_are_shown_as_encrypted_without_keys() -> None:
    blobs = CountingCAS()
    codec = PayloadCodec(keys=KEYS, offload_above=1024)
    store = _store(codec, blobs)
    assert isinstance(_signal_payload(store), Encrypted)
    http = client_for(create_app(store, cas=blobs))  # the CAS, but no keys
    page = http.get("/workflow", params={"id": "big-order"})
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "launch code" not in text and "waiting for approval" not in text
    # the signal; the query value of each decision, and the latest one again above
    assert text.count(">encrypted</span>") == 4
    assert "encrypted with key '2026-11'" in text and "this UI has no keys" in text
    fetched = http.get(_fetch_urls(page.text)[0], headers={"HX-Request": "true"})
    assert fetched.status_code == 200 and "encrypted" in fetched.text
    assert "line of a long report" not in fetched.text  # in the CAS and encrypted: still shut
    # the history download is the sealed history, as stored
    download = http.get("/workflow/history.json", params={"id": "big-order"})
    assert download.status_code == 200 and b"launch code" not in download.content


def test_encrypted_payloads_are_decoded_with_keys() -> None:
    blobs = CountingCAS()
    codec = PayloadCodec(keys=KEYS, offload_above=1024)
    store = _store(codec, blobs)
    reader = PayloadCodec(keys=Keyring({"2026-11": bytes(range(32))}))
    http = client_for(create_app(store, cas=blobs, codec=reader))
    page = http.get("/workflow", params={"id": "big-order"})
    text = html.unescape(page.text)
    assert '"secret": "launch code 0000"' in text  # decrypted inline: no I/O needed
    assert '"waiting for approval"' in text and ">encrypted</span>" not in text
    done = [e for e in store.read("big-order") if isinstance(e, ActivityCompleted)]
    assert isinstance(done[0].result, CasRef)  # an encrypted result, offloaded
    fetched = http.get(_fetch_urls(page.text)[0], headers={"HX-Request": "true"})
    assert "line of a long report" in fetched.text  # fetched from the CAS, then decrypted


def test_a_wrong_key_is_a_clear_message() -> None:
    blobs = CountingCAS()
    store = _store(PayloadCodec(keys=KEYS), blobs)
    wrong = PayloadCodec(keys=Keyring({"2026-11": bytes(32)}))
    page = client_for(create_app(store, cas=blobs, codec=wrong)).get(
        "/workflow", params={"id": "big-order"}
    )
    text = html.unescape(page.text)
    assert "launch code" not in text and "does not decrypt under key '2026-11'" in text


def test_compressed_and_msgpack_payloads_read_inline() -> None:
    blobs = CountingCAS()
    codec = PayloadCodec(format="msgpack", compression="zstd")
    store = _store(codec, blobs)
    http = client_for(create_app(store, codec=codec))
    text = html.unescape(http.get("/workflow", params={"id": "big-order"}).text)
    assert '"secret": "launch code 0000"' in text
    assert "line of a long report" in text  # compressed well below the inline limit
