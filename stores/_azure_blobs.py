"""AzureBlobStore's requests: one method per REST operation it uses, Azure errors mapped.

Imported by ``stores.azure`` only, so it may import the Azure SDK.  Every
method sends exactly the requests its name says (the SDK's own retries aside),
so the request counts of :mod:`stores._azure_metrics` read off the code.

Errors: what a caller acts on is a small exception of its own (``Moved``: an
append-position condition failed; ``Sealed``: an inbox segment is closed;
``Changed``: an ETag condition failed; ``Unsure``: the request may or may not
have been applied -- a timeout, a dropped connection, a 5xx); everything else
becomes ``StoreError`` naming the container and what was being done.  A missing
blob is ``None`` (reads) or ``Missing`` (appends).

Client settings come from ``cas.azure`` (the approach is the same): a call makes
``retries + 1`` attempts ~0.25 then ~0.5 s apart with a short connect and read
timeout, so an outage surfaces as ``StoreError`` in a few seconds, not 83 s.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Final, NamedTuple, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobLeaseClient, BlobProperties, ContainerClient

from cas.azure import _code, _describe
from engine._errors import StoreError

from ._azure_metrics import CountingRetry, RequestCounter

__all__ = [
    "MAX_BLOCK",
    "Blobs",
    "Changed",
    "Missing",
    "Moved",
    "Read",
    "Sealed",
    "Unsure",
    "container_client",
]

_T = TypeVar("_T")

_POSITION: Final = "AppendPositionConditionNotMet"
_LEASE_MISSING: Final = "LeaseIdMissing"
_CONTAINER_MISSING: Final = "ContainerNotFound"
MAX_BLOCK: Final = 4 << 20  # the most one Append Block carries (Azure's limit)


class Moved(Exception):
    """412: the blob is not as long as the append said (someone else appended)."""


class Sealed(Exception):
    """412: the blob is leased (an inbox segment sealed by its owner): write the next one."""


class Changed(Exception):
    """412: the blob's ETag is not the one the write was conditioned on."""


class Missing(Exception):
    """404: the blob (or the container) is not there."""


class Unsure(StoreError):
    """The request may or may not have been applied (timeout, dropped connection, 5xx)."""


def container_client(
    account: str,
    container: str,
    credential: Any,
    counter: RequestCounter,
    *,
    retries: int,
    connection_timeout: float,
    read_timeout: float,
    api_version: str | None,
) -> ContainerClient:
    """A client for ``account`` (a connection string or an account URL), counted and quick."""
    options: dict[str, Any] = {
        "retry_policy": CountingRetry(
            counter,
            attempt_timeout=read_timeout,
            retry_total=retries,
            retry_connect=retries,
            retry_read=retries,
            retry_status=retries,
            random_jitter_range=0,
        ),
        "raw_request_hook": counter.attempt_hook,
        "connection_timeout": connection_timeout,
        "read_timeout": read_timeout,
        "max_single_put_size": MAX_BLOCK,
        "max_block_size": MAX_BLOCK,
    }
    if api_version is not None:
        options["api_version"] = api_version
    if not any(k.lower().endswith("_proxy") for k in os.environ):
        # NB: requests scans the whole environment for proxies at every request
        # (~1 ms each here); with no proxy configured there is nothing to find
        options["use_env_settings"] = False
    if account.startswith(("https://", "http://")):
        return ContainerClient(account, container, credential=credential, **options)
    if "=" in account:
        return ContainerClient.from_connection_string(
            account, container, credential=credential, **options
        )
    raise ValueError(
        f"{account[:40]!r} is neither a connection string (KEY=VALUE;...) nor an "
        "account URL (https://ACCOUNT.blob.core.windows.net)"
    )


class Read(NamedTuple):
    """A blob read from ``offset`` to its end."""

    data: bytes
    size: int  # the blob's length (offset + len(data))
    blocks: int  # committed blocks (append blobs)
    etag: str
    metadata: dict[str, str]
    sealed: bool  # leased without end (an inbox segment closed for writers)


def _status(exc: AzureError) -> int | None:
    return getattr(exc, "status_code", None)


