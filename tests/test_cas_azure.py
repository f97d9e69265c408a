"""AzureBlobCAS against Azurite: the conformance suite (a container per test), concurrent
puts of one content, sampled bit flips and truncations, ``cas.open("azure://...")``, GC
racing a dedup put, outages (Azurite stopped; a server that never answers), gc and verify.

Azurite is started by the ``azurite`` fixtures (``tests/azurite.py``); without
``npm ci`` these tests are skipped.
"""

from __future__ import annotations

import doctest
import pathlib
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("azure.storage.blob", reason="the azure extra is not installed")

from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.storage.blob import BlobClient, ContainerClient

import cas as cas_pkg
import cas._azureurl
import cas.azure
import tests.azurite
from cas import CAS, AzureBlobCAS, BlobNotFoundError, digest_of, gc, verify
from engine import CorruptionError, StoreError
from stores import MemoryStore
from tests.azurite import ACCOUNT_KEY, Azurite, require_azurite
from tests.cas_conformance import CASConformance, MakeCAS, info_of
from tests.test_cas_gc import PLACES, Backend, populate

HEX = "0123456789abcdef" * 4


def dev_connection_string(port: int) -> str:
    """Azurite's development account at ``127.0.0.1:port`` (nothing need listen there)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


OFFLINE = dev_connection_string(9)  # for tests that never send a request


def blob_client(cas: CAS, digest: str) -> BlobClient:
    """The blob behind ``digest``, reached around the CAS (documented layout)."""
    assert isinstance(cas, AzureBlobCAS)
    return cas._client.get_blob_client(f"{cas.prefix}sha256/{digest.removeprefix('sha256:')}")


def corrupt_blob(cas: CAS, digest: str, data: bytes) -> None:
    """Replace ``digest``'s bytes with ``data``, keeping its put time (a bad copy)."""
    blob = blob_client(cas, digest)
    metadata = blob.get_blob_properties().metadata if blob.exists() else {}
    blob.upload_blob(data, overwrite=True, metadata=metadata)


def set_modified_blob(cas: CAS, digest: str, when: float) -> None:
    blob_client(cas, digest).set_blob_metadata({"tpp_put": f"{when:.6f}"})


@pytest.fixture
def container(azurite: Azurite) -> str:
    return azurite.new_container("cas")


@pytest.fixture
def blobs(azurite: Azurite, container: str) -> Iterator[AzureBlobCAS]:
    with AzureBlobCAS(azurite.connection_string, container) as handle:
        yield handle


# --------------------------------------------------------------------------- conformance


class TestAzureBlobCAS(CASConformance):
    reopen = True

    @pytest.fixture
    def make_cas(self, azurite: Azurite, container: str) -> MakeCAS:
        return lambda: AzureBlobCAS(azurite.connection_string, container)

    def corrupt(self, cas: CAS, digest: str, data: bytes) -> None:
        corrupt_blob(cas, digest, data)

    def set_modified(self, cas: CAS, digest: str, when: float) -> None:
        set_modified_blob(cas, digest, when)


class TestAzureBlobCASWithPrefix(TestAzureBlobCAS):
    @pytest.fixture
    def make_cas(self, azurite: Azurite, container: str) -> MakeCAS:
        return lambda: AzureBlobCAS(azurite.connection_string, container, prefix="team/a/")


# --------------------------------------------------------------------------- layout, puts


def test_layout_metadata_and_repr(blobs: AzureBlobCAS, azurite: Azurite, container: str) -> None:
    before = time.time()
    digest = blobs.put(b"hello")
    props = blob_client(blobs, digest).get_blob_properties()
    assert props.name == "sha256/" + digest.removeprefix("sha256:")
    assert before - 1 <= float(props.metadata["tpp_put"]) <= time.time() + 1
    assert bytes(props.content_settings.content_md5 or b"") == bytes.fromhex(
        "5d41402abc4b2a76b9719d911017c592"  # md5(b"hello")
    )
    assert repr(blobs) == f"<AzureBlobCAS {azurite.blob_endpoint}/{container}>"
    assert ACCOUNT_KEY not in repr(blobs)
    assert blobs.container == container and blobs.prefix == ""


def test_eight_concurrent_puts_of_one_content(azurite: Azurite, container: str) -> None:
    """8 clients put one 1 MiB blob at the same moment: all succeed, one blob exists."""
    data = random.Random(8).randbytes(1 << 20)
    handles = [AzureBlobCAS(azurite.connection_string, container) for _ in range(8)]
    barrier = threading.Barrier(8)
    results: list[Any] = [None] * 8

    def put(i: int) -> None:
        barrier.wait()
        try:
            results[i] = handles[i].put(data)
        except Exception as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [digest_of(data)] * 8
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    with client:
        assert [b.name for b in client.list_blobs()] == ["sha256/" + digest_of(data)[7:]]
    assert handles[0].get(digest_of(data)) == data
    for handle in handles:
        handle.close()


