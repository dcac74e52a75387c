"""Incremental backups reuse the previous manifest's chunks without a store request per chunk,
and stay safe against a GC and a deletion of that manifest running at the same time."""

from __future__ import annotations

import dataclasses
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import pytest

from secstor.chunks import ChunkStore, backup, collect_garbage, delete_manifest, load_manifest, restore, scrub
from secstor.chunks.gc import MARK_ROUNDS
from secstor.chunks.manifest import save_manifest
from secstor.stores import S3Driver
from tests.chunks.counting import CountingDriver, s3_operations
from tests.chunks.test_chunk_store import CHUNK, MiB, NO_GRACE, overwrite, pattern, sha, stored_chunks, write_volume

pytestmark = pytest.mark.nodb


@pytest.fixture
def volume(tmp_path) -> Path:
    """2 MiB, 12 chunks of data (64 KiB chunks) and holes."""
    return write_volume(tmp_path / "vol.raw", 2 * MiB, {0: pattern(1, 8 * CHUNK), MiB: pattern(2, 4 * CHUNK)})


def counted(store: ChunkStore, **kwargs) -> tuple[ChunkStore, CountingDriver]:
    driver = CountingDriver(store.driver, **kwargs)
    return ChunkStore(driver, store.prefix), driver


def restores_exactly(store: ChunkStore, snapshot_id: str, volume: Path, tmp_path: Path) -> bool:
    target = tmp_path / f"restored-{snapshot_id}.raw"
    restore(load_manifest(store, snapshot_id), store, target)
    return sha(target) == sha(volume)


def test_an_unchanged_incremental_backup_makes_no_request_per_chunk(store, volume):
    first, _ = backup(volume, store, chunk_size=CHUNK)
    watched, driver = counted(store)
    is_s3 = isinstance(store.driver, S3Driver)
    with s3_operations(store.driver) if is_s3 else nullcontext() as s3_ops:
        second, stats = backup(volume, watched, first)
    assert second.chunk_ids == first.chunk_ids and stats.chunks_new == 0
    assert stats.chunks_known == 12
    # The writer marker and the manifest written, the marker deleted, the previous manifest
    # checked once: nothing per chunk.
    assert driver.calls == {"put": 2, "delete": 1, "stat": 1}
    if is_s3:
        assert sum(s3_ops.values()) == 5  # 2 PutObject, 1 DeleteObject, 2 HeadObject (one is delete's)

    # Without a previous manifest every chunk is stat'ed: the cost this avoids.
    driver.reset()
    backup(volume, watched, chunk_size=CHUNK)
    assert driver.calls["stat"] == 12


def test_an_incremental_backup_asks_the_store_only_about_changed_chunks(store, volume, tmp_path):
    first, _ = backup(volume, store, chunk_size=CHUNK)
    overwrite(volume, 3 * CHUNK + 10, b"changed")
    overwrite(volume, MiB + 2 * CHUNK - 2, b"both")  # crosses into the next chunk
    watched, driver = counted(store)
    second, stats = backup(volume, watched, first)
    assert stats.chunks_new == 3 and stats.chunks_known == 9
    assert driver.calls == {"stat": 3 + 1, "put": 3 + 2, "delete": 1}
    assert restores_exactly(store, second.snapshot_id, volume, tmp_path)


def test_gc_during_an_incremental_backup_keeps_every_chunk_it_reuses(store, volume, tmp_path):
    first, _ = backup(volume, store, chunk_size=CHUNK)
    overwrite(volume, 0, pattern(3, CHUNK))
    gcs = []

    def gc_midway(stats):
        if not gcs:
            gcs.append(collect_garbage(store, grace=NO_GRACE))

    second, stats = backup(volume, store, first, grace=NO_GRACE, on_progress=gc_midway)
    assert gcs[0].chunks_removed == 0 and stats.chunks_known == 11 and stats.chunks_rechecked == 0
    delete_manifest(store, first.snapshot_id)
    collect_garbage(store, grace=NO_GRACE)  # now the first snapshot's own chunk goes
    assert set(stored_chunks(store)) == second.referenced()
    assert restores_exactly(store, second.snapshot_id, volume, tmp_path)


