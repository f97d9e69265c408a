"""AzureBlobCAS: one block blob per digest in an Azure Storage container.

Needs the ``azure`` extra (``pip install 'temporalpp[azure]'``, i.e.
``azure-storage-blob``); ``import cas`` never imports it.  Tested against
Azurite, the official emulator (``tests/azurite.py``)::

    from cas import AzureBlobCAS
    with AzureBlobCAS(connection_string, container="tpp-cas") as blobs:
        digest = blobs.put(b"a large payload")
        assert blobs.get(digest) == b"a large payload"

Opening
-------

``AzureBlobCAS(account, container="tpp-cas", *, credential=None, prefix="")``
where ``account`` is a **connection string** (it has ``=``; Azurite's included)
or an **account URL** (``https://ACCOUNT.blob.core.windows.net``) used with
``credential`` (an account-key dict or ``AzureNamedKeyCredential``, a SAS token,
or a token credential such as azure-identity's ``DefaultAzureCredential``).
``AzureBlobCAS.from_container_client(client)`` wraps a client you configured.
Nothing is sent until the first call; the container is created by the first
put that finds it missing (``create_container=False`` turns that off).

``cas.open(url)`` (:meth:`AzureBlobCAS.from_url`) takes two forms::

    azure://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX][?OPTIONS]
    azure://CONTAINER[/PREFIX][?OPTIONS]

The first is the account URL form (always https); its credential comes from the
environment, as the ``az`` CLI names it: ``AZURE_STORAGE_KEY`` (the account
key), else ``AZURE_STORAGE_SAS_TOKEN``, else azure-identity's
``DefaultAzureCredential`` when that package is installed.  The second (the host
is a container name, which never has a dot) uses a connection string: the
``connection_string`` option (percent-encoded), else
``$AZURE_STORAGE_CONNECTION_STRING``.  Options: ``connection_string``,
``api_version``, ``retries``, ``connection_timeout``, ``read_timeout`` (seconds).

Layout and theory of operation
------------------------------

A blob ``PREFIX + "sha256/" + <64 hex digits>`` holds each content; the digest
is checked before any name is built, and sha256 names are already random, so no
hash prefix is needed to spread them over Azure's partitions.  Each blob carries
its put time in the metadata ``tpp_put`` (``time.time()`` seconds of the putting
machine, as MemoryCAS; blobs lacking it report their Last-Modified) and the
Content-MD5 of its bytes (which Put Blob verifies on arrival).

* **Put** uploads with ``If-None-Match: *`` (one request for new content), so any
  number of concurrent puts of the same content all succeed and leave one blob.
  On 409 ``BlobAlreadyExists`` it reads the blob's properties: the right size
  and Content-MD5 (the hash check of a dedup put, free with the properties) ->
  it refreshes ``tpp_put`` with Set Blob Metadata, which also changes the ETag;
  anything else -> it replaces the blob, conditioned on the ETag it saw.  A blob
  deleted in between sends the put round again.  Content above 4 MiB (a block
  upload) is looked up first, so a dedup put never resends it.
* **Get** downloads and rehashes; it never changes what it read.  Up to 32 MiB
  is one GET; a larger read that a dedup put's refresh interrupts between its
  chunks (412: the SDK pins the ETag) starts over.
* **Conditional delete** (GC) reads ``tpp_put`` and the ETag, then deletes with
  ``If-Match: <etag>``: a put that refreshed the blob since changed the ETag, so
  the delete fails (412) and the blob stays -- atomic against a concurrent put.

Failures: every Azure SDK error is translated into ``StoreError`` (``raise ...
from exc``) naming the container and what was being done.  The SDK's defaults
(3 retries 15, 18 and 24 s apart, a 20 s connect and a 60 s read timeout) took
83 s to report an outage on Azurite; here a call makes ``retries`` + 1 attempts
(default 3) ~0.25 then ~0.5 s apart, with a 1.5 s connect and a 2 s read
timeout, and no upload request carries more than 4 MiB.  Measured on loopback:
a refused connection (Azurite stopped) surfaces in 0.5-1 s, a server that
accepts but never answers in ~7 s; an unreachable host would take ~5 s.
Loopback round trips on Azurite: put ~6 ms (a dedup put ~15 ms: three
requests), get and has ~4-5 ms for small blobs.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Final, Self, TypeVar

try:
    from azure.core import MatchConditions
    from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential, TokenCredential
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceExistsError,
        ResourceModifiedError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )
    from azure.storage.blob import (
        BlobClient,
        BlobProperties,
        ContainerClient,
        ContentSettings,
        ExponentialRetry,
        StorageErrorCode,
    )
except ImportError as exc:  # pragma: no cover - the azure extra is installed in dev
    raise ImportError(
        "AzureBlobCAS needs the azure extra: pip install 'temporalpp[azure]' "
        f"(azure-storage-blob): {exc}"
    ) from exc

from engine._errors import CorruptionError, StoreError

from ._azureurl import parse_url
from ._protocol import _HEX, ALGORITHM, BlobInfo, BlobNotFoundError, check_digest

__all__ = ["AzureBlobCAS", "Credential"]

#: What ``credential=`` takes (as the Azure SDK does).
Credential = (
    str | dict[str, str] | AzureNamedKeyCredential | AzureSasCredential | TokenCredential | None
)

_T = TypeVar("_T")

_META: Final = "tpp_put"
_CHUNK: Final = 4 << 20  # the most one upload request (or one later chunk of a read) moves
_SINGLE_GET: Final = 32 << 20  # read in one GET up to here: no chunks for a dedup refresh to split
_ATTEMPTS: Final = 5  # put / get rounds lost to concurrent changes before giving up
_CONTAINER: Final = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


#: A request gives up once another attempt could end past this (seconds from its start).
DEADLINE: Final = 4.5


class _QuickRetry(ExponentialRetry):
    """Exponential backoff with jitter, in fractions of a second (the SDK's starts at 15 s),
    within a deadline: no attempt starts that could end more than ``deadline`` seconds
    after the request began (each may take up to ``attempt_timeout``, the read timeout).

    Without it a hung server (Azurite under SIGSTOP, a black-holed connection) took
    3 attempts x a 2 s read timeout + backoff = 6.75 s to surface; now ~4.25 s.
    """

    def __init__(
        self, *, deadline: float = DEADLINE, attempt_timeout: float = 2.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.deadline = deadline
        self.attempt_timeout = attempt_timeout

    def configure_retries(self, request: Any) -> dict[str, Any]:
        settings: dict[str, Any] = super().configure_retries(request)
        settings["began"] = time.monotonic()
        return settings

    def increment(self, settings: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        more = bool(super().increment(settings, *args, **kwargs))
        if more:
            backoff = settings["backoff"] = self._backoff(settings)
            elapsed = time.monotonic() - settings["began"]
            more = elapsed + backoff + self.attempt_timeout <= self.deadline
        return more

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        backoff = settings.pop("backoff", None)  # the one the deadline was checked with
        return float(backoff) if backoff is not None else self._backoff(settings)

    @staticmethod
    def _backoff(settings: dict[str, Any]) -> float:
        # "count" is 1 at the first sleep: ~0.25 s, then ~0.5 s, ~1 s...
        return float(0.125 * 2 ** settings["count"] * random.uniform(0.5, 1.5))


class AzureBlobCAS:
    """A CAS in an Azure Storage container (see the module docstring); any number of
    processes on any number of machines may share one."""

    def __init__(
        self,
        account: str,
        container: str = "tpp-cas",
        *,
        credential: Credential = None,
        prefix: str = "",
        create_container: bool = True,
        retries: int = 2,
        connection_timeout: float = 1.5,
        read_timeout: float = 2.0,
        api_version: str | None = None,
    ) -> None:
        if not isinstance(account, str) or not account.strip():
            raise ValueError(
                "AzureBlobCAS needs a connection string or an account URL "
                f"(https://ACCOUNT.blob.core.windows.net), got {account!r}"
            )
        _check_container(container)
        if retries < 0 or connection_timeout <= 0 or read_timeout <= 0:
            raise ValueError(
                f"retries must be >= 0 and timeouts > 0, got retries={retries!r}, "
                f"connection_timeout={connection_timeout!r}, read_timeout={read_timeout!r}"
            )
        options: dict[str, Any] = {
            "retry_policy": _QuickRetry(
                attempt_timeout=read_timeout,
                retry_total=retries,
                retry_connect=retries,
                retry_read=retries,
                retry_status=retries,
                random_jitter_range=0,
            ),
            "connection_timeout": connection_timeout,
            "read_timeout": read_timeout,
            "max_single_put_size": _CHUNK,
            "max_block_size": _CHUNK,
            "max_single_get_size": _SINGLE_GET,
            "max_chunk_get_size": _CHUNK,
        }
        if api_version is not None:
            options["api_version"] = api_version
        if account.startswith(("https://", "http://")):
            client = ContainerClient(account, container, credential=credential, **options)
        elif "=" in account:
            client = ContainerClient.from_connection_string(
                account, container, credential=credential, **options
            )
        else:
            raise ValueError(
                f"{account[:40]!r} is neither a connection string (KEY=VALUE;...) nor an "
                "account URL (https://ACCOUNT.blob.core.windows.net)"
            )
        self._setup(client, prefix, create_container)

    @classmethod
    def from_container_client(
        cls, client: ContainerClient, *, prefix: str = "", create_container: bool = True
    ) -> AzureBlobCAS:
        """Wrap a ``ContainerClient`` you configured (its retries and timeouts stay yours).

        ``close()`` closes it.
        """
        if not isinstance(client, ContainerClient):
            raise TypeError(f"expected an azure ContainerClient, got {type(client).__name__}")
        self = cls.__new__(cls)
        self._setup(client, prefix, create_container)
        return self

    def _setup(self, client: ContainerClient, prefix: str, create_container: bool) -> None:
        self._client = client
        self._prefix = _check_prefix(prefix)
        self._blobs = self._prefix + ALGORITHM + "/"
        self._create = create_container
        scheme, netloc, path = urllib.parse.urlsplit(client.url)[:3]  # never the SAS query
        self._where = f"{scheme}://{netloc}{path}" + (f" (prefix {self._prefix!r})" * bool(prefix))
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> AzureBlobCAS:
        """Open ``azure://...`` (the forms are in the module docstring)."""
        account, container, options = parse_url(url)
        return cls(account, container, **options)

    # ------------------------------------------------------------------ helpers

    @property
    def container(self) -> str:
        """The container's name."""
        return str(self._client.container_name)

    @property
    def prefix(self) -> str:
        """The prefix of every blob name ("" or ending in "/")."""
        return self._prefix

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this AzureBlobCAS is closed")

    def _name(self, hexdigest: str) -> str:
        """The blob name of a *checked* digest's hex digits."""
        return self._blobs + hexdigest

    def _error(self, doing: str, exc: AzureError) -> StoreError:
        return StoreError(f"Azure CAS {self._where}: could not {doing}: {_describe(exc)}")

    def _call(self, doing: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except AzureError as exc:
            raise self._error(doing, exc) from exc

    @staticmethod
    def _stamp() -> dict[str, str]:
        return {_META: f"{time.time():.6f}"}

    # ------------------------------------------------------------------ the protocol

    def put(self, data: bytes) -> str:
        """Store ``data`` (once) and return its digest; refreshes the time of a known blob."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"a CAS stores bytes, got {type(data).__name__}")
        data = bytes(data)
        hexdigest = hashlib.sha256(data).hexdigest()
        digest = f"{ALGORITHM}:{hexdigest}"
        self._check_open()
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        for _ in range(_ATTEMPTS):
            if self._call(f"store blob {digest}", lambda: self._put_once(hexdigest, data, md5)):
                return digest
        raise StoreError(
            f"Azure CAS {self._where}: could not store blob {digest}: it changed under "
            f"every one of {_ATTEMPTS} attempts (deleted or replaced concurrently)"
        )

    def _put_once(self, hexdigest: str, data: bytes, md5: bytes) -> bool:
        """One round of put; False when a concurrent change means: go round again."""
        blob = self._client.get_blob_client(self._name(hexdigest))
        settings = ContentSettings(
            content_type="application/octet-stream", content_md5=bytearray(md5)
        )
        if len(data) > _CHUNK:  # NB: a block upload; look first rather than send it all for a 409
            known = self._refresh(blob, data, md5, settings)
            if known is not None:
                return known
        try:
            blob.upload_blob(
                data, overwrite=False, metadata=self._stamp(), content_settings=settings
            )
            return True
        except ResourceExistsError as exc:
            if _code(exc) != StorageErrorCode.BLOB_ALREADY_EXISTS:
                raise
        except ResourceNotFoundError as exc:
            if _code(exc) != StorageErrorCode.CONTAINER_NOT_FOUND or not self._create:
                raise
            with contextlib.suppress(ResourceExistsError):  # created by someone else meanwhile
                self._client.create_container()
            return False
        return bool(self._refresh(blob, data, md5, settings))

    def _refresh(
        self, blob: BlobClient, data: bytes, md5: bytes, settings: ContentSettings
    ) -> bool | None:
        """Dedup an existing blob: True when done, None when it is absent, False when it
        changed while we looked (go round again)."""
        try:
            props = blob.get_blob_properties()
            stored_md5 = props.content_settings.content_md5
            if props.size == len(data) and (not stored_md5 or bytes(stored_md5) == md5):
                blob.set_blob_metadata(self._stamp())  # NB: new ETag, which fences GC's delete
            else:  # truncated or other bytes: replace it, unless it changed since we looked
                blob.upload_blob(
                    data,
                    overwrite=True,
                    metadata=self._stamp(),
                    content_settings=settings,
                    etag=props.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except ResourceNotFoundError:
            return None  # not there (or deleted by GC since): upload it
        except ResourceModifiedError:
            return False
        return True

    def get(self, digest: str) -> bytes:
        """The blob's bytes, rehashed (``CorruptionError`` naming the blob on a mismatch)."""
        hexdigest = check_digest(digest)
        self._check_open()
        name = self._name(hexdigest)
        blob = self._client.get_blob_client(name)
        for _ in range(_ATTEMPTS):
            try:
                data = blob.download_blob(max_concurrency=1).readall()
                break
            except ResourceNotFoundError:
                raise BlobNotFoundError(
                    f"blob {digest} is missing from the Azure CAS {self._where} (no blob {name})"
                ) from None
            except ResourceModifiedError:
                continue  # a put refreshed it between two chunks: read it again
            except AzureError as exc:
                raise self._error(f"read blob {digest}", exc) from exc
        else:
            raise StoreError(
                f"Azure CAS {self._where}: could not read blob {digest}: it changed during "
                f"each of {_ATTEMPTS} reads"
            )
        actual = hashlib.sha256(data).hexdigest()
        if actual != hexdigest:
            raise CorruptionError(
                f"blob {digest} in the Azure CAS {self._where} is corrupt: the blob {name} "
                f"holds {len(data)} bytes that hash to {ALGORITHM}:{actual}"
            )
        return data

    def has(self, digest: str) -> bool:
        """Whether a blob is stored under ``digest`` (its content is not checked)."""
        return self._properties(check_digest(digest), digest) is not None

    def _properties(self, hexdigest: str, digest: str) -> BlobProperties | None:
        self._check_open()
        blob = self._client.get_blob_client(self._name(hexdigest))
        try:
            return blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise self._error(f"look up blob {digest}", exc) from exc

    def delete(self, digest: str, *, older_than: float | None = None) -> bool:
        """Remove a blob (only if last put before ``older_than``, when given; see above)."""
        hexdigest = check_digest(digest)
        self._check_open()
        condition: dict[str, Any] = {}
        if older_than is not None:
            props = self._properties(hexdigest, digest)
            if props is None or _modified(props) >= older_than:
                return False
            condition = {"etag": props.etag, "match_condition": MatchConditions.IfNotModified}
        blob = self._client.get_blob_client(self._name(hexdigest))
        try:
            blob.delete_blob(delete_snapshots="include", **condition)
        except (ResourceNotFoundError, ResourceModifiedError):
            return False  # gone already, or put again since we looked
        except AzureError as exc:
            raise self._error(f"delete blob {digest}", exc) from exc
        return True

    def blobs(self) -> Iterator[BlobInfo]:
        """Every blob, in name (digest) order; foreign names under the prefix are skipped."""
        self._check_open()
        try:
            for props in self._client.list_blobs(
                name_starts_with=self._blobs, include=["metadata"]
            ):
                hexdigest = props.name[len(self._blobs) :]
                if _HEX.fullmatch(hexdigest):
                    yield BlobInfo(f"{ALGORITHM}:{hexdigest}", props.size, _modified(props))
        except ResourceNotFoundError as exc:
            if _code(exc) != StorageErrorCode.CONTAINER_NOT_FOUND:
                raise self._error("list the blobs", exc) from exc
        except AzureError as exc:
            raise self._error("list the blobs", exc) from exc

    def __iter__(self) -> Iterator[str]:
        return (info.digest for info in self.blobs())

    def close(self) -> None:
        """Close the client's connections and refuse further calls (idempotent)."""
        if not self._closed:
            self._closed = True
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AzureBlobCAS {self._where}>"


# --------------------------------------------------------------------------- helpers


def _modified(props: BlobProperties) -> float:
    """The blob's put time: its ``tpp_put`` metadata, else its Last-Modified."""
    try:
        stamp = float((props.metadata or {}).get(_META, "nan"))
    except ValueError:
        stamp = math.nan
    if math.isfinite(stamp):
        return stamp
    return float(props.last_modified.timestamp())


def _check_container(container: object) -> None:
    if not isinstance(container, str) or not _CONTAINER.fullmatch(container):
        raise ValueError(
            f"invalid Azure container name {container!r}: 3-63 lowercase letters, digits "
            "and single hyphens, beginning and ending with a letter or digit"
        )


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise ValueError(f"a blob name prefix is a str, got {type(prefix).__name__}")
    if not prefix:
        return ""
    segments = prefix.strip("/").split("/")
    bad = len(prefix) > 512 or prefix.startswith("/") or "\\" in prefix
    bad = bad or any(s in ("", ".", "..") or not s.isprintable() for s in segments)
    if bad:
        raise ValueError(
            f"invalid blob name prefix {prefix!r}: up to 512 printable characters in "
            "/-separated segments, none empty, '.' or '..', no leading '/' or backslash"
        )
    return "/".join(segments) + "/"


def _code(exc: AzureError) -> str | None:
    """The storage error code the SDK attaches to an HTTP error (``BlobNotFound``...)."""
    code = getattr(exc, "error_code", None)  # a str, or a StorageErrorCode (a str enum)
    return None if code is None else str(getattr(code, "value", code))


def _describe(exc: AzureError) -> str:
    first = (str(exc.message or exc).strip().splitlines() or [type(exc).__name__])[0]
    status = getattr(exc, "status_code", None)
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        return (
            f"authentication failed or access denied (HTTP {status} {_code(exc) or ''}; "
            f"check the key, SAS token or credential and its permissions): {first}"
        )
    if isinstance(exc, ServiceRequestError):
        return f"cannot reach the storage endpoint: {first}"
    if isinstance(exc, ServiceResponseError):
        return f"no complete reply from the storage endpoint: {first}"
    if isinstance(exc, HttpResponseError):
        return f"HTTP {exc.status_code} {_code(exc) or ''}: {first}".replace("  ", " ")
    return f"{type(exc).__name__}: {first}"