def _unsure(exc: AzureError) -> bool:
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return True
    status = _status(exc)
    return status is not None and (status >= 500 or status == 408)


class Blobs:
    """The store's container, as the few operations the store needs."""

    def __init__(self, client: ContainerClient, where: str) -> None:
        self.client = client
        self.where = where
        self._container_ok = False

    # ------------------------------------------------------------------ errors

    def error(self, doing: str, exc: AzureError) -> StoreError:
        kind = Unsure if _unsure(exc) else StoreError
        return kind(f"Azure store {self.where}: could not {doing}: {_describe(exc)}")

    def call(self, doing: str, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except AzureError as exc:
            raise self.error(doing, exc) from exc

    def ensure_container(self) -> None:
        """Create the container once per handle (before its first write)."""
        if self._container_ok:
            return
        try:
            self.client.create_container()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise self.error("create the container", exc) from exc
        self._container_ok = True

    # ------------------------------------------------------------------ append blobs

    def create_append(self, name: str, metadata: dict[str, str] | None = None) -> bool:
        """Create an empty append blob unless it exists (never replaces one): True if created."""
        self.ensure_container()
        blob = self.client.get_blob_client(name)
        try:
            blob.create_append_blob(metadata=metadata, if_none_match="*")
        except ResourceExistsError:
            return False
        except HttpResponseError as exc:
            if _status(exc) in (409, 412):
                return False
            raise self.error(f"create {name}", exc) from exc
        except AzureError as exc:
            raise self.error(f"create {name}", exc) from exc
        return True

    def append(self, name: str, data: bytes, position: int | None) -> tuple[int, str]:
        """Append one block at ``position`` (None: wherever the end is): (blocks, etag)."""
        blob = self.client.get_blob_client(name)
        kwargs: dict[str, Any] = {}
        if position is not None:
            kwargs["appendpos_condition"] = position
        try:
            r = blob.append_block(data, length=len(data), **kwargs)
        except HttpResponseError as exc:
            code = _code(exc)
            if _status(exc) == 412 and code == _POSITION:
                raise Moved from None
            if _status(exc) == 412 and code == _LEASE_MISSING:
                raise Sealed from None
            if _status(exc) == 404:
                raise Missing from None
            raise self.error(f"append to {name}", exc) from exc
        except AzureError as exc:
            raise self.error(f"append to {name}", exc) from exc
        return int(str(r["blob_committed_block_count"])), str(r["etag"])

    def read(self, name: str, offset: int = 0) -> Read | None:
        """The blob from ``offset`` on, in one GET; None if it is missing.

        NB: the range starts one byte early, so that reading at the very end is
        an empty answer rather than a 416 (Azure) -- a 416 then means the blob
        is shorter than ``offset``: ``ValueError``.
        """
        blob = self.client.get_blob_client(name)
        start = max(0, offset - 1)
        try:
            if start:
                stream = blob.download_blob(offset=start, max_concurrency=1)
            else:
                stream = blob.download_blob(max_concurrency=1)
            data = stream.readall()
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            if _status(exc) == 416:
                raise ValueError(f"{name} is shorter than {offset} bytes") from None
            raise self.error(f"read {name}", exc) from exc
        except AzureError as exc:
            raise self.error(f"read {name}", exc) from exc
        props = stream.properties
        if offset:
            if not data:
                raise ValueError(f"{name} is shorter than {offset} bytes")
            data = data[1:]
        lease = props.lease
        return Read(
            data=data,
            size=offset + len(data),
            blocks=int(props.append_blob_committed_block_count or 0),
            etag=str(props.etag),
            metadata=dict(props.metadata or {}),
            sealed=lease.state == "leased" and lease.duration == "infinite",
        )

    # ------------------------------------------------------------------ block blobs, metadata

    def upload(
        self,
        name: str,
        data: bytes,
        *,
        new: bool = False,
        lease: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str | None:
        """Write a block blob (``new``: only if absent -> None when it exists); its ETag."""
        self.ensure_container()
        blob = self.client.get_blob_client(name)
        kwargs: dict[str, Any] = {"overwrite": not new}
        if new:
            kwargs["if_none_match"] = "*"
        if lease is not None:
            kwargs["lease"] = lease
        try:
            r = blob.upload_blob(data, metadata=metadata, **kwargs)
        except ResourceExistsError:
            if new:
                return None
            raise
        except HttpResponseError as exc:
            if new and _status(exc) in (409, 412):
                return None
            if _status(exc) == 412:
                raise Changed from None
            raise self.error(f"write {name}", exc) from exc
        except AzureError as exc:
            raise self.error(f"write {name}", exc) from exc
        return str(r["etag"])

    def touch(self, name: str) -> datetime:
        """Write an empty block blob; its Last-Modified (the service's clock)."""
        self.ensure_container()
        blob = self.client.get_blob_client(name)
        r = self.call(f"write {name}", lambda: blob.upload_blob(b"", overwrite=True))
        when: datetime = r["last_modified"]
        return when

    def get(self, name: str) -> tuple[bytes, str] | None:
        """A whole (small) blob and its ETag, or None."""
        r = self.read(name)
        return None if r is None else (r.data, r.etag)

    def properties(self, name: str) -> BlobProperties | None:
        blob = self.client.get_blob_client(name)
        try:
            return blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise self.error(f"look up {name}", exc) from exc

    def set_metadata(self, name: str, metadata: dict[str, str], etag: str) -> str:
        """Replace the metadata if the ETag is still ``etag`` (else ``Changed``); new ETag."""
        blob = self.client.get_blob_client(name)
        try:
            r = blob.set_blob_metadata(
                metadata, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except HttpResponseError as exc:
            if _status(exc) == 412:
                raise Changed from None
            if _status(exc) == 404:
                raise Missing from None
            raise self.error(f"update the metadata of {name}", exc) from exc
        except AzureError as exc:
            raise self.error(f"update the metadata of {name}", exc) from exc
        return str(r["etag"])

    def delete(self, name: str) -> None:
        """Delete ``name``; one that is gone already is fine."""
        try:
            self.client.get_blob_client(name).delete_blob()
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise self.error(f"delete {name}", exc) from exc

    def list(self, prefix: str) -> Iterator[BlobProperties]:
        """Blobs under ``prefix`` with their metadata and lease state (none if no container)."""
        try:
            yield from self.client.list_blobs(name_starts_with=prefix, include=["metadata"])
        except ResourceNotFoundError as exc:
            if _code(exc) != _CONTAINER_MISSING:
                raise self.error(f"list {prefix}", exc) from exc
        except AzureError as exc:
            raise self.error(f"list {prefix}", exc) from exc

    # ------------------------------------------------------------------ leases

    def acquire(self, name: str, lease_id: str, seconds: int) -> str | None:
        """Lease ``name`` as ``lease_id`` (-1: no end); its ETag, or None if another holds it."""
        lease = BlobLeaseClient(self.client.get_blob_client(name), lease_id=lease_id)
        try:
            lease.acquire(lease_duration=seconds)
        except HttpResponseError as exc:
            if _status(exc) in (409, 412):
                return None
            if _status(exc) == 404:
                raise Missing from None
            raise self.error(f"lease {name}", exc) from exc
        except AzureError as exc:
            raise self.error(f"lease {name}", exc) from exc
        return str(lease.etag)

    def renew(self, name: str, lease_id: str) -> bool:
        """Renew our lease; False when it is lost (expired and taken, or broken)."""
        lease = BlobLeaseClient(self.client.get_blob_client(name), lease_id=lease_id)
        try:
            lease.renew()
        except HttpResponseError as exc:
            if _status(exc) in (409, 412, 404):
                return False
            raise self.error(f"renew the lease on {name}", exc) from exc
        except AzureError as exc:
            raise self.error(f"renew the lease on {name}", exc) from exc
        return True

    def release(self, name: str, lease_id: str) -> None:
        lease = BlobLeaseClient(self.client.get_blob_client(name), lease_id=lease_id)
        try:
            lease.release()
        except HttpResponseError as exc:
            if _status(exc) not in (409, 412, 404):
                raise self.error(f"release the lease on {name}", exc) from exc
        except AzureError as exc:
            raise self.error(f"release the lease on {name}", exc) from exc
