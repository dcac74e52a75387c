"""Signed, expiring transfer tickets: the upload POST URLs and the extract download URLs that let
a browser or curl move a template's bytes without API keys.

The signing key is derived from the secret key file, never from a user's API secret: every
process of one installation signs and verifies alike, and a ticket that leaks grants one
transfer until it expires, not the user's account.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from secstor.security.secrets import SecretBox

KEY_PURPOSE = "secstor transfer tickets v1"


class TicketRefused(Exception):
    """A ticket that is forged, tampered with, expired or already used."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class UploadTicket:
    """What getUploadParamsFor* returns: the browser sends metadata, expires and signature back
    as the X-metadata, X-expires and X-signature headers of its POST to post_url."""

    post_url: str
    metadata: str
    expires: str
    signature: str


def format_expires(moment: datetime) -> str:
    """CloudStack's format for upload expiry (Joda's ISO form): ``2025-06-01T10:00:00.000Z``."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TicketSigner:
    def __init__(self, key: bytes):
        self._key = key

    @classmethod
    def for_secrets(cls, secrets: SecretBox) -> "TicketSigner":
        return cls(secrets.derive_key(KEY_PURPOSE))

    def _mac(self, *parts: str) -> bytes:
        # A separator no part can contain, so ("ab", "c") and ("a", "bc") sign differently.
        return hmac.new(self._key, "\n".join(parts).encode(), hashlib.sha256).digest()

    # ---- uploads: CloudStack's shape (metadata, expires, signature over metadata+url+expires) --

    def issue_upload(self, post_url: str, payload: dict[str, Any], expires: datetime) -> UploadTicket:
        metadata = base64.b64encode(json.dumps(payload, sort_keys=True).encode()).decode()
        expires_text = format_expires(expires)
        signature = base64.b64encode(self._mac(metadata, post_url, expires_text)).decode()
        return UploadTicket(post_url, metadata, expires_text, signature)

    def verify_upload(self, post_url: str, metadata: str | None, expires: str | None, signature: str | None,
                      now: datetime) -> dict[str, Any]:
        """The payload of a genuine, unexpired upload ticket for ``post_url``; TicketRefused otherwise."""
        if not metadata or not expires or not signature:
            raise TicketRefused("the X-signature, X-metadata and X-expires headers are required")
        expected = base64.b64encode(self._mac(metadata, post_url, expires))
        if not hmac.compare_digest(expected, signature.strip().encode(errors="replace")):
            raise TicketRefused("signature mismatch: the upload parameters were altered or are not for this URL")
        # Signed by us, so they parse; should they not, that is a refusal, never a 500.
        try:
            deadline = datetime.fromisoformat(expires)
            payload = json.loads(base64.b64decode(metadata, validate=True))
        except (ValueError, binascii.Error):
            raise TicketRefused("malformed upload parameters") from None
        if now >= deadline:
            raise TicketRefused(f"the upload URL expired at {expires}")
        return payload

    # ---- extract URLs: one self-contained token in the path -----------------------------------

    def issue_token(self, payload: dict[str, Any], expires: datetime) -> str:
        body = _b64url(json.dumps({**payload, "exp": int(expires.timestamp())}, sort_keys=True).encode())
        return f"{body}.{_b64url(self._mac(body))}"

    def verify_token(self, token: str, now: datetime) -> dict[str, Any]:
        """The payload of a genuine, unexpired token; TicketRefused otherwise."""
        body, _, mac = token.partition(".")
        try:
            genuine = hmac.compare_digest(_unb64url(mac), self._mac(body))
        except (ValueError, binascii.Error):
            genuine = False
        if not genuine:
            raise TicketRefused("invalid download URL")
        payload = json.loads(_unb64url(body))
        if now.timestamp() >= payload["exp"]:
            raise TicketRefused("the download URL has expired")
        return payload
