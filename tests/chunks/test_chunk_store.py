"""The snapshot chunk store over Local and S3: round trips, dedup, GC, crash safety, scrub."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import zstandard

from secstor.chunks import (
    ChunkCorrupted,
    ChunkStore,
    ManifestCorrupted,
    backup,
    collect_garbage,
    delete_manifest,
    list_snapshot_ids,
    load_manifest,
    repair,
    restore,
    restore_stream,
    scrub,
)
from secstor.stores import LocalDriver

pytestmark = pytest.mark.nodb

KiB, MiB = 1 << 10, 1 << 20
CHUNK = 64 * KiB
NO_GRACE = timedelta(0)


def write_volume(path: Path, size: int, extents: dict[int, bytes]) -> Path:
    """A sparse raw file of ``size`` bytes holding ``extents`` (offset -> data), holes elsewhere."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in extents.items():
            f.seek(offset)
            f.write(data)
    return path


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pattern(seed: int, length: int) -> bytes:
    return random.Random(seed).randbytes(length)


def is_hole(path: Path, offset: int) -> bool:
    """True if ``offset`` lies in a hole: the next data (if any) starts after it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) > offset
    except OSError:  # ENXIO: only a hole until EOF
        return True
    finally:
        os.close(fd)


def stored_chunks(store: ChunkStore) -> dict[str, int]:
    return {cid: info.size for cid, info in store.iter_chunks()}


@pytest.fixture
def volume(tmp_path) -> Path:
    """4 MiB, 3 data extents (one unaligned, crossing a chunk boundary) and holes between."""
    return write_volume(
        tmp_path / "vol.raw",
        4 * MiB,
        {0: pattern(1, 200 * KiB), 1 * MiB + 1000: pattern(2, 150 * KiB), 3 * MiB: pattern(3, 64 * KiB)},
    )


def test_round_trip_is_byte_exact_and_keeps_holes(store, volume, tmp_path):
    manifest, stats = backup(volume, store, chunk_size=CHUNK)
    assert stats.bytes_read < 1 * MiB  # the allocated data, not the 4 MiB virtual size

    target = tmp_path / "restored.raw"
    restore(load_manifest(store, manifest.snapshot_id), store, target)
    assert target.stat().st_size == volume.stat().st_size
    assert sha(target) == sha(volume)
    assert is_hole(target, 2 * MiB) and is_hole(target, 3 * MiB + 64 * KiB)
    assert target.stat().st_blocks * 512 <= 640 * KiB  # only the data chunks were written
    assert hashlib.sha256(b"".join(restore_stream(manifest, store))).hexdigest() == sha(volume)


def test_restore_replaces_every_byte_of_an_existing_target(store, volume, tmp_path):
    manifest, _ = backup(volume, store, chunk_size=CHUNK)
    target = write_volume(tmp_path / "old.raw", 8 * MiB, {2 * MiB: pattern(9, MiB), 7 * MiB: b"x" * 100})
    restore(manifest, store, target)
    assert sha(target) == sha(volume)


def test_incremental_after_small_overwrite_adds_only_changed_chunks(store, volume):
    first, full = backup(volume, store, chunk_size=CHUNK)
    overwrite(volume, 10 * KiB, b"new" * 1000)  # inside chunk 0
    overwrite(volume, 3 * MiB + CHUNK - 10, b"z" * 20)  # crosses chunks 48 and 49
    second, incremental = backup(volume, store, first)
    assert incremental.chunks_new == 3
    assert incremental.chunk_bytes_added < full.chunk_bytes_added / 2
    assert second.parent_id == first.snapshot_id
    assert sum(a != b for a, b in zip(first.chunk_ids, second.chunk_ids, strict=True)) == 3


def test_identical_content_in_two_volumes_is_stored_once(store, volume, tmp_path):
    twin = tmp_path / "twin.raw"
    twin.write_bytes(volume.read_bytes())  # same content, not sparse: holes are written zeros
    _, first = backup(volume, store, chunk_size=CHUNK)
    before = stored_chunks(store)
    _, second = backup(twin, store, chunk_size=CHUNK)
    assert second.chunks_new == 0 and second.chunk_bytes_added == 0
    assert stored_chunks(store) == before


def test_zero_chunks_and_holes_are_never_stored(store, tmp_path):
    zeros_written = write_volume(tmp_path / "z.raw", 2 * MiB, {0: bytes(MiB), MiB + 5: b"data"})
    manifest, stats = backup(zeros_written, store, chunk_size=CHUNK)
    assert stats.chunks_new == 1 and len(stored_chunks(store)) == 1
    assert stats.chunks_zero == MiB // CHUNK  # read (allocated) but all zeros
    assert [i for i, cid in enumerate(manifest.chunk_ids) if cid] == [MiB // CHUNK]


def test_all_holes_8_gib_volume_reads_and_stores_nothing(store, tmp_path):
    holes = write_volume(tmp_path / "holes.raw", 8 << 30, {})
    manifest, stats = backup(holes, store)
    assert stats.bytes_read == 0 and stats.chunks_new == 0
    assert stored_chunks(store) == {}
    target = tmp_path / "restored.raw"
    restore(manifest, store, target)
    assert target.stat().st_size == 8 << 30 and target.stat().st_blocks == 0


def test_deleting_a_middle_snapshot_keeps_the_others_restorable(store, volume, tmp_path):
    manifests, contents = [], []
    previous = None
    for step in range(3):
        overwrite(volume, 700 * KiB, pattern(100 + step, 100 * KiB))  # same place, new data
        previous, _ = backup(volume, store, previous, chunk_size=CHUNK)
        manifests.append(previous)
        contents.append(sha(volume))
    delete_manifest(store, manifests[1].snapshot_id)
    gc = collect_garbage(store, grace=NO_GRACE)
    assert gc.chunks_removed > 0  # the middle snapshot's own chunks went away
    assert sorted(list_snapshot_ids(store)) == sorted([manifests[0].snapshot_id, manifests[2].snapshot_id])
    for index in (0, 2):
        target = tmp_path / f"r{index}.raw"
        restore(load_manifest(store, manifests[index].snapshot_id), store, target)
        assert sha(target) == contents[index]


def test_gc_removes_only_unreferenced_chunks_and_honours_the_grace(store, volume):
    kept, _ = backup(volume, store, chunk_size=CHUNK)
    overwrite(volume, 0, pattern(50, 3 * CHUNK))
    dropped, _ = backup(volume, store, kept)
    only_dropped = dropped.referenced() - kept.referenced()
    delete_manifest(store, dropped.snapshot_id)

    assert collect_garbage(store).chunks_removed == 0  # default grace: too young to sweep
    gc = collect_garbage(store, grace=NO_GRACE)
    assert gc.chunks_removed == len(only_dropped) == 3
    assert gc.bytes_removed > 0
    assert set(stored_chunks(store)) == kept.referenced()
    assert scrub(store).ok


def test_gc_during_a_backup_never_removes_its_chunks(store, volume, tmp_path):
    garbage, _ = backup(write_volume(tmp_path / "g.raw", MiB, {0: pattern(77, MiB)}), store, chunk_size=CHUNK)
    delete_manifest(store, garbage.snapshot_id)
    seen = {}

    def gc_midway(stats):
        if stats.chunks_new == 3 and not seen:
            before = stored_chunks(store)
            seen["gc"] = collect_garbage(store, grace=NO_GRACE)
            seen["lost"] = set(before) - set(stored_chunks(store)) - garbage.referenced()

    manifest, _ = backup(volume, store, chunk_size=CHUNK, on_progress=gc_midway)
    assert seen["lost"] == set()  # not one chunk of the running backup
    # Real garbage goes (S3 times have 1 s resolution, so the mid-way GC may keep it as
    # "as young as the running backup"; once the backup is done nothing holds it).
    collect_garbage(store, grace=NO_GRACE)
    assert set(stored_chunks(store)) == manifest.referenced()
    target = tmp_path / "r.raw"
    restore(manifest, store, target)
    assert sha(target) == sha(volume)


def test_backup_reusing_chunks_of_a_snapshot_deleted_meanwhile_survives_gc(store, volume, tmp_path):
    """The touch rule: reused chunks are refreshed, so a GC after the old manifest's
    deletion cannot sweep them from under the running backup."""
    old, _ = backup(volume, store, chunk_size=CHUNK)
    done = []

    def delete_old_and_collect(stats):
        if not done:
            delete_manifest(store, old.snapshot_id)
            done.append(collect_garbage(store, grace=NO_GRACE))

    manifest, stats = backup(volume, store, chunk_size=CHUNK, grace=NO_GRACE, on_progress=delete_old_and_collect)
    assert stats.chunks_touched >= 1
    target = tmp_path / "r.raw"
    restore(load_manifest(store, manifest.snapshot_id), store, target)
    assert sha(target) == sha(volume)
    assert not scrub(store).missing


def test_a_backup_killed_midway_leaves_no_snapshot_and_the_next_one_works(store, volume, tmp_path):
    class Killed(Exception):
        pass

    def die(stats):
        if stats.chunks_new == 2:
            raise Killed

    with pytest.raises(Killed):
        backup(volume, store, chunk_size=CHUNK, snapshot_id="snap-killed", on_progress=die)
    assert list_snapshot_ids(store) == []
    assert list(store.driver.list(f"{store.prefix}/writers/")) == []  # GC is not held back
    assert len(stored_chunks(store)) >= 2  # orphans, for GC

    manifest, stats = backup(volume, store, chunk_size=CHUNK, snapshot_id="snap-killed")
    assert list_snapshot_ids(store) == ["snap-killed"] and stats.chunks_reused >= 2
    target = tmp_path / "r.raw"
    restore(load_manifest(store, "snap-killed"), store, target)
    assert sha(target) == sha(volume)


def test_a_stale_writer_marker_of_a_killed_process_stops_protecting(store, volume):
    store.driver.put(store.writer_key("dead"), [b"{}"])  # what a backup killed by kill -9 leaves
    backup(volume, store, chunk_size=CHUNK, snapshot_id="s1")
    delete_manifest(store, "s1")  # its chunks are now as unreferenced as the dead backup's
    assert collect_garbage(store, grace=NO_GRACE).chunks_removed == 0  # still protected
    gc = collect_garbage(store, grace=NO_GRACE, stale_writer_age=NO_GRACE)
    assert gc.stale_writers_removed == 1 and gc.chunks_removed > 0


def _corrupt_one_chunk(store: ChunkStore, cid: str) -> None:
    key = store.chunk_key(cid)
    blob = bytearray(b"".join(store.driver.open_reader(key)))
    blob[len(blob) // 2] ^= 0x01
    store.driver.put(key, [bytes(blob)])


def test_scrub_detects_a_corrupted_chunk_and_repair_fixes_it_from_another_store(store, other_store, volume, tmp_path):
    manifest, _ = backup(volume, store, chunk_size=CHUNK)
    backup(volume, other_store, chunk_size=CHUNK)
    victim = manifest.chunk_ids[0]
    _corrupt_one_chunk(store, victim)

    report = scrub(store)
    assert report.damaged == {victim} and not report.ok
    assert report.affected_snapshots == {manifest.snapshot_id}
    with pytest.raises(ChunkCorrupted):
        restore(manifest, store, tmp_path / "bad.raw")

    repair(store, report, from_store=other_store)
    assert report.repaired == {victim} and report.ok
    assert scrub(store).ok
    restore(manifest, store, tmp_path / "good.raw")
    assert sha(tmp_path / "good.raw") == sha(volume)


def test_scrub_reports_a_missing_chunk(store, volume):
    manifest, _ = backup(volume, store, chunk_size=CHUNK)
    store.delete_chunk(manifest.chunk_ids[-1] or next(c for c in reversed(manifest.chunk_ids) if c))
    report = scrub(store)
    assert len(report.missing) == 1 and report.affected_snapshots == {manifest.snapshot_id}


def test_a_tampered_manifest_is_refused(store, volume):
    manifest, _ = backup(volume, store, chunk_size=CHUNK)
    key = store.manifest_key(manifest.snapshot_id)
    raw = manifest.to_json()
    first, last = manifest.chunk_ids[0], manifest.chunk_ids[-1] or manifest.chunk_ids[1]
    store.driver.put(key, [zstandard.ZstdCompressor().compress(raw.replace(first.encode(), last.encode(), 1))])
    with pytest.raises(ManifestCorrupted):
        load_manifest(store, manifest.snapshot_id)


def test_chunk_objects_follow_the_documented_layout(store, tmp_path):
    """One format byte then the payload: R raw (random data), Z a zstd frame (compressible data)."""
    random_data, text = pattern(11, CHUNK), (b"secstor chunk " * CHUNK)[:CHUNK]
    volume = write_volume(tmp_path / "v.raw", 2 * CHUNK, {0: random_data, CHUNK: text})
    manifest, _ = backup(volume, store, chunk_size=CHUNK)
    keys = sorted(info.key for info in store.driver.list(f"{store.prefix}/"))
    raw_id, zstd_id = manifest.chunk_ids
    assert f"snapshots/1/7/chunks/{raw_id[:4]}/{raw_id}" in keys
    assert f"snapshots/1/7/manifests/{manifest.snapshot_id}.json.zst" in keys
    raw_blob, zstd_blob = store.get_blob(raw_id), store.get_blob(zstd_id)
    assert raw_blob == b"R" + random_data  # a single byte of overhead on incompressible data
    assert zstd_blob[:1] == b"Z" and zstandard.ZstdDecompressor().decompress(zstd_blob[1:]) == text
    assert [size for _cid, size in manifest.chunks] == [len(raw_blob), len(zstd_blob)]
    assert store.driver.stat(store.chunk_key(zstd_id)).size == len(zstd_blob)


@pytest.mark.parametrize("blob", [b"", b"SSCK\x01\x00\x00\x00", b"X" + bytes(100)], ids=["empty", "old-header", "unknown"])
def test_an_object_of_an_unknown_format_is_refused_as_corrupted(store, volume, blob):
    manifest, _ = backup(volume, store, chunk_size=CHUNK)
    victim = manifest.chunk_ids[0]
    store.driver.put(store.chunk_key(victim), [blob])
    with pytest.raises(ChunkCorrupted, match="empty|unknown chunk format byte 0x(53|58)"):
        store.get_chunk(victim)
    assert scrub(store).damaged == {victim}


def _doc_restore_script() -> str:
    """The shell block of docs/layout.md's "Restoring a volume by hand"."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "layout.md").read_text()
    section = doc[doc.index("**Restoring a volume by hand**"):]
    return section[section.index("```sh\n") + 6 : section.index("\n```", section.index("```sh"))]


@pytest.mark.skipif(not all(shutil.which(t) for t in ("jq", "zstd", "bash")), reason="needs jq, zstd and bash")
def test_an_operator_restores_a_volume_by_hand_with_the_documented_script(tmp_path):
    store = ChunkStore(LocalDriver(tmp_path / "store"), "snapshots/1/7")
    volume = write_volume(tmp_path / "vol.raw", 3 * CHUNK + 1000, {
        0: pattern(21, 100 * KiB), 2 * CHUNK: (b"compressible " * CHUNK)[: CHUNK + 1000]})
    manifest, _ = backup(volume, store, chunk_size=CHUNK)
    work = tmp_path / "work"
    work.mkdir()
    script = (_doc_restore_script().replace("/tmp/", f"{work}/")
              .replace("<store root>/<prefix>", str(tmp_path / "store" / store.prefix))
              .replace("<snapshot id>", manifest.snapshot_id))
    subprocess.run(["bash", "-c", script], check=True, capture_output=True)
    assert sha(tmp_path / "store" / store.prefix / "volume.raw") == sha(volume)
