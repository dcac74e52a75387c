"""Read a raw volume file as fixed-size chunks, touching only its allocated data.

Holes are found with SEEK_DATA/SEEK_HOLE, so the cost of a read is proportional to the
allocated data, not to the virtual size: a chunk lying entirely in a hole is never read.
File systems without SEEK_DATA are read whole (correct, only slower).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from secstor.stores.local import _data_extents as data_extents


@lru_cache(maxsize=8)
def zero_block(length: int) -> bytes:
    """A shared all-zero buffer: comparing against it is a memcmp, the fastest zero test."""
    return bytes(length)


def is_zero(data: bytes) -> bool:
    return data == zero_block(len(data))


def chunk_indices(extents: Iterable[tuple[int, int]], chunk_size: int) -> Iterator[int]:
    """Indices of the chunks that overlap a data extent, ascending, each once."""
    last = -1
    for start, end in extents:
        first = max(start // chunk_size, last + 1)
        for index in range(first, (end - 1) // chunk_size + 1):
            yield index
        last = max(last, (end - 1) // chunk_size)


@dataclass(frozen=True)
class VolumeChunk:
    index: int
    data: bytes | None  # None: the chunk read back all zeros


def read_volume(fd: int, size: int, chunk_size: int) -> Iterator[VolumeChunk]:
    """Yield the chunks of an open raw volume that hold allocated data, in order.

    A chunk partly in a hole is read whole (the hole reads as zeros); chunks the file
    system reports as holes are skipped, and the caller records them as zero chunks.
    """
    for index in chunk_indices(data_extents(fd, size), chunk_size):
        offset = index * chunk_size
        length = min(chunk_size, size - offset)
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise OSError(f"volume shrank while being read: short read at offset {offset}")
        yield VolumeChunk(index, None if is_zero(data) else data)
