"""CloudStack request signing (HMAC-SHA1 over the sorted, lower-cased query string).

Used by the server to verify requests and by ``secstor api`` to sign them, so both sides
share one definition. Matches the `cs` client byte for byte: keys sorted as received
(case-sensitive), values quoted with only ``*`` kept safe, the whole string lower-cased.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

EXPIRES_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def canonical_string(params: dict[str, str]) -> str:
    pairs = sorted((k, v) for k, v in params.items() if k.lower() != "signature")
    return "&".join(f"{k}={quote(str(v), safe='*')}" for k, v in pairs).lower()


def sign(params: dict[str, str], secret: str) -> str:
    digest = hmac.new(secret.encode(), canonical_string(params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify(params: dict[str, str], secret: str, signature: str) -> bool:
    expected = sign(params, secret)
    return hmac.compare_digest(expected, signature)


def format_expires(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(EXPIRES_FORMAT)


def parse_expires(value: str) -> datetime:
    """Accept cs's ``2025-06-01T10:00:00+0000`` and ISO forms with ``Z`` or ``+00:00``."""
    text = value.strip().replace(" ", "+")
    if text.endswith("Z"):
        text = text[:-1] + "+0000"
    for fmt in (EXPIRES_FORMAT, "%Y-%m-%dT%H:%M:%S.%f%z"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return datetime.fromisoformat(text)


def signed_params(command: str, params: dict[str, str], api_key: str, secret: str, *, ttl: int = 600) -> dict[str, str]:
    """Complete request parameters with apiKey, version-3 expiry and signature."""
    out = {k: str(v) for k, v in params.items()}
    out.update(command=command, apiKey=api_key, response="json", signatureVersion="3",
               expires=format_expires(datetime.now(timezone.utc) + timedelta(seconds=ttl)))
    out["signature"] = sign(out, secret)
    return out
