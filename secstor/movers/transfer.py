"""Verified writes and copies: data is hashed while it streams and published only if it matches.

Hashing the stream as it is written (instead of reading the object back) halves the I/O of a
download; the writer's atomic commit is what makes "nothing unverified is visible" hold.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from secstor.stores.base import Capability, ObjectInfo, ObjectNotFound, StoreDriver

from .checksums import Checksum, MultiHasher, canonical_algorithm

Progress = Callable[[int], None]

# Chunks a hashing thread may lag behind the writer: enough to smooth bursts, few enough that
# fifty concurrent transfers still hold only a few MiB each.
HASH_QUEUE_CHUNKS = 2
_DONE = object()


@dataclass(frozen=True)
class TransferResult:
    info: ObjectInfo
    size: int
    digests: dict[str, str] = field(default_factory=dict)  # canonical algorithm -> hex


class TransferError(Exception):
    pass


class ChecksumMismatch(TransferError):
    def __init__(self, expected: Checksum, computed: str) -> None:
        self.expected = expected
        self.computed = Checksum(expected.algorithm, computed)
        # CloudStack's wording, so API clients and operators see the message they know.
        super().__init__(f'checksum "{self.computed}" didn\'t match the given value, "{expected}"')


class SizeLimitExceeded(TransferError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"object is larger than the limit of {limit} bytes")


class ParallelHasher:
    """MultiHasher with one thread per algorithm, fed the chunks the caller then writes.

    hashlib releases the GIL while it hashes, so receiving, writing and each digest run on
    different cores at once, as ``curl | tee file | sha256sum`` does; hashing inline in one
    thread made a download slower than that pipeline.  Use as a context manager: leaving it
    (also by an exception) stops the threads.
    """

    def __init__(self, algorithms: Iterable[str]) -> None:
        self._hashers = [MultiHasher([a]) for a in dict.fromkeys(canonical_algorithm(a) for a in algorithms)]
        self._queues: list[queue.Queue] = [queue.Queue(HASH_QUEUE_CHUNKS) for _ in self._hashers]
        self._threads = [threading.Thread(target=self._run, args=(h, q), name="hasher", daemon=True)
                         for h, q in zip(self._hashers, self._queues)]
        for t in self._threads:
            t.start()

    @staticmethod
    def _run(hasher: MultiHasher, chunks: queue.Queue) -> None:
        while (chunk := chunks.get()) is not _DONE:
            hasher.update(chunk)

    def update(self, data: bytes) -> None:
        if not isinstance(data, bytes):
            data = bytes(data)  # a caller may reuse a bytearray once we return; hash what it is now
        for q in self._queues:
            q.put(data)

    def _stop(self) -> None:
        for q in self._queues:
            q.put(_DONE)
        for t in self._threads:
            t.join()
        self._queues = []

    def hexdigests(self) -> dict[str, str]:
        self._stop()
        digests: dict[str, str] = {}
        for h in self._hashers:
            digests.update(h.hexdigests())
        return digests

    def __enter__(self) -> ParallelHasher:
        return self

    def __exit__(self, *exc) -> None:
        if self._queues:
            self._stop()


def _algorithms(algorithms: Iterable[str], expected: Checksum | None) -> list[str]:
    return [*algorithms, expected.algorithm] if expected else list(algorithms)


def _check(expected: Checksum | None, digests: dict[str, str]) -> None:
    if expected is not None and digests[expected.algorithm] != expected.hexdigest:
        raise ChecksumMismatch(expected, digests[expected.algorithm])


def write_verified(
    driver: StoreDriver,
    key: str,
    chunks: Iterable[bytes],
    *,
    expected: Checksum | None = None,
    algorithms: Iterable[str] = ("SHA-256",),
    size_hint: int | None = None,
    max_bytes: int | None = None,
    progress: Progress | None = None,
) -> TransferResult:
    """Stream ``chunks`` to ``key``, hashing on the way; commit only if ``expected`` matches.

    On a mismatch, an oversize stream or any exception the writer is aborted and nothing is
    visible under ``key``.
    """
    if max_bytes is not None and size_hint is not None and size_hint > max_bytes:
        raise SizeLimitExceeded(max_bytes)
    size = 0
    with driver.open_writer(key, size_hint) as writer, ParallelHasher(_algorithms(algorithms, expected)) as hasher:
        for chunk in chunks:
            if not chunk:
                continue
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise SizeLimitExceeded(max_bytes)
            hasher.update(chunk)
            writer.write(chunk)
            if progress is not None:
                progress(size)
        digests = hasher.hexdigests()
        _check(expected, digests)
        info = writer.commit()
    return TransferResult(info, size, digests)


def _hash_object(
    driver: StoreDriver, key: str, algorithms: Iterable[str], progress: Progress | None = None
) -> tuple[int, dict[str, str]]:
    size = 0
    with ParallelHasher(algorithms) as hasher:
        for chunk in driver.open_reader(key):
            hasher.update(chunk)
            size += len(chunk)
            if progress is not None:
                progress(size)
        return size, hasher.hexdigests()


def _same_store(a: StoreDriver, b: StoreDriver) -> bool:
    return a is b or a.identity == b.identity


def copy_verified(
    src_driver: StoreDriver,
    src_key: str,
    dst_driver: StoreDriver,
    dst_key: str,
    *,
    expected: Checksum,
    progress: Progress | None = None,
) -> TransferResult:
    """Copy and verify against ``expected``; on any failure nothing unverified remains at
    ``dst_key`` (a server-side copy that fails verification is deleted).

    Inside one store a server-side copy (CopyObject, copy_file_range) avoids moving the data
    through this process, but it is still read back and hashed: it would faithfully copy a
    source that rotted since its checksum was recorded.
    """
    same = _same_store(src_driver, dst_driver)
    if same and src_key == dst_key:
        raise ValueError(f"source and destination are the same object: {src_key!r}")
    server_side = {Capability.SERVER_SIDE_COPY, Capability.COPY_FILE_RANGE} & dst_driver.capabilities
    if same and server_side:
        info = dst_driver.copy_within(src_key, dst_key)
        try:
            size, digests = _hash_object(dst_driver, dst_key, [expected.algorithm], progress)
            _check(expected, digests)
        except BaseException:
            dst_driver.delete(dst_key)
            raise
        return TransferResult(info, size, digests)
    src = src_driver.stat(src_key)
    if src is None:
        raise ObjectNotFound(src_key)
    reader = src_driver.open_reader(src_key)
    try:
        return write_verified(
            dst_driver, dst_key, reader, expected=expected, algorithms=(), size_hint=src.size, progress=progress
        )
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()  # on failure, release the source's file or HTTP connection now, not at GC


def verify_object(driver: StoreDriver, key: str, expected: Checksum) -> bool:
    """Re-hash a stored object; ObjectNotFound if it is missing."""
    _size, digests = _hash_object(driver, key, [expected.algorithm])
    return digests[expected.algorithm] == expected.hexdigest
