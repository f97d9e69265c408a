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

from typing import Any, Final

from cas._azureurl import parse_url

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
    return parse_url(url, numbers=_NUMBERS, what="store")
