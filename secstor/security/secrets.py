"""Encryption of secrets at rest (S3 keys, users' API secret keys).

The Fernet key lives in a file outside the database (``<home>/secret.key`` by default, mode
0600). Every process that shares a database must be given the same key file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    def __init__(self, key: bytes):
        self._fernet = Fernet(key)
        self._key = key

    def derive_key(self, purpose: str) -> bytes:
        """A key for one purpose (signing transfer URLs ...), derived from the key file so no
        second secret has to be shared between processes; it reveals nothing of the file's key."""
        return hmac.new(self._key, purpose.encode(), hashlib.sha256).digest()

    @classmethod
    def from_file(cls, path: Path, *, create: bool) -> "SecretBox":
        if not path.exists():
            if not create:
                raise FileNotFoundError(f"secret key file {path} is missing")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError("secret cannot be decrypted: wrong secret key file?") from None

    def encrypt_json(self, data: dict) -> str:
        return self.encrypt(json.dumps(data, sort_keys=True))

    def decrypt_json(self, token: str | None) -> dict:
        return json.loads(self.decrypt(token)) if token else {}
