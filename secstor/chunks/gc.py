"""Mark-and-sweep garbage collection of chunks, safe against concurrent backups.

Mark: the union of the chunk ids of every manifest.  Sweep: delete a chunk that no
manifest references AND whose object was last modified before ``cutoff``, where

    cutoff = min(GC start, start of the oldest backup still running) - grace

A backup running concurrently is protected without any lock:
- chunks it writes are newer than its own start, which is >= cutoff + grace;
- chunks it reuses that are older than half the grace are touched (copied onto
  themselves, server-side on S3), so they too are newer than the cutoff; younger ones
  are newer than the cutoff already;
- its writer marker (``<prefix>/writers/<snapshot id>``) gives its start time in the
  store's own clock, so a backup longer than the grace is covered as well;
- chunks it reuses from the previous manifest P are neither stat'ed nor touched (that would
  cost a request per chunk).  After writing its own manifest M the backup checks that P
  still exists (if not, it stat/touches them after all), so P existed from the backup's
  start until after M was written.  Take the mark's last listing: if it came after M was
  written it lists M; if before, it lists P, or P was written later still, by a backup
  protected the same way.  For "listed" to mean "marked", a manifest listed but deleted
  before the mark loads it makes the mark list again.
A writer marker older than ``stale_writer_age`` belongs to a backup that was killed and
is removed.  Each candidate is stat'ed again right before deletion, so a touch made after
the listing saves its chunk; a touch landing between that stat and the deletion is lost, and
the backup, which stats every chunk it touched once its manifest is written, writes it again.  An unreadable manifest stops the GC: sweeping without its
references would destroy a snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from secstor.stores.base import ObjectNotFound

from .manifest import list_snapshot_ids, load_manifest
from .store import DEFAULT_GRACE, ChunkStore

log = logging.getLogger(__name__)

#: A backup still "running" after this long was killed; its marker stops protecting.
DEFAULT_STALE_WRITER_AGE = timedelta(days=7)
#: Listings the mark makes at most while manifests keep vanishing under it (deletions).
MARK_ROUNDS = 5


@dataclass
class GcStats:
    manifests: int = 0
    chunks_referenced: int = 0
    chunks_seen: int = 0
    chunks_removed: int = 0
    bytes_removed: int = 0
    chunks_kept_recent: int = 0  # unreferenced but younger than the cutoff
    stale_writers_removed: int = 0


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _sweep_cutoff(store: ChunkStore, started: datetime, grace: timedelta, stale_age: timedelta, stats: GcStats) -> datetime:
    oldest = started
    for marker in store.driver.list(f"{store.prefix}/writers/"):
        if marker.modified < started - stale_age:
            store.driver.delete(marker.key)
            stats.stale_writers_removed += 1
            log.warning("removed writer marker %s of a backup that never finished", marker.key)
        else:
            oldest = min(oldest, marker.modified)
    return oldest - grace


def _mark(store: ChunkStore, stats: GcStats) -> set[str] | None:
    """Chunk ids of every manifest, from a listing in which none vanished before being loaded
    (see the module docstring); None after ``MARK_ROUNDS`` listings that each lost one."""
    referenced: set[str] = set()
    loaded: set[str] = set()
    for _round in range(MARK_ROUNDS):
        vanished = False
        for snapshot_id in list_snapshot_ids(store):
            if snapshot_id in loaded:
                continue
            try:
                manifest = load_manifest(store, snapshot_id)
            except ObjectNotFound:
                vanished = True
                continue
            loaded.add(snapshot_id)
            stats.manifests += 1
            referenced |= manifest.referenced()
        if not vanished:
            return referenced
    return None


def collect_garbage(
    store: ChunkStore,
    *,
    grace: timedelta = DEFAULT_GRACE,
    stale_writer_age: timedelta = DEFAULT_STALE_WRITER_AGE,
    now: Callable[[], datetime] = _utcnow,
) -> GcStats:
    started = now()
    stats = GcStats()
    # Writer markers are read BEFORE the mark: a backup that finished in between wrote its
    # manifest before removing its marker, so the mark sees it; one that starts later
    # only has chunks newer than ``started - grace / 2``.
    cutoff = _sweep_cutoff(store, started, grace, stale_writer_age, stats)
    referenced = _mark(store, stats)
    if referenced is None:
        log.warning("chunk GC of %s: manifests kept being deleted during the mark; sweep skipped", store.prefix)
        return stats
    stats.chunks_referenced = len(referenced)
    for cid, info in store.iter_chunks():
        stats.chunks_seen += 1
        if cid in referenced:
            continue
        if info.modified >= cutoff:
            stats.chunks_kept_recent += 1
            continue
        fresh = store.stat_chunk(cid)
        if fresh is None:
            continue
        if fresh.modified >= cutoff:  # touched by a backup since the listing
            stats.chunks_kept_recent += 1
            continue
        if store.delete_chunk(cid):
            stats.chunks_removed += 1
            stats.bytes_removed += fresh.size
    log.info(
        "chunk GC of %s: %d manifests, %d chunks referenced, %d removed (%d bytes), %d kept as recent",
        store.prefix, stats.manifests, stats.chunks_referenced, stats.chunks_removed,
        stats.bytes_removed, stats.chunks_kept_recent,
    )
    return stats
