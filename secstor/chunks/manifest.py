"""Snapshot manifests, backup and restore.

A manifest is a JSON object at ``<prefix>/manifests/<snapshot id>.json`` that lists, for
every chunk-sized slice of the volume, the id of the chunk holding it (null for a slice
that is a hole or all zeros).  Every manifest is logically FULL: restoring reads only it
and the chunks it names, and deleting it never affects another manifest.  The layout is
documented for operators in docs/layout.md ("Snapshot chunk store").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

import zstandard

from secstor.stores.base import StoreError

from .reader import read_volume, zero_block
from .store import DEFAULT_GRACE, ChunkStore, PutResult, chunk_id

MANIFEST_FORMAT = "secstor-snapshot-manifest"
MANIFEST_VERSION = 1
MANIFEST_SUFFIX = ".json.zst"
#: Chosen by measurement (docs/benchmarks.md, "Snapshot chunk store"): bytes added by
#: small scattered writes grow with the chunk size; per-chunk costs shrink with it.
DEFAULT_CHUNK_SIZE = 256 * 1024
_SNAPSHOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


log = logging.getLogger(__name__)


class ManifestCorrupted(StoreError):
    pass


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@lru_cache(maxsize=8)
def _zero_chunk_digest(length: int) -> bytes:
    return hashlib.sha256(zero_block(length)).digest()


def content_digest(volume_size: int, chunk_size: int, ids: list[str | None]) -> str:
    """SHA-256 over the SHA-256 of every chunk-sized slice of the volume, in order.

    A hash list rather than one SHA-256 of the whole content, so that a volume made of
    holes is summarised without hashing gigabytes of zeros; it still pins the exact
    content: every slice's hash, zero slices included, is in it.
    """
    outer = hashlib.sha256()
    for index, cid in enumerate(ids):
        if cid is None:
            outer.update(_zero_chunk_digest(min(chunk_size, volume_size - index * chunk_size)))
        else:
            outer.update(bytes.fromhex(cid))
    return outer.hexdigest()


@dataclass
class Manifest:
    snapshot_id: str
    volume_size: int
    chunk_size: int
    chunks: list[tuple[str, int] | None]  # (chunk id, stored object size) per slice
    created: datetime
    parent_id: str | None = None
    chunk_bytes_added: int = 0
    digest: str = ""

    @property
    def chunk_ids(self) -> list[str | None]:
        return [None if entry is None else entry[0] for entry in self.chunks]

    def referenced(self) -> set[str]:
        return {entry[0] for entry in self.chunks if entry is not None}

    def to_json(self) -> bytes:
        doc = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "snapshot_id": self.snapshot_id,
            "parent_id": self.parent_id,
            "created": self.created.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
            "volume_size": self.volume_size,
            "chunk_size": self.chunk_size,
            "chunk_hash": "sha256",
            "content_digest": self.digest,
            "chunk_bytes_added": self.chunk_bytes_added,
            "chunks": [None if e is None else [e[0], e[1]] for e in self.chunks],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            doc = json.loads(raw)
            if doc.get("format") != MANIFEST_FORMAT or doc.get("version") != MANIFEST_VERSION:
                raise ManifestCorrupted(f"not a version {MANIFEST_VERSION} {MANIFEST_FORMAT}")
            manifest = cls(
                snapshot_id=doc["snapshot_id"],
                volume_size=int(doc["volume_size"]),
                chunk_size=int(doc["chunk_size"]),
                chunks=[None if e is None else (str(e[0]), int(e[1])) for e in doc["chunks"]],
                created=datetime.fromisoformat(doc["created"].replace("Z", "+00:00")),
                parent_id=doc.get("parent_id"),
                chunk_bytes_added=int(doc.get("chunk_bytes_added", 0)),
                digest=doc["content_digest"],
            )
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ManifestCorrupted(f"unreadable manifest: {exc}") from exc
        expected_slices = -(-manifest.volume_size // manifest.chunk_size)
        if len(manifest.chunks) != expected_slices:
            raise ManifestCorrupted(f"manifest {manifest.snapshot_id} lists {len(manifest.chunks)} chunks, needs {expected_slices}")
        if content_digest(manifest.volume_size, manifest.chunk_size, manifest.chunk_ids) != manifest.digest:
            raise ManifestCorrupted(f"manifest {manifest.snapshot_id}: chunk list does not match its content digest")
        return manifest


#: zstd halves the hex ids (random hex is 4 bits a character) and collapses runs of nulls.
#: The short matches it would find inside random hex cost more than the literals they replace,
#: so matches shorter than 7 bytes are not searched for: ~33 bytes per chunk id against 36
#: with level 9's defaults, 256 KiB for a half-allocated 4 GiB volume, in 2 ms instead of 35.
_MANIFEST_ZSTD = zstandard.ZstdCompressionParameters.from_level(1, min_match=7)


def save_manifest(store: ChunkStore, manifest: Manifest) -> int:
    # `zstd -dc <file> | jq` reads it by hand.
    packed = zstandard.ZstdCompressor(compression_params=_MANIFEST_ZSTD).compress(manifest.to_json())
    store.driver.put(store.manifest_key(manifest.snapshot_id), [packed], size_hint=len(packed))
    return len(packed)


def load_manifest(store: ChunkStore, snapshot_id: str) -> Manifest:
    packed = b"".join(store.driver.open_reader(store.manifest_key(snapshot_id)))
    try:
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(packed)
    except zstandard.ZstdError as exc:
        raise ManifestCorrupted(f"manifest {snapshot_id}: {exc}") from exc
    return Manifest.from_json(raw)


def list_snapshot_ids(store: ChunkStore) -> list[str]:
    base = f"{store.prefix}/manifests/"
    return [i.key[len(base) : -len(MANIFEST_SUFFIX)] for i in store.driver.list(base) if i.key.endswith(MANIFEST_SUFFIX)]


def delete_manifest(store: ChunkStore, snapshot_id: str) -> bool:
    """Forget a snapshot; its chunks stay until GC finds them unreferenced."""
    return store.driver.delete(store.manifest_key(snapshot_id))


@dataclass
class BackupStats:
    volume_size: int = 0
    bytes_read: int = 0  # allocated data actually read from the volume
    chunks_read: int = 0
    chunks_zero: int = 0  # read but all zeros: recorded as null, never stored
    chunks_new: int = 0
    chunks_reused: int = 0
    chunks_known: int = 0  # reused from the previous manifest without any store request
    chunks_touched: int = 0  # reused and refreshed for a concurrent GC
    chunks_rechecked: int = 0  # known ones checked after all: the previous manifest went meanwhile
    chunk_bytes_added: int = 0
    manifest_bytes: int = 0
    seconds: float = 0.0

    @property
    def bytes_added(self) -> int:
        return self.chunk_bytes_added + self.manifest_bytes


class _BackupRun:
    """One backup's chunk uploads: parallel, bounded in memory, each distinct chunk once."""

    def __init__(self, store: ChunkStore, refresh_before: datetime, known: dict[str, int]) -> None:
        self.store = store
        self.refresh_before = refresh_before
        self.known = known  # chunk id -> stored size, of the previous manifest
        self._lock = threading.Lock()
        self._claims: dict[str, Future] = {}
        self.touched: set[str] = set()  # old chunks refreshed by this run: checked again at the end

    def store_chunk(self, data: bytes) -> tuple[str, PutResult]:
        cid = chunk_id(data)
        if cid in self.known:  # no request: backup() confirms the previous manifest afterwards
            return cid, PutResult(self.known[cid], new=False)
        with self._lock:
            claim = self._claims.get(cid)
            owner = claim is None
            if owner:
                claim = self._claims[cid] = Future()
        if not owner:  # the same content earlier in this volume: stored (or being stored) once
            return cid, PutResult(claim.result().stored_size, new=False)
        try:
            result = self.store.put_chunk(cid, data, refresh_before=self.refresh_before)
        except BaseException as exc:
            claim.set_exception(exc)
            raise
        if result.touched:
            with self._lock:
                self.touched.add(cid)
        claim.set_result(result)
        return cid, result


