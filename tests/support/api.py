"""Calling the API as a client would: raw HTTP signed by the `cs` client's own code, and
accounts with their own keys for role tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
from cs import CloudStack

EXPIRES_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def served_commands() -> dict:
    """The commands a plain `secstor serve` offers: the registry without test-only commands
    that some test modules register in this process."""
    from secstor.api.registry import load_commands

    return {k: c for k, c in load_commands().items() if c.handler.__module__.startswith("secstor.")}


def cs_signed(command: str, params: dict[str, Any], key: str, secret: str, *,
              expires: datetime | None | str = "default") -> dict[str, str]:
    """Request parameters signed by cs's own signing routine (not secstor's), with
    signatureVersion=3 and `expires` (now + 10 min by default; None leaves both out)."""
    out = {k: str(v) for k, v in params.items()}
    out.update(command=command, apiKey=key, response="json")
    if expires == "default":
        expires = datetime.now(timezone.utc) + timedelta(minutes=10)
    if expires is not None:
        out["signatureVersion"] = "3"
        out["expires"] = expires if isinstance(expires, str) else expires.strftime(EXPIRES_FORMAT)
    CloudStack(endpoint="http://unused", key=key, secret=secret)._sign(out)
    return out


def check_envelope(response: httpx.Response) -> dict[str, Any]:
    """What every API answer must satisfy for cs and Marvin; returns the inner body."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert len(body) == 1, f"exactly one top-level key expected: {body}"
    inner = next(iter(body.values()))
    if response.status_code != 200:
        assert inner["errorcode"] == response.status_code
    return inner


def raw_call(server, command: str, params: dict[str, Any] | None = None, *, key: str | None = None,
             secret: str | None = None, method: str = "GET", **sign_kwargs) -> httpx.Response:
    """A signed call over plain HTTP (admin keys unless others are given)."""
    keys = server.admin_keys
    signed = cs_signed(command, params or {}, key or keys["apikey"], secret or keys["secretkey"], **sign_kwargs)
    if method == "GET":
        return httpx.get(server.api_url, params=signed, timeout=30)
    return httpx.post(server.api_url, data=signed, timeout=30)


@dataclass
class ApiUser:
    """An account with one user and API keys, plus a cs client signing with those keys."""

    account: dict[str, Any]
    user: dict[str, Any]
    apikey: str
    secretkey: str
    password: str
    cs: CloudStack


def create_api_user(server, admin_cs: CloudStack, name: str | None = None, *, accounttype: int = 0) -> ApiUser:
    name = name or f"u-{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    account = admin_cs.createAccount(username=name, password=password, accounttype=accounttype)["account"]
    user = account["user"][0]
    keys = admin_cs.registerUserKeys(id=user["id"])["userkeys"]
    return ApiUser(account=account, user=user, apikey=keys["apikey"], secretkey=keys["secretkey"],
                   password=password, cs=server.cs(key=keys["apikey"], secret=keys["secretkey"]))
