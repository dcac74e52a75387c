"""Deduplicated, incremental, compressed snapshot storage (fixed-size chunks, SHA-256 ids, zstd).

Modelled on Proxmox Backup Server's fixed-index datastore; see docs/layout.md
("Snapshot chunk store") for the on-store format.
"""

from .gc import GcStats, collect_garbage
from .manifest import (
    DEFAULT_CHUNK_SIZE,
    BackupStats,
    Manifest,
    ManifestCorrupted,
    RestoreStats,
    backup,
    delete_manifest,
    list_snapshot_ids,
    load_manifest,
    restore,
    restore_stream,
)
from .scrub import ScrubReport, repair, scrub
from .store import DEFAULT_GRACE, ChunkCorrupted, ChunkMissing, ChunkStore

__all__ = [
    "DEFAULT_CHUNK_SIZE", "DEFAULT_GRACE", "BackupStats", "ChunkCorrupted", "ChunkMissing", "ChunkStore",
    "GcStats", "Manifest", "ManifestCorrupted", "RestoreStats", "ScrubReport", "backup", "collect_garbage",
    "delete_manifest", "list_snapshot_ids", "load_manifest", "repair", "restore", "restore_stream", "scrub",
]