def backup(
    volume_path: str | os.PathLike,
    store: ChunkStore,
    previous: Manifest | None = None,
    *,
    snapshot_id: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    grace: timedelta = DEFAULT_GRACE,
    now: Callable[[], datetime] = _utcnow,
    on_progress: Callable[[BackupStats], None] | None = None,
) -> tuple[Manifest, BackupStats]:
    """Back up a raw volume file into ``store``; return its manifest and what it cost.

    Correctness first: every allocated chunk is read and hashed (no mtime shortcut);
    deduplication makes unchanged chunks free to store.  ``previous`` (a completed backup's
    manifest, loaded from this ``store``) supplies the chunk size (equal sizes are what make
    chunks shared), the informational parent id, and the chunks known to exist: those are
    reused without any store request, where every other chunk costs a stat (and a touch or
    a put).  That is safe because ``previous`` is checked once, after this manifest is
    written (see ``_confirm_known_chunks`` and gc.py).  The manifest is written last,
    atomically: a backup that dies half-way leaves no snapshot, only orphan chunks for GC.
    While it runs, a writer marker under ``<prefix>/writers/`` tells GC not to sweep chunks
    newer than the backup's start.  The volume must not change while it is backed up.
    """
    snapshot_id = snapshot_id or uuid.uuid4().hex
    if not _SNAPSHOT_ID.match(snapshot_id):
        raise ValueError(f"snapshot id must be 1-128 letters, digits, '-' or '_': {snapshot_id!r}")
    known: dict[str, int] = {}
    if previous is not None:
        chunk_size = previous.chunk_size
        if previous.snapshot_id != snapshot_id:  # our own manifest cannot vouch for itself
            known = {entry[0]: entry[1] for entry in previous.chunks if entry is not None}
    started = now()
    stats = BackupStats()
    marker = store.writer_key(snapshot_id)
    store.driver.put(marker, [json.dumps({"snapshot_id": snapshot_id, "started": started.isoformat()}).encode()])
    try:
        run = _BackupRun(store, started - grace / 2, known)
        with open(volume_path, "rb", buffering=0) as volume:
            size = os.fstat(volume.fileno()).st_size
            stats.volume_size = size
            entries: list[tuple[str, int] | None] = [None] * -(-size // chunk_size)

            def finish(index: int, future: Future) -> None:
                cid, result = future.result()
                entries[index] = (cid, result.stored_size)
                if result.new:
                    stats.chunks_new += 1
                    stats.chunk_bytes_added += result.stored_size
                else:
                    stats.chunks_reused += 1
                    stats.chunks_known += cid in known
                stats.chunks_touched += result.touched
                if on_progress:
                    on_progress(stats)

            with ThreadPoolExecutor(store.workers, thread_name_prefix="chunk-put") as pool:
                in_flight: deque[tuple[int, Future]] = deque()
                try:
                    for chunk in read_volume(volume.fileno(), size, chunk_size):
                        stats.chunks_read += 1
                        stats.bytes_read += min(chunk_size, size - chunk.index * chunk_size)
                        if chunk.data is None:
                            stats.chunks_zero += 1
                            continue
                        in_flight.append((chunk.index, pool.submit(run.store_chunk, chunk.data)))
                        if len(in_flight) >= 2 * store.workers:  # bounds memory to ~2x workers chunks
                            finish(*in_flight.popleft())
                    while in_flight:
                        finish(*in_flight.popleft())
                finally:
                    for _index, future in in_flight:
                        future.cancel()
            manifest = Manifest(
                snapshot_id=snapshot_id,
                volume_size=size,
                chunk_size=chunk_size,
                chunks=entries,
                created=started,
                parent_id=previous.snapshot_id if previous else None,
                chunk_bytes_added=stats.chunk_bytes_added,
                digest=content_digest(size, chunk_size, [None if e is None else e[0] for e in entries]),
            )
            stats.manifest_bytes = save_manifest(store, manifest)
            if stats.chunks_known:
                _confirm_known_chunks(store, volume.fileno(), manifest, previous, run.refresh_before, stats)
            if run.touched:
                _confirm_touched_chunks(store, volume.fileno(), manifest, run, stats)
    finally:
        store.driver.delete(marker)
    stats.seconds = (now() - started).total_seconds()
    return manifest, stats


def _confirm_known_chunks(store: ChunkStore, fd: int, manifest: Manifest, previous: Manifest,
                          refresh_before: datetime, stats: BackupStats) -> None:
    """Make sure the chunks reused on ``previous``'s word cannot have been swept by a GC.

    ``previous`` existed when it was loaded; if it still exists now, after ``manifest`` was
    written, it existed all along (a snapshot id is never written again once deleted).  Then
    every GC's mark either listed ``previous`` and kept its chunks, or listed after
    ``manifest`` was written and keeps them for it (a manifest listed but gone when loaded
    makes GC list again: gc.py).  One request, where touching each chunk would cost one per
    chunk.  If ``previous`` was deleted meanwhile, the reused chunks get the ordinary
    stat/touch/put (read again from the volume) before the backup counts as done.
    """
    if store.driver.stat(store.manifest_key(previous.snapshot_id)) is not None:
        return
    known = {entry[0] for entry in previous.chunks if entry is not None}
    log.warning("snapshot %s: previous manifest %s was deleted during the backup; checking the chunks "
                "reused from it", manifest.snapshot_id, previous.snapshot_id)
    _recheck_chunks(store, fd, manifest, known, refresh_before, stats)


def _confirm_touched_chunks(store: ChunkStore, fd: int, manifest: Manifest, run: _BackupRun,
                            stats: BackupStats) -> None:
    """Write again any chunk this backup touched that a concurrent GC removed all the same.

    GC stats a candidate again right before deleting it, but the two are not one atomic step: a
    touch published between them is deleted with the old object.  Such a GC had started before
    the touch and deletes right after its stat, so by the time the manifest is written its
    deletion is done, and a stat per touched chunk (old chunks only, which incremental backups
    rarely touch: they reuse the previous manifest's chunks on its word) finds it.
    """
    missing = {cid for cid in run.touched if store.stat_chunk(cid) is None}
    if missing:
        log.warning("snapshot %s: %d touched chunks were swept by a concurrent GC; writing them again",
                    manifest.snapshot_id, len(missing))
        _recheck_chunks(store, fd, manifest, missing, run.refresh_before, stats)


def _recheck_chunks(store: ChunkStore, fd: int, manifest: Manifest, cids: set[str], refresh_before: datetime,
                    stats: BackupStats) -> None:
    """stat/touch/put each chunk of ``cids`` again, its data read back from the volume, and save
    the manifest again if that wrote any."""
    first_index: dict[str, int] = {}
    for index, entry in enumerate(manifest.chunks):
        if entry is not None and entry[0] in cids:
            first_index.setdefault(entry[0], index)

    def recheck(item: tuple[str, int]) -> PutResult:
        cid, index = item
        offset = index * manifest.chunk_size
        data = os.pread(fd, min(manifest.chunk_size, manifest.volume_size - offset), offset)
        if chunk_id(data) != cid:
            raise StoreError(f"volume changed during the backup: slice {index} no longer hashes to {cid}")
        return store.put_chunk(cid, data, refresh_before=refresh_before)

    with ThreadPoolExecutor(store.workers, thread_name_prefix="chunk-recheck") as pool:
        for result in pool.map(recheck, first_index.items()):
            stats.chunks_rechecked += 1
            stats.chunks_touched += result.touched
            if result.new:  # swept meanwhile, written again
                stats.chunks_new += 1
                stats.chunk_bytes_added += result.stored_size
    if stats.chunk_bytes_added != manifest.chunk_bytes_added:
        manifest.chunk_bytes_added = stats.chunk_bytes_added
        stats.manifest_bytes = save_manifest(store, manifest)


def _fetch_chunks(manifest: Manifest, store: ChunkStore) -> Iterator[tuple[int, bytes]]:
    """(index, verified data) of every stored chunk, in order, fetched in parallel."""
    with ThreadPoolExecutor(store.workers, thread_name_prefix="chunk-get") as pool:
        in_flight: deque[tuple[int, Future]] = deque()
        try:
            for index, entry in enumerate(manifest.chunks):
                if entry is None:
                    continue
                in_flight.append((index, pool.submit(store.get_chunk, entry[0])))
                if len(in_flight) >= 2 * store.workers:
                    index_done, future = in_flight.popleft()
                    yield index_done, future.result()
            while in_flight:
                index_done, future = in_flight.popleft()
                yield index_done, future.result()
        finally:
            for _index, future in in_flight:
                future.cancel()


@dataclass
class RestoreStats:
    bytes_written: int = 0
    chunks_fetched: int = 0


def restore(manifest: Manifest, store: ChunkStore, target_path: str | os.PathLike) -> RestoreStats:
    """Write the snapshot to ``target_path`` as a sparse raw file.

    Zero slices stay holes (the file is truncated to the volume size and they are never
    written).  Every chunk is verified against its id before it is written, and the
    manifest's chunk list was verified against its content digest when it was loaded,
    so the result is exactly the content the backup read.
    """
    if content_digest(manifest.volume_size, manifest.chunk_size, manifest.chunk_ids) != manifest.digest:
        raise ManifestCorrupted(f"manifest {manifest.snapshot_id}: chunk list does not match its content digest")
    stats = RestoreStats()
    fd = os.open(Path(target_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, manifest.volume_size)
        for index, data in _fetch_chunks(manifest, store):
            view, offset = memoryview(data), index * manifest.chunk_size
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            stats.bytes_written += len(data)
            stats.chunks_fetched += 1
        os.fsync(fd)
    finally:
        os.close(fd)
    return stats


def restore_stream(manifest: Manifest, store: ChunkStore) -> Iterator[bytes]:
    """The volume's whole logical content as a stream of chunk-sized pieces (zeros included)."""
    fetched = _fetch_chunks(manifest, store)
    try:
        next_fetched = next(fetched, None)
        for index in range(len(manifest.chunks)):
            if next_fetched is not None and next_fetched[0] == index:
                yield next_fetched[1]
                next_fetched = next(fetched, None)
            else:
                yield zero_block(min(manifest.chunk_size, manifest.volume_size - index * manifest.chunk_size))
    finally:
        fetched.close()
