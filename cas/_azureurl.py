"""``azure://`` CAS URLs, parsed into ``AzureBlobCAS`` arguments (the forms: ``cas.azure``).

Imported by ``cas.azure`` only, so it may import the azure SDK.
"""

from __future__ import annotations

import importlib
import os
import urllib.parse
from typing import Any, Final

from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential, TokenCredential

__all__ = ["env_credential", "parse_url"]

NUMBERS: Final[dict[str, type]] = {
    "retries": int,
    "connection_timeout": float,
    "read_timeout": float,
}
OPTIONS: Final = ("api_version", "connection_string", *NUMBERS)


def parse_url(
    url: str, *, numbers: dict[str, type] = NUMBERS, what: str = "CAS"
) -> tuple[str, str, dict[str, Any]]:
    """``(account, container, keyword arguments)`` for ``AzureBlobCAS`` from an ``azure://`` URL.

    >>> parse_url("azure://cas/team?connection_string=UseDevelopmentStorage%3Dtrue&retries=0")
    ('UseDevelopmentStorage=true', 'cas', {'retries': 0, 'prefix': 'team'})
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "azure" or not parts.netloc:
        raise ValueError(
            f"an Azure {what} URL looks like azure://CONTAINER or "
            f"azure://ACCOUNT.blob.core.windows.net/CONTAINER, got {redact(url)!r}"
        )
    opts = _options(url, parts.query, ("api_version", "connection_string", *numbers), what)
    kwargs: dict[str, Any] = {}
    for key, kind in numbers.items():
        if key in opts:
            try:
                kwargs[key] = kind(opts[key])
            except ValueError:
                raise ValueError(
                    f"{key}={opts[key]!r} in an Azure {what} URL is not a number"
                ) from None
    if "api_version" in opts:
        kwargs["api_version"] = opts["api_version"]
    path = urllib.parse.unquote(parts.path).strip("/")
    if "." not in parts.netloc:  # NB: a container name (they have no dots): a connection string
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


def env_credential(host: str) -> AzureNamedKeyCredential | AzureSasCredential | TokenCredential:
    """The account URL form's credential, from the environment as the ``az`` CLI names it.

    ``AZURE_STORAGE_KEY`` (the account's key; the account is the host's first
    label), else ``AZURE_STORAGE_SAS_TOKEN``, else azure-identity's
    ``DefaultAzureCredential`` when that package is installed.
    """
    key = os.environ.get("AZURE_STORAGE_KEY")
    if key:
        return AzureNamedKeyCredential(host.split(".", 1)[0], key)
    sas = os.environ.get("AZURE_STORAGE_SAS_TOKEN")
    if sas:
        return AzureSasCredential(sas.lstrip("?"))
    try:
        identity = importlib.import_module("azure.identity")
    except ImportError:
        raise ValueError(
            f"no credential for https://{host}: set AZURE_STORAGE_KEY or "
            "AZURE_STORAGE_SAS_TOKEN, install azure-identity (DefaultAzureCredential), or "
            "use azure://CONTAINER with AZURE_STORAGE_CONNECTION_STRING"
        ) from None
    credential: TokenCredential = identity.DefaultAzureCredential()
    return credential


def _options(url: str, query: str, options: tuple[str, ...], what: str) -> dict[str, str]:
    """The URL's options, percent-decoded ("+" stays "+": account keys are base64)."""
    opts: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        if key not in options or key in opts:
            raise ValueError(
                f"unknown or repeated Azure {what} URL option {key!r} in {redact(url)!r}: "
                f"azure:// takes {', '.join(options)}"
            )
        opts[key] = urllib.parse.unquote(value)
    return opts


def redact(url: str) -> str:
    """``url`` without its options, which may hold a secret (a connection string).

    >>> redact("azure://cas?connection_string=AccountKey%3Dsecret")
    'azure://cas?...'
    """
    return url.split("?", 1)[0] + ("?..." if "?" in url else "")
