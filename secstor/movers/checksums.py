"""CloudStack checksum strings: ``{SHA-256}<hex>``, ``{sha256}<hex>``, or bare hex (= MD5)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

# Canonical CloudStack name -> (hashlib name, hex digest length)
_ALGORITHMS = {
    "MD5": ("md5", 32),
    "SHA-1": ("sha1", 40),
    "SHA-224": ("sha224", 56),
    "SHA-256": ("sha256", 64),
    "SHA-384": ("sha384", 96),
    "SHA-512": ("sha512", 128),
}
# "SHA256", "sha-256", "Sha256" ... all name the same algorithm: compare upper-case, dash-less.
_ALIASES = {name.replace("-", ""): name for name in _ALGORITHMS}
_PREFIXED = re.compile(r"^\{([^{}]*)\}(.*)$", re.S)
_HEX = re.compile(r"^[0-9a-fA-F]+$")


class UnknownChecksumAlgorithm(ValueError):
    def __init__(self, algorithm: str) -> None:
        super().__init__(f"checksum algorithm not recognised: {algorithm}")
        self.algorithm = algorithm


def canonical_algorithm(name: str) -> str:
    """Any accepted spelling -> CloudStack's name (e.g. ``sha256`` -> ``SHA-256``)."""
    canonical = _ALIASES.get(name.strip().upper().replace("-", ""))
    if canonical is None:
        raise UnknownChecksumAlgorithm(name)
    return canonical


def hashlib_name(algorithm: str) -> str:
    return _ALGORITHMS[canonical_algorithm(algorithm)][0]


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # canonical CloudStack name
    hexdigest: str  # lower case

    def __str__(self) -> str:
        return f"{{{self.algorithm}}}{self.hexdigest}"


def parse_checksum(text: str) -> Checksum:
    if not isinstance(text, str) or not text.strip():
        raise ValueError("checksum is empty")
    text = text.strip()
    match = _PREFIXED.match(text)
    if match:
        algorithm, digest = canonical_algorithm(match.group(1)), match.group(2).strip()
    else:
        algorithm, digest = "MD5", text  # CloudStack's legacy form: bare hex is MD5
    expected_len = _ALGORITHMS[algorithm][1]
    if not _HEX.match(digest) or len(digest) != expected_len:
        raise ValueError(f"{algorithm} checksum must be {expected_len} hexadecimal digits, got {digest!r}")
    return Checksum(algorithm, digest.lower())


class MultiHasher:
    """Feed each chunk once to several hashes, so one pass over the data yields every digest."""

    def __init__(self, algorithms: Iterable[str]) -> None:
        names = dict.fromkeys(canonical_algorithm(a) for a in algorithms)  # ordered, unique
        # usedforsecurity=False: these verify integrity, and MD5 must still work on FIPS hosts.
        self._hashes = {name: hashlib.new(_ALGORITHMS[name][0], usedforsecurity=False) for name in names}

    def update(self, data: bytes) -> None:
        for h in self._hashes.values():
            h.update(data)

    def hexdigests(self) -> dict[str, str]:
        return {name: h.hexdigest() for name, h in self._hashes.items()}