def test_a_dedup_put_rewrites_a_blob_whose_md5_differs(blobs: AzureBlobCAS) -> None:
    digest = blobs.put(b"content")
    corrupt_blob(blobs, digest, b"cOntent")  # same size, other bytes (and their MD5)
    with pytest.raises(CorruptionError):
        blobs.get(digest)
    assert blobs.put(b"content") == digest
    assert blobs.get(digest) == b"content"


def test_a_blob_without_our_metadata_reports_its_last_modified(blobs: AzureBlobCAS) -> None:
    """Copied in by another tool: no tpp_put; the blob's Last-Modified stands in."""
    blobs.put(b"creates the container")
    digest = digest_of(b"copied")
    blob_client(blobs, digest).upload_blob(b"copied")
    modified = info_of(blobs, digest).modified
    assert abs(modified - time.time()) < 5 and modified == int(modified)
    set_modified_blob(blobs, digest, time.time() - 3600)
    assert blobs.put(b"copied") == digest
    assert info_of(blobs, digest).modified > time.time() - 5
    blob_client(blobs, digest).set_blob_metadata({"tpp_put": "nan"})
    assert abs(info_of(blobs, digest).modified - time.time()) < 5


def test_foreign_blobs_and_other_prefixes_are_not_listed(azurite: Azurite, container: str) -> None:
    with (
        AzureBlobCAS(azurite.connection_string, container) as top,
        AzureBlobCAS(azurite.connection_string, container, prefix="p/q") as sub,
    ):
        mine, theirs = top.put(b"top"), sub.put(b"sub")
        client = top._client
        for name in ["README", "sha256/README", f"sha256/{HEX.upper()}", f"sha256/{HEX}/x",
                     f"sha256/{HEX[:-1]}", f"other/sha256/{HEX}"]:  # fmt: skip
            client.upload_blob(name, b"x")
        assert list(top) == [mine] and list(sub) == [theirs]
        assert sub.prefix == "p/q/" and not top.has(theirs) and sub.get(theirs) == b"sub"
        assert verify(top).ok and verify(top).checked == 1


@pytest.mark.parametrize(
    "prefix", ["/abs", "a//b", "a/../b", "./a", "a\\b", "a/\x00", "x" * 513, 7], ids=repr
)
def test_bad_prefixes_and_containers(prefix: Any) -> None:
    with pytest.raises(ValueError, match="prefix"):
        AzureBlobCAS(OFFLINE, prefix=prefix)
    for name in ["ab", "Upper", "a--b", "-ab", "ab-", "a_b", "x" * 64, "a.b"]:
        with pytest.raises(ValueError, match="container name"):
            AzureBlobCAS(OFFLINE, name)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="neither a connection string"):
        AzureBlobCAS("just-a-name")
    with pytest.raises(ValueError, match="connection string or an account URL"):
        AzureBlobCAS("")
    with pytest.raises(ValueError, match="retries"):
        AzureBlobCAS("https://acct.blob.core.windows.net", retries=-1)
    with pytest.raises(TypeError, match="ContainerClient"):
        AzureBlobCAS.from_container_client("not a client")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the container


def test_a_missing_container_is_empty_and_the_first_put_creates_it(
    azurite: Azurite, container: str
) -> None:
    with AzureBlobCAS(azurite.connection_string, container) as blobs:
        absent = digest_of(b"x")
        assert list(blobs) == [] and not blobs.has(absent) and not blobs.delete(absent)
        with pytest.raises(BlobNotFoundError, match="missing"):
            blobs.get(absent)
        assert blobs.put(b"x") == absent and blobs.get(absent) == b"x"
    other = azurite.new_container("nocreate")
    with (
        AzureBlobCAS(azurite.connection_string, other, create_container=False) as blobs,
        pytest.raises(StoreError, match="ContainerNotFound"),
    ):
        blobs.put(b"x")


def test_a_wrong_key_is_an_authentication_store_error(azurite: Azurite, container: str) -> None:
    wrong = azurite.connection_string.replace(ACCOUNT_KEY, "A" * 86 + "==")
    with (
        AzureBlobCAS(wrong, container) as blobs,
        pytest.raises(StoreError, match="authentication failed") as caught,
    ):
        blobs.put(b"x")
    assert "AAAA" not in str(caught.value) and caught.value.__cause__ is not None


