"""Migrations that meet trouble: a destination filling up, another migration running, a worker
killed mid-copy; and every provider pair (Local and S3 both ways)."""

from __future__ import annotations

import json
import signal
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from secstor.db.models import ImageStore, TemplateStoreRef
from secstor.domain.states import ObjectInStoreState
from secstor.jobs.handlers import EXTRA_MODULES_ENV
from secstor.jobs.worker import LEASE_ENV
from tests.jobs.conftest import WorkerProcess
from tests.migration.conftest import MIB, copies, finished, read_back, ready_only_on
from tests.stores.helpers import s3_client, tmpfs
from tests.support.jobs_fixtures import EXTRA_MODULES
from tests.support.moto import moto_server_process
from tests.support.server import ServerProcess
from tests.templates.conftest import wait_for

READY = ObjectInStoreState.Ready.value


def visible_files(path) -> list:
    return sorted(p for p in path.rglob("*") if p.is_file() and ".secstor-" not in str(p.relative_to(path)))


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

@pytest.fixture(scope="module")
def api_only(runtime, db_url):
    """A server with no embedded worker and the test commands (testRunJob), so the test decides
    which worker runs a job: jobs go to a queue only these tests' workers serve."""
    srv = ServerProcess(home=runtime.config.home, database_url=db_url, extra_args=["--workers", "0"],
                        env={EXTRA_MODULES_ENV: EXTRA_MODULES}).start()
    yield srv
    srv.stop()


@pytest.fixture
def slow_workers(runtime, db_url):
    """`secstor worker` processes whose migration copies crawl (tests.migration.slow_copy) and
    whose leases expire after 3 s, serving a queue of their own."""
    queue = f"mig-{uuid.uuid4().hex[:8]}"
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        w = WorkerProcess(runtime.config.home, db_url, f"w-{uuid.uuid4().hex[:6]}", f"{queue}=1",
                          {EXTRA_MODULES_ENV: "tests.migration.slow_copy", LEASE_ENV: "3",
                           "SECSTOR_TEST_COPY_DELAY": "0.15"})
        started.append(w)
        return w

    start.queue = queue
    yield start
    for w in started:
        w.close()


def submit_on(cs, queue: str, handler: str, params: dict) -> str:
    return cs.testRunJob(handler=handler, params=json.dumps(params), queue=queue)["jobid"]


def test_a_worker_killed_mid_copy_is_replaced_and_every_object_ends_ready_once(api_only, slow_workers, zone, seed,
                                                                               runtime):
    cs = api_only.cs()
    z = zone(64 * MIB, 64 * MIB)  # capped: both share one file system
    templates = [seed(z.stores[0]["id"], 4 * MIB) for _ in range(3)]
    first = slow_workers()
    jobid = submit_on(cs, slow_workers.queue, "migration.data",
                      {"srcpool": z.stores[0]["id"], "destpools": [z.stores[1]["id"]], "policy": "COMPLETE"})

    def mid_copy():
        job = cs.queryAsyncJobResult(jobid=jobid)
        p = job.get("progress") or {}
        return p.get("bytesdone", 0) > p.get("objectsdone", 0) * 4 * MIB and job

    wait_for(mid_copy, timeout=30)
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
        jobid = submit_on(cs, slow_workers.queue, "migration.data",
                          {"srcpool": z.stores[0]["id"], "destpools": [z.stores[1]["id"]], "policy": "COMPLETE"})
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
