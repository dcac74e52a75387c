"""Build a driver from an image store row as CloudStack describes it (provider, url, details)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from urllib.parse import unquote, urlsplit

from .base import InvalidStoreParameter, StoreDriver
from .local import LocalDriver
from .nfs import NfsDriver, NfsMounter, parse_nfs_url
from .s3 import S3Config, S3Driver


def _bool(value: str) -> bool:
    v = str(value).strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise ValueError(f"must be true or false, got {value!r}")


def _int(value: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"must be an integer, got {value!r}") from None


def _text(value: str) -> str:
    return str(value).strip()


def _lower(value: str) -> str:
    return _text(value).lower()


# CloudStack detail name -> (S3Config field, parser).  Values arrive as strings.
_S3_DETAILS: dict[str, tuple[str, Callable[[str], object]]] = {
    "accesskey": ("access_key", _text),
    "secretkey": ("secret_key", _text),
    "endpoint": ("endpoint", _text),
    "bucket": ("bucket", _text),
    "usehttps": ("use_https", _bool),
    "s3signer": ("signer", _text),
    "connectiontimeout": ("connection_timeout_ms", _int),
    "maxerrorretry": ("max_error_retry", _int),
    "sockettimeout": ("socket_timeout_ms", _int),
    "connectionttl": ("connection_ttl_ms", _int),
    "usetcpkeepalive": ("use_tcp_keepalive", _bool),
    "region": ("region", _text),
    "pathstyle": ("path_style", _bool),
    "checksummode": ("checksum_mode", _lower),
    "prefix": ("prefix", _text),
    "quotabytes": ("quota_bytes", _int),
    "proxy": ("proxy", _text),
    # Multipart tuning: memory per upload is at most (uploadconcurrency + 1) x partsize.
    "partsize": ("part_size", _int),
    "uploadconcurrency": ("max_concurrency", _int),
    "singleputmax": ("single_put_max", _int),
}
_REQUIRED = ("accesskey", "secretkey", "endpoint", "bucket")
_FIELD_TO_DETAIL = {field: detail for detail, (field, _) in _S3_DETAILS.items()}


def s3_config_from_details(details: Mapping[str, str]) -> S3Config:
    """Parse CloudStack's S3 image store details; errors name the detail, not our field."""
    given = {str(k).lower(): v for k, v in (details or {}).items()}
    for name in _REQUIRED:
        if not str(given.get(name) or "").strip():
            raise InvalidStoreParameter(name, "is required for an S3 image store")
    kwargs = {}
    for name, (field, parse) in _S3_DETAILS.items():
        value = given.get(name)
        if value is None or str(value).strip() == "":
            continue  # CloudStack sends empty strings for unset optional details
        try:
            kwargs[field] = parse(value)
        except ValueError as exc:
            raise InvalidStoreParameter(name, str(exc)) from None
    try:
        return S3Config(**kwargs)
    except InvalidStoreParameter as exc:
        raise InvalidStoreParameter(_FIELD_TO_DETAIL.get(exc.param, exc.param), exc.reason) from None


def local_path_from_url(url: str) -> str:
    """``file:///abs/path`` -> ``/abs/path``."""
    parts = urlsplit(str(url or "").strip())
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise InvalidStoreParameter("url", f"a Local store needs file:///absolute/path, got {url!r}")
    path = unquote(parts.path)
    if not path.startswith("/") or ".." in path.split("/"):
        raise InvalidStoreParameter("url", f"a Local store needs an absolute path without '..', got {url!r}")
    return os.path.normpath(path)


def driver_for(
    provider: str, url: str, details: Mapping[str, str] | None, *, mounter: NfsMounter | None
) -> StoreDriver:
    kind = str(provider or "").strip().lower()
    if kind == "local":
        return LocalDriver(local_path_from_url(url))
    if kind == "nfs":
        try:
            parse_nfs_url(url)
        except ValueError as exc:
            raise InvalidStoreParameter("url", str(exc)) from None
        if mounter is None:
            raise ValueError("an NFS store needs an NfsMounter")
        return NfsDriver(url, mounter)
    if kind == "s3":
        return S3Driver(s3_config_from_details(details or {}))
    raise InvalidStoreParameter("provider", f"must be Local, NFS or S3, got {provider!r}")
