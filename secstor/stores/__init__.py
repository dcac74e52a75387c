"""Image store drivers: one interface (base.StoreDriver), one driver per provider."""

from .base import (
    Capability,
    Capacity,
    CheckResult,
    InvalidStoreParameter,
    ObjectInfo,
    ObjectNotFound,
    ObjectWriter,
    StoreDriver,
    StoreError,
    StoreFull,
    StoreUnavailable,
)
from .factory import driver_for
from .local import LocalDriver, copy_file_sparse
from .nfs import NfsDriver, NfsMounter, NfsOptions, is_mount_point, parse_nfs_url
from .s3 import S3Config, S3Driver

__all__ = [
    "Capability",
    "Capacity",
    "CheckResult",
    "InvalidStoreParameter",
    "LocalDriver",
    "NfsDriver",
    "NfsMounter",
    "NfsOptions",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectWriter",
    "S3Config",
    "S3Driver",
    "StoreDriver",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "copy_file_sparse",
    "driver_for",
    "is_mount_point",
    "parse_nfs_url",
]
