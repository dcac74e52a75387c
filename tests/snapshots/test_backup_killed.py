"""kill -9 of the `secstor worker` running a snapshot's backup: no half snapshot is ever listed
as BackedUp, another worker takes the job over and finishes it, and the snapshot restores
exactly."""

from __future__ import annotations

import signal
import uuid

from sqlalchemy import select

from secstor.db.models import AsyncJob, Snapshot, Volume
from secstor.jobs import engine
from secstor.jobs.handlers import EXTRA_MODULES_ENV
from secstor.jobs.worker import LEASE_ENV
from secstor.services import snapshots as snaps
from tests.jobs.conftest import WorkerProcess
from tests.snapshots.conftest import content, store_root, wait_for

CHUNK = 256 * 1024


def test_a_worker_killed_mid_backup_leaves_no_half_snapshot_and_another_finishes_it(fast_admin, pool_zone, runtime,
                                                                                     db_url):
    pz = pool_zone("RAW")
    volume = fast_admin.createVolume(name="killed", zoneid=pz.zone_id, size=1)["volume"]
    file = pz.pool_file("RAW", volume["path"])
    with open(file, "r+b") as f:  # 40 chunks of data: ~1 s of slowed chunk writes per attempt
        for index in range(40):
            f.seek(index * 3 * CHUNK)
            f.write(uuid.uuid4().bytes * (CHUNK // 16))
    expected = content(file)

    queue = f"snap-{uuid.uuid4().hex[:8]}"  # served only by this test's workers
    with runtime.session() as s:
        row = s.scalars(select(Volume).where(Volume.uuid == volume["id"])).one()
        snap = snaps.new_snapshot(s, row, name=None, snapshot_type=snaps.MANUAL, interval_type=snaps.MANUAL,
                                  policy_id=None, now=runtime.now())
        job = engine.enqueue(s, cmd="createSnapshot", handler=snaps.CREATE_HANDLER, params={"snapshot_id": snap.id},
                       account_id=row.account_id, user_id=None, instance_type="Snapshot", instance_id=snap.uuid,
                       queue=queue, now=runtime.now())
        snap_id, snap_uuid, job_id = snap.id, snap.uuid, job.id
        prefix = snaps.chunk_prefix(row.account_id, row.id)
    chunk_store = store_root(fast_admin, pz.zone_id) / prefix

    def listed() -> dict:
        return fast_admin.listSnapshots(id=snap_uuid)["snapshot"][0]

    def worker() -> WorkerProcess:
        return WorkerProcess(runtime.config.home, db_url, f"w-{uuid.uuid4().hex[:6]}", f"{queue}=1",
                             {EXTRA_MODULES_ENV: "tests.snapshots.slow_chunks", LEASE_ENV: "3",
                              "SECSTOR_TEST_CHUNK_DELAY": "0.1"})

    workers = {w.worker_id: w for w in (worker(), worker())}
    try:
        wait_for(lambda: len(list(chunk_store.glob("chunks/*/*"))) >= 4, timeout=30)  # mid-backup
        with runtime.session() as s:
            victim = workers[s.get(AsyncJob, job_id).lease_owner]
        victim.signal(signal.SIGKILL)
        victim.wait()
        survivor = next(w for w in workers.values() if w is not victim)
        stored = len(list(chunk_store.glob("chunks/*/*")))
        assert 4 <= stored < 40
        with runtime.session() as s:
            assert s.get(Snapshot, snap_id).state == "BackingUp"
        assert listed()["state"] == "BackingUp" and listed()["revertable"] is False
        assert not list(chunk_store.glob("manifests/*"))  # no manifest: nothing restorable is claimed

        def backed_up() -> bool:
            state, manifests = listed()["state"], list(chunk_store.glob("manifests/*"))
            # the manifest is written before the state says BackedUp, never the other way round
            assert state != "BackedUp" or manifests
            return state == "BackedUp"

        wait_for(backed_up, timeout=60)
    finally:
        for w in workers.values():
            w.close()
    assert "attempt 2/" in survivor.log_text()
    assert fast_admin.listVolumes(id=volume["id"])["volume"][0]["state"] == "Ready"
    made = fast_admin.createVolume(snapshotid=snap_uuid, name="after-kill")["volume"]
    assert content(pz.pool_file("RAW", made["path"])) == expected
    # the next snapshot of the volume works as usual and shares every chunk
    assert fast_admin.createSnapshot(volumeid=volume["id"])["snapshot"]["state"] == "BackedUp"
    assert len(list(chunk_store.glob("chunks/*/*"))) == 40