def test_a_container_client_of_your_own(azurite: Azurite, container: str) -> None:
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    with AzureBlobCAS.from_container_client(client, prefix="own") as blobs:
        digest = blobs.put(b"mine")
        assert blobs.get(digest) == b"mine" and blobs.prefix == "own/"


# --------------------------------------------------------------------------- damage


def test_sampled_bit_flips_and_truncations_are_detected(blobs: AzureBlobCAS) -> None:
    """200 seeded single-bit flips and 20 truncations of a 4 KiB blob (FileCAS does all)."""
    data = random.Random(4096).randbytes(4096)
    digest = blobs.put(data)
    rng = random.Random(200)
    flips = rng.sample(range(len(data) * 8), 200)
    cuts = [0, 1, len(data) - 1, *rng.sample(range(2, len(data) - 1), 17)]
    undetected: list[str] = []
    blob = blob_client(blobs, digest)

    def check(case: str, damaged: bytes) -> None:
        blob.upload_blob(damaged, overwrite=True)
        try:
            blobs.get(digest)
        except BlobNotFoundError:
            undetected.append(f"{case}: reported missing, not corrupt")
        except CorruptionError:
            return
        else:
            undetected.append(f"{case}: returned bytes")

    for bit in flips:
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        check(f"bit {bit % 8} of byte {bit // 8}", bytes(flipped))
    for size in cuts:
        check(f"cut to {size} bytes", data[:size])
    assert undetected == []
    assert blobs.put(data) == digest and blobs.get(digest) == data  # a put repairs it


# --------------------------------------------------------------------------- races


