"""Migrations that meet trouble: a destination filling up or failing for good, another migration
running, a worker killed mid-copy or between the switch and the source's deletion, the whole
service killed, a cancellation; and every provider pair (Local and S3 both ways)."""

from __future__ import annotations

import signal
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from secstor.config import Config
from secstor.db.models import AsyncJob, ImageStore, TemplateStoreRef
from secstor.domain.states import ObjectInStoreState
from secstor.jobs.handlers import EXTRA_MODULES_ENV
from secstor.jobs.worker import LEASE_ENV
from secstor.services.bootstrap import open_runtime
from tests.jobs.conftest import WorkerProcess
from tests.migration.conftest import (
    MIB, SLOW_COPY, complete_on, copies, finished, mid_copy, read_back, ready_only_on, seed_template, store_id,
    submit_on, temp_files, visible_files,
)
from tests.stores.helpers import s3_client, tmpfs
from tests.support.moto import moto_server_process
from tests.support.server import ServerProcess
from tests.templates.conftest import wait_for

READY = ObjectInStoreState.Ready.value


def test_a_destination_filling_up_mid_migration_leaves_the_rest_ready_on_the_source(admin_cs, zone, seed, runtime,
                                                                                   tmp_path):
    with tmpfs(tmp_path / "small", "4m") as small:
        # The cap makes the planner believe the 4 MiB file system has room for everything.
        z = zone(64 * MIB, 64 * MIB, paths=[tmp_path / "big", small])
        templates = [seed(z.stores[0]["id"], 3 * MIB // 2) for _ in range(3)]
        job = admin_cs.migrateSecondaryStorageData(srcpool=z.stores[0]["id"], destpools=[z.stores[1]["id"]])
        result = finished(admin_cs, job["jobid"])["jobresult"]["imagestore"]
        assert result["success"] is False
        assert result["message"].startswith("Not all data objects were migrated")
        assert result["message"].endswith(". successful migrations: 2")
        not_moved, = result["notmigrated"]
        stuck, = [t for t in templates if t.uuid == not_moved["id"]]
        assert ready_only_on(runtime, stuck, z.stores[0]["id"])
        assert read_back(runtime, z.stores[0]["id"], stuck.id) == stuck.sha256
        for t in templates:
            if t is not stuck:
                assert ready_only_on(runtime, t, z.stores[1]["id"])
                assert read_back(runtime, z.stores[1]["id"], t.id) == t.sha256
        # nothing half-written on the full store: two images and their properties, nothing else
        assert len(visible_files(small)) == 4
        assert not any((small / ".secstor-tmp").glob("*"))


@pytest.fixture(scope="module")
def s3_endpoint():
    with moto_server_process() as endpoint:
        yield endpoint


def test_local_to_s3_and_back(admin_cs, zone, seed, runtime, s3_endpoint, unique_name, tmp_path):
    z = zone(None)
    bucket = f"b-{uuid.uuid4().hex}"
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    s3_store = admin_cs.addImageStoreS3(accesskey="testing", secretkey="testing", endpoint=s3_endpoint, bucket=bucket,
                                        usehttps=False, name=f"s3-{unique_name}", zoneid=z.id)["imagestore"]
    templates = [seed(z.stores[0]["id"], size) for size in (2 * MIB, 300 * 1024)]
    job = admin_cs.migrateSecondaryStorageData(srcpool=z.stores[0]["id"], destpools=[s3_store["id"]],
                                               migrationtype="complete")
    result = finished(admin_cs, job["jobid"])["jobresult"]["imagestore"]
    assert result["success"] is True and result["message"].endswith("successful migrations: 2"), result
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert len([k for k in keys if k.endswith("template.properties")]) == 2
    for t in templates:
        assert ready_only_on(runtime, t, s3_store["id"])
        assert read_back(runtime, s3_store["id"], t.id) == t.sha256
    assert visible_files(z.paths[0]) == []

    local = admin_cs.addImageStore(provider="Local", url=f"file://{tmp_path / 'back'}", name=f"l-{unique_name}",
                                   zoneid=z.id)["imagestore"]
    job = admin_cs.migrateResourceToAnotherSecondaryStorage(srcpool=s3_store["id"], destpool=local["id"],
                                                            templates=[t.uuid for t in templates])
    result = finished(admin_cs, job["jobid"])["jobresult"]["imagestore"]
    assert result["success"] is True and result["message"].endswith("successful migrations: 2"), result
    for t in templates:
        assert ready_only_on(runtime, t, local["id"])
        assert read_back(runtime, local["id"], t.id) == t.sha256
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []


# ---- several workers, one killed ---------------------------------------------------------------

def test_a_worker_killed_mid_copy_is_replaced_and_every_object_ends_ready_once(api_only, slow_workers, zone, seed,
                                                                               runtime):
    cs = api_only.cs()
    z = zone(64 * MIB, 64 * MIB)  # capped: both share one file system
    templates = [seed(z.stores[0]["id"], 4 * MIB) for _ in range(3)]
    # Slow enough (about 2.4 s per object) that a progress write (at most one a second) lands
    # mid-copy even on a busy machine.
    first = slow_workers(SECSTOR_TEST_COPY_DELAY="0.6")
    jobid = complete_on(cs, slow_workers.queue, z.stores[0], z.stores[1])
    wait_for(lambda: mid_copy(cs, jobid, 4 * MIB), timeout=60)
    first.signal(signal.SIGKILL)
    first.wait()
    slow_workers()
    job = finished(cs, jobid, timeout=90)
    assert job["jobstatus"] == 1, job
    result = job["jobresult"]["imagestore"]
    assert result == {"message": "Migration completed. successful migrations: 3", "migrationtype": "COMPLETE",
                      "success": True}
    assert job["progress"]["objectsdone"] == job["progress"]["objectstotal"] == 3
    for t in templates:
        assert ready_only_on(runtime, t, z.stores[1]["id"]), copies(runtime, t.id)
        assert read_back(runtime, z.stores[1]["id"], t.id) == t.sha256
    with runtime.session() as s:
        left = s.scalars(select(TemplateStoreRef).where(TemplateStoreRef.template_id.in_([t.id for t in templates]),
                                                        TemplateStoreRef.state != READY)).all()
        dest = s.scalars(select(ImageStore).where(ImageStore.uuid == z.stores[1]["id"])).one()
        s.expunge_all()
    assert left == []
    assert visible_files(z.paths[0]) == []
    assert len(visible_files(z.paths[1])) == 6
    # the killed worker's unpublished write is all that remains; the stale-write clean-up takes it
    runtime.drivers.for_store(dest).abort_stale_writes(timedelta(0))
    assert not any((z.paths[1] / ".secstor-tmp").glob("*"))


def test_a_second_migration_is_refused_while_one_runs(api_only, slow_workers, zone, seed):
    cs = api_only.cs()
    z = zone(64 * MIB, 64 * MIB, 64 * MIB)  # capped: they share one file system
    seed(z.stores[0]["id"], 24 * MIB)
    slow_workers()
    # the second job runs on a worker of a queue of its own, started now so it is ready in time
    other_queue = slow_workers.queue + "-b"
    second_worker = WorkerProcess(api_only.home, api_only.database_url, f"wb-{uuid.uuid4().hex[:6]}",
                                  f"{other_queue}=1", {})
    try:
        jobid = complete_on(cs, slow_workers.queue, z.stores[0], z.stores[1])
        wait_for(lambda: cs.queryAsyncJobResult(jobid=jobid).get("progress"), timeout=30)
        second = submit_on(cs, other_queue, "migration.data",
                           {"srcpool": z.stores[1]["id"], "destpools": [z.stores[2]["id"]], "policy": "BALANCE"})
        refused = finished(cs, second, timeout=30)
        first_state = cs.queryAsyncJobResult(jobid=jobid)["jobstatus"]
    finally:
        second_worker.close()
    assert refused["jobresult"]["imagestore"] == {"message": "A migrate job is in progress, please try again later...",
                                                  "migrationtype": "BALANCE", "success": False}
    assert first_state == 0  # still running when the second was refused
    assert finished(cs, jobid, timeout=60)["jobresult"]["imagestore"]["success"] is True


def test_a_worker_killed_between_the_switch_and_the_source_delete(api_only, workers, zone, seed, runtime):
    cs = api_only.cs()
    z = zone(64 * MIB, 64 * MIB)
    templates = [seed(z.stores[0]["id"], 256 * 1024) for _ in range(2)]
    src, dst = store_id(runtime, z.stores[0]["id"]), store_id(runtime, z.stores[1]["id"])
    crashing = workers("tests.migration.crash_after_switch")
    jobid = complete_on(cs, workers.queue, z.stores[0], z.stores[1])
    assert crashing.wait(30) == -signal.SIGKILL
    # The switch is committed: the object is the destination's, the source's files are still there.
    states = {t.uuid: copies(runtime, t.id) for t in templates}
    switched = [t for t in templates if states[t.uuid] == {dst: READY, src: ObjectInStoreState.Destroyed.value}]
    assert switched, states
    for t in switched:
        assert read_back(runtime, z.stores[1]["id"], t.id) == t.sha256
    assert len(visible_files(z.paths[0])) == 4  # nothing deleted at the source yet: the stale copies

    workers()
    job = finished(cs, jobid, timeout=60)
    assert job["jobstatus"] == 1 and job["attempts"] == 2, job
    assert job["jobresult"]["imagestore"] == {"message": "Migration completed. successful migrations: 2",
                                              "migrationtype": "COMPLETE", "success": True}
    assert job["progress"]["objectsdone"] == job["progress"]["objectstotal"] == 2
    for t in templates:
        assert ready_only_on(runtime, t, z.stores[1]["id"]), copies(runtime, t.id)
        assert read_back(runtime, z.stores[1]["id"], t.id) == t.sha256
    assert visible_files(z.paths[0]) == []  # the stale copies are gone
    assert len(visible_files(z.paths[1])) == 4  # each image and its template.properties, once


def test_a_destination_failing_for_good_leaves_nothing_on_it_and_the_source_unchanged(api_only, workers, zone, seed,
                                                                                    runtime):
    cs = api_only.cs()
    z = zone(64 * MIB, 64 * MIB)
    templates = [seed(z.stores[0]["id"], 2 * MIB) for _ in range(2)]
    workers("tests.migration.failing_store", SECSTOR_TEST_FAILING_ROOT=str(z.paths[1]))
    job = finished(cs, complete_on(cs, workers.queue, z.stores[0], z.stores[1]), timeout=60)
    assert job["jobstatus"] == 1, job
    result = job["jobresult"]["imagestore"]
    assert result["success"] is False and result["migrationtype"] == "COMPLETE"
    assert result["message"].startswith("Not all data objects were migrated: ")
    assert result["message"].endswith(". successful migrations: 0")
    assert sorted(n["id"] for n in result["notmigrated"]) == sorted(t.uuid for t in templates)
    for n in result["notmigrated"]:
        assert n["kind"] == "template"
        assert n["reason"].startswith(f"copy to image store {z.stores[1]['name']} failed: ")
    for t in templates:
        assert ready_only_on(runtime, t, z.stores[0]["id"]), copies(runtime, t.id)
        assert read_back(runtime, z.stores[0]["id"], t.id) == t.sha256
    # each template.properties landed before its image failed half-way: both removed with it
    assert visible_files(z.paths[1]) == [] and temp_files(z.paths[1]) == []
    # Complete made the source read-only before it began, and it stays so (documented)
    assert cs.listImageStores(id=z.stores[0]["id"])["imagestore"][0]["readonly"] is True


def test_cancelling_a_migration_stops_it_and_leaves_every_object_ready_once(api_only, slow_workers, zone, seed,
                                                                            runtime, admin_cs):
    cs = api_only.cs()
    z = zone(64 * MIB, 64 * MIB)
    templates = [seed(z.stores[0]["id"], 8 * MIB) for _ in range(3)]
    slow_workers(SECSTOR_TEST_COPY_DELAY="0.3")  # 2.4 s an object, two at a time
    jobid = complete_on(cs, slow_workers.queue, z.stores[0], z.stores[1])
    wait_for(lambda: mid_copy(cs, jobid, 8 * MIB), timeout=30)
    assert cs.cancelAsyncJob(jobid=jobid)["asyncjobs"]["cancelrequested"] is True
    job = finished(cs, jobid, timeout=30)
    assert (job["jobstatus"], job["jobresult"]["errortext"]) == (3, "The job was cancelled"), job
    where = {}
    for t in templates:
        (store, state), = copies(runtime, t.id).items()  # one copy, wherever the move stood
        assert state == READY
        where[t.uuid] = z.stores[0]["id"] if store == store_id(runtime, z.stores[0]["id"]) else z.stores[1]["id"]
        assert read_back(runtime, where[t.uuid], t.id) == t.sha256
    moved = [u for u, s in where.items() if s == z.stores[1]["id"]]
    assert len(moved) < len(templates)  # it did stop
    # the copies in flight were undone: only whole objects on the destination, no temporary files
    assert len(visible_files(z.paths[1])) == 2 * len(moved) and temp_files(z.paths[1]) == []
    assert admin_cs.listImageStores(id=z.stores[0]["id"])["imagestore"][0]["readonly"] is True

    # nothing is left claimed: a new migration moves the rest
    again = admin_cs.migrateSecondaryStorageData(srcpool=z.stores[0]["id"], destpools=[z.stores[1]["id"]])
    result = finished(admin_cs, again["jobid"])["jobresult"]["imagestore"]
    assert result["success"] is True, result
    assert result["message"] == f"Migration completed. successful migrations: {len(templates) - len(moved)}"
    for t in templates:
        assert ready_only_on(runtime, t, z.stores[1]["id"])
        assert read_back(runtime, z.stores[1]["id"], t.id) == t.sha256


# ---- the whole service killed ------------------------------------------------------------------

@pytest.mark.nodb  # the embedded deployment: one `secstor serve` on its own SQLite database
def test_the_whole_service_killed_mid_migration_resumes_it_after_a_restart(tmp_path):
    home = tmp_path / "home"
    url = f"sqlite:///{home / 'secstor.db'}"
    env = {EXTRA_MODULES_ENV: SLOW_COPY, LEASE_ENV: "3", "SECSTOR_TEST_COPY_DELAY": "0.3"}
    server = ServerProcess(home=home, database_url=url, env=env).start()
    rt = open_runtime(Config(home=home, database_url=url))  # the test's view of that database
    try:
        cs = server.cs()
        zone_id = cs.createZone(name="z-kill", dns1="8.8.8.8", internaldns1="8.8.8.8")["zone"]["id"]
        stores = []
        for i in range(2):
            store = cs.addImageStore(provider="Local", url=f"file://{tmp_path / f's{i}'}", name=f"s{i}",
                                     zoneid=zone_id)["imagestore"]
            stores.append(cs.updateImageStore(id=store["id"], capacitybytes=64 * MIB)["imagestore"])
        templates = [seed_template(rt, stores[0]["id"], 4 * MIB) for _ in range(3)]
        jobid = cs.migrateSecondaryStorageData(srcpool=stores[0]["id"], destpools=[stores[1]["id"]])["jobid"]
        wait_for(lambda: mid_copy(cs, jobid, 4 * MIB), timeout=30)
        server.kill()

        with rt.session() as s:
            assert s.scalar(select(AsyncJob.state).where(AsyncJob.uuid == jobid)) == "running"
        readable = (READY, ObjectInStoreState.Migrating.value)  # a source being copied is intact
        for t in templates:
            assert any(state in readable for state in copies(rt, t.id).values()), copies(rt, t.id)

        server = ServerProcess(home=home, database_url=url, env=env).start()
        job = finished(server.cs(), jobid, timeout=60)
    finally:
        server.stop()
    assert job["jobstatus"] == 1 and job["attempts"] == 2 and "lease expired" in job["lasterror"], job
    assert job["jobresult"]["imagestore"] == {"message": "Migration completed. successful migrations: 3",
                                              "migrationtype": "COMPLETE", "success": True}
    assert job["progress"]["objectsdone"] == job["progress"]["objectstotal"] == 3
    try:
        for t in templates:
            assert ready_only_on(rt, t, stores[1]["id"]), copies(rt, t.id)
            assert read_back(rt, stores[1]["id"], t.id) == t.sha256
        assert visible_files(tmp_path / "s0") == []
        assert len(visible_files(tmp_path / "s1")) == 6
        # the killed process's unpublished writes are all that is left; the stale-write clean-up takes them
        with rt.session() as s:
            dest = s.scalars(select(ImageStore).where(ImageStore.uuid == stores[1]["id"])).one()
            s.expunge(dest)
        rt.drivers.for_store(dest).abort_stale_writes(timedelta(0))
        assert temp_files(tmp_path / "s1") == []
    finally:
        rt.close()
