"""``azure://`` store URLs, parsed into ``AzureBlobStore`` arguments (the forms of ``cas.open``).

::

    azure://CONTAINER[/PREFIX][?OPTIONS]                       connection string
    azure://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX][?OPTIONS]   account URL

The first form (the host is a container name, which never has a dot) takes its
connection string from the ``connection_string`` option (percent-encoded) or
``$AZURE_STORAGE_CONNECTION_STRING`` (Azurite's included).  The second is always
https and takes its credential from the environment as ``cas.open`` does
(``AZURE_STORAGE_KEY``, ``AZURE_STORAGE_SAS_TOKEN``, else azure-identity).

Options: ``connection_string``, ``api_version``, ``retries``,
``connection_timeout``, ``read_timeout`` (as ``cas.open``), and the store's own
``partitions``, ``lease_seconds``, ``poll_interval``.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any, Final

from cas._azureurl import env_credential, redact

__all__ = ["parse_store_url"]

_NUMBERS: Final[dict[str, type]] = {
    "retries": int,
    "connection_timeout": float,
    "read_timeout": float,
    "partitions": int,
    "lease_seconds": int,
    "poll_interval": float,
}
OPTIONS: Final = ("api_version", "connection_string", *_NUMBERS)


def parse_store_url(url: str) -> tuple[str, str, dict[str, Any]]:
    """``(account, container, keyword arguments)`` for ``AzureBlobStore`` from an ``azure://`` URL.

    >>> parse_store_url("azure://runs/team?connection_string=UseDevelopmentStorage%3Dtrue"
    ...                 "&partitions=16")
    ('UseDevelopmentStorage=true', 'runs', {'partitions': 16, 'prefix': 'team'})
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "azure" or not parts.netloc:
        raise ValueError(
            "an Azure store URL looks like azure://CONTAINER or "
            f"azure://ACCOUNT.blob.core.windows.net/CONTAINER, got {redact(url)!r}"
        )
    opts: dict[str, str] = {}
    for part in filter(None, parts.query.split("&")):
        key, _, value = part.partition("=")
        if key not in OPTIONS or key in opts:
            raise ValueError(
                f"unknown or repeated Azure store URL option {key!r} in {redact(url)!r}: "
                f"azure:// takes {', '.join(OPTIONS)}"
            )
        opts[key] = urllib.parse.unquote(value)  # NB: "+" stays "+": account keys are base64
    kwargs: dict[str, Any] = {}
    for key, kind in _NUMBERS.items():
        if key in opts:
            try:
                kwargs[key] = kind(opts[key])
            except ValueError:
                raise ValueError(
                    f"{key}={opts[key]!r} in an Azure store URL is not a number"
                ) from None
    if "api_version" in opts:
        kwargs["api_version"] = opts["api_version"]
    path = urllib.parse.unquote(parts.path).strip("/")
    if "." not in parts.netloc:  # a container name: a connection string
        account = opts.get("connection_string") or os.environ.get(
            "AZURE_STORAGE_CONNECTION_STRING", ""
        )
        if not account:
            raise ValueError(
                f"{redact(url)!r} needs a connection string: set "
                "AZURE_STORAGE_CONNECTION_STRING or add ?connection_string=... "
                "(percent-encoded); or use azure://ACCOUNT.blob.core.windows.net/CONTAINER"
            )
        kwargs["prefix"] = path
        return account, parts.netloc, kwargs
    if "connection_string" in opts:
        raise ValueError(
            "connection_string goes with the azure://CONTAINER form, not with an account host"
        )
    container, _, prefix = path.partition("/")
    if not container:
        raise ValueError(f"{redact(url)!r} names no container: azure://{parts.netloc}/CONTAINER")
    kwargs.update(prefix=prefix, credential=env_credential(parts.netloc))
    return f"https://{parts.netloc}", container, kwargs
