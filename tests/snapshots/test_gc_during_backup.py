"""Chunk garbage collection running in the middle of a backup (grace 0): it removes only the
chunks no snapshot uses, never one the running backup has reused or written, and the snapshot
restores exactly."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest
from sqlalchemy import select

from secstor.chunks import DEFAULT_CHUNK_SIZE, ChunkStore
from secstor.chunks.store import chunk_id
from secstor.db.models import ImageStore, Volume
from secstor.services import snapshots as snaps
from tests.snapshots.conftest import content

CHUNK = DEFAULT_CHUNK_SIZE


def write_blocks(path, blocks: dict[int, bytes]) -> None:
    """Write whole chunk-sized blocks at these chunk indices."""
    with open(path, "r+b") as f:
        for index, data in blocks.items():
            f.seek(index * CHUNK)
            f.write(data)


@pytest.fixture
def gc_grace_zero(runtime):
    with runtime.session() as s:
        runtime.settings.set(s, "snapshot.gc.grace", "0")
    yield
    with runtime.session() as s:
        runtime.settings.reset(s, "snapshot.gc.grace")


class GatedPuts:
    """Holds every chunk write of the backup except those of ``early`` until ``release`` is set;
    ``wait_paused`` returns once the early ones are stored and a later one is held."""

    def __init__(self, monkeypatch, early: set[str]) -> None:
        self.early, self.stored_early = early, set()
        self.holding, self.release = threading.Event(), threading.Event()
        real = ChunkStore.put_chunk

        def put_chunk(store, cid, data, **kwargs):
            if cid not in self.early:
                self.holding.set()
                assert self.release.wait(30), "the test never released the backup"
            result = real(store, cid, data, **kwargs)
            if cid in self.early:
                self.stored_early.add(cid)
            return result

        monkeypatch.setattr(ChunkStore, "put_chunk", put_chunk)

    def wait_paused(self) -> None:
        deadline = time.monotonic() + 30
        while not (self.holding.is_set() and self.stored_early == self.early):
            assert time.monotonic() < deadline, "the backup never reached its pause"
            time.sleep(0.01)


@pytest.mark.usefixtures("gc_grace_zero")
def test_gc_while_a_backup_runs_removes_only_unreferenced_chunks(fast_admin, pool_zone, runtime, monkeypatch):
    pz = pool_zone("RAW")
    volume = fast_admin.createVolume(name="gc", zoneid=pz.zone_id, size=1)["volume"]
    file = pz.pool_file("RAW", volume["path"])
    block = {name: os.urandom(CHUNK) for name in ("a0", "a1", "o1", "o2", "o3", "n1", "n2")}
    ids = {name: chunk_id(data) for name, data in block.items()}

    write_blocks(file, {0: block["a0"], 1: block["a1"]})
    kept = fast_admin.createSnapshot(volumeid=volume["id"])["snapshot"]  # holds a0, a1
    write_blocks(file, {0: block["o1"], 1: block["o2"], 10: block["o3"]})
    deleted = fast_admin.createSnapshot(volumeid=volume["id"])["snapshot"]
    fast_admin.deleteSnapshot(id=deleted["id"])  # o1, o2, o3 are now used by no snapshot
    time.sleep(0.05)  # the store's clock is coarse: the backup must start visibly after they were written

    # The running backup reuses o1 and writes n1 before its pause, then n2, a0 and o2 (which GC
    # removes meanwhile: it is written again).
    write_blocks(file, {0: block["o1"], 1: block["n1"], 2: block["a0"], 3: block["n2"], 4: block["o2"],
                        10: bytes(CHUNK)})
    expected = content(file)
    gate = GatedPuts(monkeypatch, early={ids["o1"], ids["n1"]})
    with runtime.session() as s:
        row = s.scalars(select(Volume).where(Volume.uuid == volume["id"])).one()
        snap = snaps.new_snapshot(s, row, name="running", snapshot_type=snaps.MANUAL, interval_type=snaps.MANUAL,
                                  policy_id=None, now=runtime.now())
        snap_id, snap_uuid = snap.id, snap.uuid
        store_id = s.scalar(select(ImageStore.id).where(ImageStore.uuid == kept["datastoreid"]))
    failure: list[BaseException] = []

    def run_backup() -> None:
        try:
            snaps.take_snapshot(runtime, snap_id, logging.getLogger("test.gc"))
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    backup = threading.Thread(target=run_backup)
    backup.start()
    try:
        gate.wait_paused()
        totals = snaps.collect_store_garbage(runtime, store_id)
    finally:
        gate.release.set()
        backup.join(60)
    assert not failure, failure
    assert totals["chunksremoved"] == 2  # o2 and o3; o1 (touched), n1 (new), a0 and a1 (referenced) stay

    listed = fast_admin.listSnapshots(id=snap_uuid)["snapshot"][0]
    assert listed["state"] == "BackedUp"
    made = fast_admin.createVolume(snapshotid=snap_uuid, name="gc-restored")["volume"]
    assert content(pz.pool_file("RAW", made["path"])) == expected
    assert snaps.scrub_store(runtime, store_id, repair_damage=False)["ok"] is True  # no manifest lost a chunk
