"""Verify a chunk store: every chunk against its hash, every manifest's references.

``repair`` replaces damaged or missing chunks with good copies from another ChunkStore
(e.g. the same volume's chunks on another image store).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .manifest import ManifestCorrupted, list_snapshot_ids, load_manifest
from .store import ChunkCorrupted, ChunkError, ChunkStore

log = logging.getLogger(__name__)


@dataclass
class ScrubReport:
    chunks_checked: int = 0
    bytes_checked: int = 0
    manifests_checked: int = 0
    damaged: set[str] = field(default_factory=set)  # chunk ids whose object fails verification
    missing: set[str] = field(default_factory=set)  # referenced by a manifest, not stored
    bad_manifests: list[str] = field(default_factory=list)
    affected_snapshots: set[str] = field(default_factory=set)
    repaired: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not (self.damaged - self.repaired or self.missing - self.repaired or self.bad_manifests)


def scrub(store: ChunkStore) -> ScrubReport:
    report = ScrubReport()
    present: set[str] = set()
    for cid, info in store.iter_chunks():
        present.add(cid)
        report.chunks_checked += 1
        report.bytes_checked += info.size
        try:
            store.get_chunk(cid)
        except ChunkError as exc:  # ChunkMissing too: deleted since the listing counts as damage
            report.damaged.add(cid)
            log.error("scrub of %s: %s", store.prefix, exc)
    for snapshot_id in list_snapshot_ids(store):
        try:
            manifest = load_manifest(store, snapshot_id)
        except ManifestCorrupted as exc:
            report.bad_manifests.append(snapshot_id)
            log.error("scrub of %s: manifest %s: %s", store.prefix, snapshot_id, exc)
            continue
        report.manifests_checked += 1
        refs = manifest.referenced()
        missing = refs - present
        report.missing |= missing
        if missing or refs & report.damaged:
            report.affected_snapshots.add(snapshot_id)
    return report


def repair(store: ChunkStore, report: ScrubReport, from_store: ChunkStore) -> ScrubReport:
    """Copy each damaged or missing chunk from ``from_store`` where it holds a good copy."""
    for cid in sorted(report.damaged | report.missing):
        try:
            blob = from_store.get_blob(cid)
            store.put_blob(cid, blob)  # verifies the copy before publishing it
        except ChunkError as exc:
            log.warning("cannot repair chunk %s of %s from %s: %s", cid, store.prefix, from_store.prefix, exc)
            continue
        report.repaired.add(cid)
        log.info("repaired chunk %s of %s from %s", cid, store.prefix, from_store.prefix)
    return report