def test_gc_delete_loses_to_a_put_between_its_look_and_its_delete(
    blobs: AzureBlobCAS, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = blobs.put(b"wanted again")
    set_modified_blob(blobs, digest, time.time() - 3600)
    real_delete = BlobClient.delete_blob

    def put_first(self: BlobClient, **kwargs: Any) -> None:
        monkeypatch.setattr(BlobClient, "delete_blob", real_delete)
        assert blobs.put(b"wanted again") == digest  # a worker re-puts it, just in time
        real_delete(self, **kwargs)

    monkeypatch.setattr(BlobClient, "delete_blob", put_first)
    assert blobs.delete(digest, older_than=time.time() - 600) is False
    assert blobs.get(digest) == b"wanted again"
    assert info_of(blobs, digest).modified > time.time() - 60


def test_a_put_after_gc_deleted_the_blob_uploads_it_again(
    blobs: AzureBlobCAS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The put saw the blob (409), GC deleted it, the put's refresh finds nothing: it re-uploads."""
    digest = blobs.put(b"again")
    real_properties = BlobClient.get_blob_properties

    def gc_in_between(self: BlobClient, **kwargs: Any) -> Any:
        monkeypatch.setattr(BlobClient, "get_blob_properties", real_properties)
        props = real_properties(self, **kwargs)
        assert blobs.delete(digest)
        return props

    monkeypatch.setattr(BlobClient, "get_blob_properties", gc_in_between)
    assert blobs.put(b"again") == digest
    assert blobs.get(digest) == b"again"


def test_a_chunked_read_restarts_when_a_put_refreshes_the_blob(
    azurite: Azurite, container: str
) -> None:
    """Reads of blobs above the single-GET size pin the ETag; a refresh between chunks
    (412) makes the read start over instead of failing."""
    data = random.Random(3).randbytes(3 << 20)
    refreshed: list[int] = []
    with AzureBlobCAS(azurite.connection_string, container) as other:
        digest = other.put(data)

        def refresh_once(response: Any) -> None:
            request = response.http_request
            if request.method == "GET" and "x-ms-range" in request.headers and not refreshed:
                refreshed.append(1)
                assert other.put(data) == digest  # changes the ETag mid-read

        client = ContainerClient.from_connection_string(
            azurite.connection_string, container, max_single_get_size=1 << 20,
            max_chunk_get_size=1 << 20, raw_response_hook=refresh_once,
        )  # fmt: skip
        with AzureBlobCAS.from_container_client(client) as blobs:
            assert blobs.get(digest) == data
    assert refreshed == [1]


# --------------------------------------------------------------------------- gc and verify


@pytest.fixture
def backend(blobs: AzureBlobCAS) -> Backend:
    return Backend(blobs, corrupt_blob, set_modified_blob)


def test_gc_deletes_exactly_the_unreferenced_old_blobs(backend: Backend) -> None:
    with MemoryStore() as store:
        made = populate(store, backend)
        report = gc(store, backend.cas, grace=600)
        assert sorted(report.deleted) == sorted(made["old"])
        assert report.marked == len(PLACES) and report.missing == []
        assert sorted(backend.cas) == sorted([*made["referenced"], made["young"]])
        report = gc(store, backend.cas, grace=0, now=lambda: time.time() + 3600)
        assert report.deleted == [made["young"]]


def test_verify_reports_the_damaged_blobs(backend: Backend) -> None:
    cas = backend.cas
    good, bad = cas.put(b"good"), cas.put(b"bad")
    corrupt_blob(cas, bad, b"BAD")
    report = verify(cas)
    assert (report.checked, report.bytes) == (2, 4)
    assert [d.digest for d in report.damaged] == [bad] and good != bad


# --------------------------------------------------------------------------- cas.open


def test_open_with_a_connection_string(
    azurite: Azurite, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    quoted = urllib.parse.quote(azurite.connection_string, safe="")
    url = f"azure://{container}/some/prefix?connection_string={quoted}&api_version=2025-11-05"
    with cas_pkg.open(url) as blobs:
        assert isinstance(blobs, AzureBlobCAS) and blobs.prefix == "some/prefix/"
        digest = blobs.put(b"through a URL")
        assert blobs._client.api_version == "2025-11-05"
    raw = f"azure://{container}/some/prefix?connection_string={azurite.connection_string}"
    with cas_pkg.open(raw) as blobs:  # unencoded: "+" in the key must survive
        assert blobs.get(digest) == b"through a URL"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    url = f"azure://{container}/some/prefix?retries=0&connection_timeout=0.5&read_timeout=3"
    with cas_pkg.open(url) as blobs:
        assert blobs.get(digest) == b"through a URL"
        assert list(blobs) == [digest]
    with cas_pkg.open(f"azure://{container}") as blobs:
        assert list(blobs) == []  # another prefix


def test_open_an_account_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """The account URL form takes its credential from the environment (no request is made)."""
    for name in ("AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    url = "azure://myacct.blob.core.windows.net/blobs/tenant-7"
    monkeypatch.setenv("AZURE_STORAGE_KEY", ACCOUNT_KEY)
    with cas_pkg.open(url) as blobs:
        assert isinstance(blobs, AzureBlobCAS)
        assert blobs._client.url == "https://myacct.blob.core.windows.net/blobs"
        assert (blobs.container, blobs.prefix) == ("blobs", "tenant-7/")
        assert blobs._client.credential.account_name == "myacct"
    assert isinstance(cas._azureurl.env_credential("myacct.x"), AzureNamedKeyCredential)
    monkeypatch.delenv("AZURE_STORAGE_KEY")
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "?sv=2024&sig=abc")
    assert isinstance(cas._azureurl.env_credential("myacct.x"), AzureSasCredential)
    monkeypatch.delenv("AZURE_STORAGE_SAS_TOKEN")
    monkeypatch.setitem(sys.modules, "azure.identity", None)
    with pytest.raises(ValueError, match="no credential for https://myacct"):
        cas_pkg.open(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("azure:", "looks like azure://CONTAINER"),
        ("azure:///x", "looks like azure://CONTAINER"),
        ("azure://cont?colour=blue", "unknown or repeated .*'colour'"),
        ("azure://cont?retries=1&retries=2", "unknown or repeated .*'retries'"),
        ("azure://cont?retries=many", "not a number"),
        ("azure://cont?read_timeout=0", "timeouts > 0"),
        ("azure://Bad_Name", "container name"),
        ("azure://acct.blob.core.windows.net", "names no container"),
        ("azure://acct.blob.core.windows.net/c?connection_string=x", "goes with"),
    ],
)
def test_bad_azure_urls(url: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", OFFLINE)
    with pytest.raises(ValueError, match=message):
        cas_pkg.open(url)


def test_a_connection_string_is_required_and_never_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(ValueError, match="AZURE_STORAGE_CONNECTION_STRING"):
        cas_pkg.open("azure://cont")
    with pytest.raises(ValueError) as caught:
        cas_pkg.open(f"azure://cont?connection_string=AccountKey%3D{ACCOUNT_KEY}&x=1")
    assert ACCOUNT_KEY not in str(caught.value)


def test_docstrings() -> None:
    for module in (cas.azure, cas._azureurl):
        assert module.__doc__
        for name in module.__all__:
            assert getattr(module, name).__doc__ or name == "Credential", name
    result = doctest.testmod(cas._azureurl)
    assert result.attempted > 0 and result.failed == 0


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_import_cas_does_not_import_the_azure_sdk() -> None:
    code = "import sys, cas; cas.open('memory:'); print('azure.storage.blob' in sys.modules)"
    assert _python(code) == "False"
    assert cas_pkg.AzureBlobCAS is AzureBlobCAS and "AzureBlobCAS" in dir(cas_pkg)


def test_without_the_sdk_azure_says_which_extra_to_install() -> None:
    code = """if True:
        import sys
        sys.modules["azure.storage.blob"] = None  # as if not installed
        import cas
        assert cas.open("memory:") is not None
        for attempt in (lambda: cas.open("azure://c"), lambda: cas.AzureBlobCAS):
            try:
                attempt()
            except ImportError as exc:
                print(exc)
    """
    lines = _python(code).splitlines()
    assert len(lines) == 2 and all("pip install 'temporalpp[azure]'" in x for x in lines)
    assert lines[0].startswith("'azure://c' needs the azure extra")


# --------------------------------------------------------------------------- outages


def _timed(call: Callable[[], object]) -> tuple[BaseException, float]:
    began = time.monotonic()
    with pytest.raises(StoreError) as caught:
        call()
    return caught.value, time.monotonic() - began


def test_azurite_stopped_is_a_store_error_within_seconds(
    azurite_factory: Callable[[], Azurite],
) -> None:
    """SIGTERM a second Azurite: every call fails with StoreError in ~1 s, none hangs;
    restarted, it serves the blob again (SIGTERM saved it)."""
    emulator = azurite_factory()
    with AzureBlobCAS(emulator.connection_string, "outage") as blobs:
        digest = blobs.put(b"before the outage")
        assert emulator.stop() == 0
        calls: list[Callable[[], object]] = [
            lambda: blobs.put(b"during"),
            lambda: blobs.get(digest),
            lambda: blobs.has(digest),
            lambda: blobs.delete(digest, older_than=time.time()),
            lambda: list(blobs),
        ]
        for call in calls:
            error, took = _timed(call)
            assert took < 5.0, (error, took)
            assert "cannot reach the storage endpoint" in str(error)
            assert f"127.0.0.1:{emulator.port}" in str(error)
        emulator.start()
        assert blobs.get(digest) == b"before the outage"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that completes TCP handshakes (backlog) but never answers a request."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def test_a_server_that_never_answers_is_a_store_error(silent_server: int) -> None:
    with AzureBlobCAS(
        dev_connection_string(silent_server), "stall", retries=1, read_timeout=0.5
    ) as blobs:
        error, took = _timed(lambda: blobs.has(digest_of(b"x")))
    assert 1.0 <= took < 3.0, took
    assert "no complete reply" in str(error) or "cannot reach" in str(error)


def test_the_default_timeouts_on_a_silent_server(silent_server: int) -> None:
    """Defaults: a 2 s read timeout, and no attempt that could end past the 4.5 s deadline
    -> two attempts, StoreError in ~4.25 s (it was 3 attempts, 6.75 s: over the 5 s goal)."""
    with AzureBlobCAS(dev_connection_string(silent_server), "stall") as blobs:
        _, took = _timed(lambda: blobs.put(b"x"))
    assert 4.0 <= took < 5.0, took


# --------------------------------------------------------------------------- the fixture


def test_without_azurite_the_tests_skip_and_say_npm_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setattr(tests.azurite, "AZURITE_BIN", tmp_path / "azurite-blob")
    monkeypatch.delenv("TPP_REQUIRE_AZURITE", raising=False)
    with pytest.raises(pytest.skip.Exception, match="run `npm ci`"):
        require_azurite()
    monkeypatch.setenv("TPP_REQUIRE_AZURITE", "1")
    with pytest.raises(pytest.fail.Exception, match=r"npm ci.*TPP_REQUIRE_AZURITE"):
        require_azurite()


@pytest.mark.ci
def test_an_emulator_whose_port_is_taken_moves_but_a_restart_does_not(
    tmp_path: pathlib.Path,
) -> None:
    require_azurite()
    emulator = Azurite(tmp_path / "a")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", emulator.port))
        squatter.listen()
        taken = emulator.port
        emulator.start()  # Azurite reports EADDRINUSE: another free port is tried
        try:
            assert emulator.port != taken and emulator.running()
            assert "successfully listens" in emulator.log_text()
        finally:
            # NB: Azurite installs its SIGTERM handler after it says it listens: stopped
            # at once, it may die of the signal (-15) instead of exiting 0 (a CI run did)
            assert emulator.stop() in (0, -signal.SIGTERM)
        restart = Azurite(tmp_path / "b", port=taken)
        with pytest.raises(RuntimeError, match="EADDRINUSE"):
            restart.start()
