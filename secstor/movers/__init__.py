"""Moving data between stores with checksums verified on the way."""

from .checksums import Checksum, MultiHasher, UnknownChecksumAlgorithm, hashlib_name, parse_checksum
from .transfer import (
    ChecksumMismatch,
    SizeLimitExceeded,
    TransferError,
    TransferResult,
    copy_verified,
    verify_object,
    write_verified,
)

__all__ = [
    "Checksum",
    "ChecksumMismatch",
    "MultiHasher",
    "SizeLimitExceeded",
    "TransferError",
    "TransferResult",
    "UnknownChecksumAlgorithm",
    "copy_verified",
    "hashlib_name",
    "parse_checksum",
    "verify_object",
    "write_verified",
]
