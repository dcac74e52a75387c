"""A small signed HTTP client for the CloudStack API, used by `secstor api`.

Requests are signed with ``secstor.security.signing`` (the same code the server verifies
with) and sent as form POSTs, so long parameter lists never hit URL length limits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from secstor.security.signing import signed_params


class ClientError(Exception):
    """The call could not be made or its reply is not a CloudStack envelope."""


class ApiError(Exception):
    """The server answered with a CloudStack error envelope."""

    def __init__(self, status: int, errorcode: int, errortext: str, body: dict[str, Any]):
        super().__init__(f"Error {errorcode}: {errortext}")
        self.status = status
        self.errorcode = errorcode
        self.errortext = errortext
        self.body = body


@dataclass(frozen=True)
class Credentials:
    api_key: str
    secret_key: str


def resolve_credentials(api_key: str | None, secret_key: str | None, keys_file: Path) -> Credentials:
    """Explicit keys (flags or SECSTOR_API_KEY/SECSTOR_SECRET_KEY) win; else the home's admin keys."""
    if api_key or secret_key:
        if not (api_key and secret_key):
            raise ClientError("give both --apikey and --secretkey (or SECSTOR_API_KEY and SECSTOR_SECRET_KEY)")
        return Credentials(api_key, secret_key)
    try:
        data = json.loads(keys_file.read_text())
        return Credentials(data["apikey"], data["secretkey"])
    except FileNotFoundError:
        raise ClientError(f"no API keys: {keys_file} does not exist (it is written by the first "
                          "`secstor serve`); give --apikey/--secretkey or --home") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClientError(f"cannot read API keys from {keys_file}: {exc}") from None


def default_api_url(public_url: str) -> str:
    """The API endpoint behind a service base URL; a wildcard listen address means this host."""
    url = httpx.URL(public_url)
    if url.host in ("0.0.0.0", "::", ""):
        url = url.copy_with(host="127.0.0.1")
    return str(url.copy_with(path="/client/api"))


class ApiClient:
    def __init__(self, url: str, credentials: Credentials, *, timeout: float = 60.0):
        self.url = url
        self.credentials = credentials
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, command: str, params: dict[str, str]) -> dict[str, Any]:
        """The raw JSON body of a successful call (``{"<command>response": {...}}``)."""
        form = signed_params(command, params, self.credentials.api_key, self.credentials.secret_key)
        try:
            reply = self._http.post(self.url, data=form)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}") from None
        try:
            body = reply.json()
        except ValueError:
            raise ClientError(f"{self.url} answered HTTP {reply.status_code} without a JSON body; "
                              "is it a secstor or CloudStack API endpoint?") from None
        inner = unwrap(body)
        if isinstance(inner, dict) and "errorcode" in inner:
            raise ApiError(reply.status_code, int(inner["errorcode"]), str(inner.get("errortext", "")), body)
        if reply.status_code != 200:
            raise ClientError(f"{self.url} answered HTTP {reply.status_code}: {reply.text[:200]}")
        return body


def unwrap(body: Any) -> Any:
    """The object under the envelope's single ``<command>response`` key."""
    if isinstance(body, dict) and len(body) == 1:
        return next(iter(body.values()))
    raise ClientError(f"not a CloudStack envelope (one top-level key expected): {str(body)[:200]}")