def test_previous_manifest_deleted_and_collected_during_the_backup(store, volume, tmp_path):
    """The reused chunks lose their only manifest and a GC sweeps them while the backup runs:
    the backup finds the previous manifest gone and stores them again before it finishes."""
    first, _ = backup(volume, store, chunk_size=CHUNK)
    if isinstance(store.driver, S3Driver):
        time.sleep(1.1)  # S3 times are whole seconds: the chunks must look older than the backup
    swept = []

    def delete_and_collect(stats):
        if not swept:
            delete_manifest(store, first.snapshot_id)
            swept.append(collect_garbage(store, grace=NO_GRACE))

    second, stats = backup(volume, store, first, grace=NO_GRACE, on_progress=delete_and_collect)
    assert swept[0].chunks_removed > 0  # chunks the new manifest names went
    assert stats.chunks_rechecked == 12 and stats.chunks_new == swept[0].chunks_removed
    assert second.referenced() <= set(stored_chunks(store))
    assert not scrub(store).missing
    assert restores_exactly(store, second.snapshot_id, volume, tmp_path)


def test_a_previous_manifest_deleted_between_gc_listing_and_loading_it(store, volume, tmp_path):
    """The one interleaving the backup's check cannot see: GC lists the manifests, the backup
    runs to completion on the previous manifest, which is then deleted before GC loads it.
    GC must list again (and find the new manifest) instead of sweeping the reused chunks."""
    first, _ = backup(volume, store, chunk_size=CHUNK)
    made = []

    def backup_then_delete(prefix: str) -> None:
        if prefix.endswith("/manifests/") and not made:
            made.append(backup(volume, store, first, grace=NO_GRACE)[0])
            delete_manifest(store, first.snapshot_id)

    gc_store, _ = counted(store, on_list=backup_then_delete)
    gc = collect_garbage(gc_store, grace=NO_GRACE)
    assert made and gc.chunks_removed == 0 and gc.manifests == 1
    assert made[0].referenced() == set(stored_chunks(store))
    assert restores_exactly(store, made[0].snapshot_id, volume, tmp_path)


def test_gc_skips_its_sweep_while_manifests_keep_vanishing_under_its_mark(store, volume):
    garbage, _ = backup(volume, store, chunk_size=CHUNK)
    delete_manifest(store, garbage.snapshot_id)  # its chunks would all be swept
    churn = [garbage]

    def delete_listed_and_add_one(prefix: str) -> None:
        if prefix.endswith("/manifests/"):  # every listing names a manifest deleted right after
            delete_manifest(store, churn[-1].snapshot_id)
            churn.append(dataclasses.replace(churn[-1], snapshot_id=f"churn-{len(churn)}"))
            save_manifest(store, churn[-1])

    delete_listed_and_add_one("/manifests/")
    gc_store, _ = counted(store, on_list=delete_listed_and_add_one)
    assert collect_garbage(gc_store, grace=NO_GRACE).chunks_removed == 0
    assert len(churn) == 2 + MARK_ROUNDS


class _SweptAfterTouch:
    """A driver on which every touch (a chunk copied onto itself) is followed at once by its
    deletion: what a GC whose stat-then-delete straddles the touch does."""

    def __init__(self, driver) -> None:
        self._driver = driver
        self.swept: list[str] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        return getattr(self._driver, name)

    def copy_within(self, src_key: str, dst_key: str):
        info = self._driver.copy_within(src_key, dst_key)
        with self._lock:  # the backup touches from several threads
            sweep = src_key == dst_key and "/chunks/" in src_key and len(self.swept) < 3
            if sweep:
                self.swept.append(src_key)
        if sweep:
            self._driver.delete(src_key)
        return info


def test_chunks_a_racing_gc_deletes_right_after_their_touch_are_written_again(store, volume, tmp_path):
    first, _ = backup(volume, store, chunk_size=CHUNK)
    delete_manifest(store, first.snapshot_id)  # its chunks are unreferenced: the next backup touches them
    racing = _SweptAfterTouch(store.driver)
    second, stats = backup(volume, ChunkStore(racing, store.prefix), chunk_size=CHUNK, grace=NO_GRACE)
    assert len(racing.swept) == 3 and stats.chunks_rechecked == 3 and stats.chunks_new == 3
    assert not scrub(store).missing
    assert restores_exactly(store, second.snapshot_id, volume, tmp_path)
