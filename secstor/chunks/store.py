"""Content-addressed chunk objects on any StoreDriver.

A chunk is stored once, under ``<prefix>/chunks/<first 4 hex>/<sha256 hex>``, whatever
number of snapshots or volumes use it.  The object is one format byte followed by the
payload::

    "R" (0x52) | the chunk's bytes as they are
    "Z" (0x5A) | one zstd frame (its header records the uncompressed length)

One byte, not a header with lengths and a CRC: the chunk id is the SHA-256 of the
uncompressed data and is checked on every read, which catches any damage a CRC would;
the length is in the zstd frame (and the manifest's chunk size).  A chunk is stored raw
when zstd would not make it smaller (random or encrypted data), which saves the
decompression on restore.  Any other first byte is not an object of this format and is
refused as corrupted (new formats will take new letters).  docs/layout.md shows how an
operator decodes one by hand.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import zstandard

from secstor.stores.base import ObjectInfo, ObjectNotFound, StoreDriver, StoreError

CODEC_RAW = b"R"
CODEC_ZSTD = b"Z"
ZSTD_LEVEL = 3
#: Largest chunk a zstd frame may claim to decode to: bounds the memory a damaged or hostile
#: frame header can make a reader allocate (chunks are 256 KiB by default, 4 MiB in benchmarks).
MAX_CHUNK_BYTES = 64 << 20
ID_LENGTH = 64
#: GC keeps unreferenced chunks younger than this (Proxmox Backup Server's 24 h + 5 min:
#: a day of atime-like protection plus room for clock skew between host and store).
DEFAULT_GRACE = timedelta(hours=24, minutes=5)


class ChunkError(StoreError):
    """A chunk cannot be used; ``chunk_id`` names it."""

    def __init__(self, chunk_id: str, reason: str) -> None:
        super().__init__(f"chunk {chunk_id}: {reason}")
        self.chunk_id = chunk_id


class ChunkCorrupted(ChunkError):
    pass


class ChunkMissing(ChunkError):
    pass


def chunk_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    # zstd contexts are not thread-safe; one per worker thread, reused for every chunk.
    if not hasattr(_local, "cctx"):
        _local.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        _local.dctx = zstandard.ZstdDecompressor()
    return _local.cctx


def _decompressor() -> zstandard.ZstdDecompressor:
    _compressor()
    return _local.dctx


def encode_chunk(data: bytes) -> bytes:
    packed = _compressor().compress(data)  # the frame records the content size (zstd's default)
    return CODEC_ZSTD + packed if len(packed) < len(data) else CODEC_RAW + data


def decode_chunk(cid: str, blob: bytes) -> bytes:
    """Return the chunk's data, or raise ChunkCorrupted unless it hashes to ``cid``."""
    if not blob:
        raise ChunkCorrupted(cid, "object is empty")
    codec, payload = blob[:1], memoryview(blob)[1:]
    if codec == CODEC_RAW:
        data = bytes(payload)
    elif codec == CODEC_ZSTD:
        try:
            length = zstandard.frame_content_size(payload)
            if not 0 <= length <= MAX_CHUNK_BYTES:
                raise ChunkCorrupted(cid, "zstd frame without a valid content size")
            data = _decompressor().decompress(payload, max_output_size=length)
        except zstandard.ZstdError as exc:
            raise ChunkCorrupted(cid, f"zstd: {exc}") from exc
    else:
        raise ChunkCorrupted(cid, f"unknown chunk format byte 0x{blob[0]:02x} (expected 'R' raw or 'Z' zstd)")
    if chunk_id(data) != cid:
        raise ChunkCorrupted(cid, "content does not match its SHA-256 id")
    return data


@dataclass(frozen=True)
class PutResult:
    stored_size: int
    new: bool  # written by this call (counts as bytes added to the store)
    touched: bool = False  # existed but was refreshed so a concurrent GC keeps it


class ChunkStore:
    """Chunks and manifests of one deduplication domain under ``prefix`` of a store."""

    def __init__(self, driver: StoreDriver, prefix: str, *, workers: int = 4) -> None:
        self.driver = driver
        self.prefix = prefix.strip("/")
        self.workers = workers

    def chunk_key(self, cid: str) -> str:
        return f"{self.prefix}/chunks/{cid[:4]}/{cid}"

    def manifest_key(self, snapshot_id: str) -> str:
        return f"{self.prefix}/manifests/{snapshot_id}.json.zst"

    def writer_key(self, snapshot_id: str) -> str:
        return f"{self.prefix}/writers/{snapshot_id}"

    def stat_chunk(self, cid: str) -> ObjectInfo | None:
        return self.driver.stat(self.chunk_key(cid))

    def put_chunk(self, cid: str, data: bytes, *, refresh_before: datetime | None = None) -> PutResult:
        """Store ``data`` under ``cid`` unless already there.

        An existing chunk modified before ``refresh_before`` is touched (copied onto itself,
        server-side on S3) so a garbage collection running now keeps it: see gc.py.
        Concurrent writers of one chunk are harmless: the content is identical and each
        publish is atomic.
        """
        key = self.chunk_key(cid)
        info = self.driver.stat(key)
        if info is not None:
            if refresh_before is None or info.modified >= refresh_before:
                return PutResult(info.size, new=False)
            try:
                return PutResult(self.driver.copy_within(key, key).size, new=False, touched=True)
            except ObjectNotFound:
                pass  # swept between stat and touch: write it again below
        blob = encode_chunk(data)
        self.driver.put(key, [blob], size_hint=len(blob))
        return PutResult(len(blob), new=True)

    def put_blob(self, cid: str, blob: bytes) -> None:
        """Store an already encoded chunk object (repair copies one from another store)."""
        decode_chunk(cid, blob)
        self.driver.put(self.chunk_key(cid), [blob], size_hint=len(blob))

    def get_blob(self, cid: str) -> bytes:
        try:
            return b"".join(self.driver.open_reader(self.chunk_key(cid)))
        except ObjectNotFound:
            raise ChunkMissing(cid, f"object {self.chunk_key(cid)} is missing") from None

    def get_chunk(self, cid: str) -> bytes:
        """The verified data of chunk ``cid``; ChunkMissing or ChunkCorrupted otherwise."""
        return decode_chunk(cid, self.get_blob(cid))

    def delete_chunk(self, cid: str) -> bool:
        return self.driver.delete(self.chunk_key(cid))

    def iter_chunks(self) -> Iterator[tuple[str, ObjectInfo]]:
        """(chunk id, object info) of every stored chunk; foreign files are ignored."""
        base = f"{self.prefix}/chunks/"
        for info in self.driver.list(base):
            name = info.key.rsplit("/", 1)[-1]
            if len(name) == ID_LENGTH and info.key == self.chunk_key(name):
                yield name, info
