"""Fixtures of the snapshot tests: the volume tests' zones with pools and image stores, and
helpers to write known content into a volume's file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from cs import CloudStackApiException

from tests.volumes.conftest import (fast_admin, fast_user, images, loopback_allowed, make_zone, pool_zone,  # noqa: F401
                                    ready_template, serve, wait_for, web)

MIB = 1 << 20


def api_error(call, **params) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        call(**params)
    return err.value.error


def content(path: Path) -> str:
    """A digest that is equal for two files exactly when their sizes and bytes are, computed by
    reading only the data extents (a 1 GiB sparse volume would cost seconds to read whole)."""
    block = 64 * 1024
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest.update(size.to_bytes(8, "big"))
        offset = 0
        while offset < size:
            try:
                start = os.lseek(f.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(f.fileno(), start, os.SEEK_HOLE)
            for pos in range(start - start % block, end, block):
                data = os.pread(f.fileno(), block, pos)
                if data.strip(b"\0"):  # zeros read back the same as a hole
                    digest.update(pos.to_bytes(8, "big") + hashlib.sha256(data).digest())
            offset = end
    return digest.hexdigest()


def write_pattern(path: Path, seed: int) -> str:
    """Overwrite three scattered 64 KiB extents of the file (the rest stays as it was, holes too);
    return the content digest of the result."""
    with open(path, "r+b") as f:
        for offset in (0, 3 * MIB + 4096, 7 * MIB):
            f.seek(offset)
            f.write(bytes((seed + i) % 251 for i in range(64 * 1024)))
    return content(path)


def store_root(cs, zone_id: str) -> Path:
    store = cs.listImageStores(zoneid=zone_id)["imagestore"][0]
    return Path(store["url"].removeprefix("file://"))
