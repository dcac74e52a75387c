"""Fixtures of the migration tests: zones with capped Local stores of their own, templates seeded
straight into a store (private RAW images, so no template sync copies them elsewhere), and
`secstor worker` processes on queues of a test's own, with test hooks (slow copies, crashes,
failing stores) loaded, behind an API-only server that can submit jobs to those queues."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from secstor.db.models import Account, ImageStore, TemplateStoreRef, VMTemplate
from secstor.domain.states import DownloadState, ObjectInStoreState
from secstor.jobs.handlers import EXTRA_MODULES_ENV
from secstor.jobs.worker import LEASE_ENV
from secstor.movers.transfer import write_verified
from secstor.services import templates as svc
from tests.jobs.conftest import WorkerProcess
from tests.support.jobs_fixtures import EXTRA_MODULES
from tests.support.server import ServerProcess
from tests.templates.conftest import wait_for

MIB = 1 << 20
SLOW_COPY = "tests.migration.slow_copy"


@dataclass
class Seeded:
    uuid: str
    id: int
    name: str
    sha256: str
    size: int


def image_bytes(size: int) -> bytes:
    return os.urandom(size)


def seed_template(runtime, store_uuid: str, size: int = 64 * 1024, name: str | None = None) -> Seeded:
    """Install a private RAW template of ``size`` bytes on the store with this UUID, Ready, with
    its template.properties, as a finished download leaves it."""
    content = image_bytes(size)
    name = name or f"t-{uuid.uuid4().hex[:10]}"
    with runtime.session() as s:
        store = s.scalars(select(ImageStore).where(ImageStore.uuid == store_uuid)).one()
        admin = s.scalars(select(Account).where(Account.role == "Admin").order_by(Account.id)).first()
        t = VMTemplate(name=name, displaytext=name, format="RAW", hypervisor="KVM", account_id=admin.id,
                       created=runtime.now())
        s.add(t)
        s.flush()
        ref = TemplateStoreRef(template_id=t.id, store_id=store.id, zone_id=store.zone_id,
                               state=ObjectInStoreState.Allocated.value,
                               download_state=DownloadState.NOT_DOWNLOADED.value, created=runtime.now())
        s.add(ref)
        s.flush()
        ids = (t.id, t.uuid, ref.id)

    def fetch(driver, key, expected, algorithms, progress):
        return write_verified(driver, key, [content], expected=expected, algorithms=algorithms, size_hint=size)

    svc.download_copy(runtime, ids[2], lambda pct: None, logging.getLogger("test"), fetch=fetch)
    return Seeded(ids[1], ids[0], name, hashlib.sha256(content).hexdigest(), size)


@pytest.fixture
def seed(runtime) -> Callable[..., Seeded]:
    """``seed_template`` on the session database."""
    return lambda store_uuid, size=64 * 1024, name=None: seed_template(runtime, store_uuid, size, name)


@dataclass
class Zone:
    id: str
    stores: list[dict]
    paths: list[Path]


@pytest.fixture
def zone(admin_cs, tmp_path, unique_name) -> Callable[..., Zone]:
    """A new zone with Local stores at the given caps (capacitybytes; None: the file system's)."""

    def make(*caps: int | None, paths: list[Path] | None = None) -> Zone:
        suffix = uuid.uuid4().hex[:6]
        z = admin_cs.createZone(name=f"z-{unique_name}-{suffix}", dns1="8.8.8.8", internaldns1="8.8.8.8")["zone"]
        stores, where = [], []
        for i, cap in enumerate(caps):
            path = paths[i] if paths else tmp_path / f"store-{suffix}-{i}"
            store = admin_cs.addImageStore(provider="Local", url=f"file://{path}", name=f"m{i}-{unique_name}-{suffix}",
                                           zoneid=z["id"])["imagestore"]
            if cap:
                store = admin_cs.updateImageStore(id=store["id"], capacitybytes=cap)["imagestore"]
            stores.append(store)
            where.append(path)
        return Zone(z["id"], stores, where)

    return make


def copies(runtime, template_id: int) -> dict[int, str]:
    """store id -> state of every copy of the template."""
    with runtime.session() as s:
        return {r.store_id: r.state for r in s.scalars(select(TemplateStoreRef)
                                                      .where(TemplateStoreRef.template_id == template_id))}


def store_id(runtime, store_uuid: str) -> int:
    with runtime.session() as s:
        return s.scalar(select(ImageStore.id).where(ImageStore.uuid == store_uuid))


def read_back(runtime, store_uuid: str, template_id: int) -> str:
    """SHA-256 of the template's image as the store's driver reads it back."""
    with runtime.session() as s:
        store = s.scalars(select(ImageStore).where(ImageStore.uuid == store_uuid)).one()
        ref = s.scalars(select(TemplateStoreRef).where(TemplateStoreRef.template_id == template_id,
                                                       TemplateStoreRef.store_id == store.id)).one()
        s.expunge_all()
    digest = hashlib.sha256()
    for chunk in runtime.drivers.for_store(store).open_reader(ref.install_path):
        digest.update(chunk)
    return digest.hexdigest()


def finished(cs, jobid: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (lambda j: j if j["jobstatus"] != 0 else None)(cs.queryAsyncJobResult(jobid=jobid)),
                    timeout=timeout)


def ready_only_on(runtime, template: Seeded, store_uuid: str) -> bool:
    return copies(runtime, template.id) == {store_id(runtime, store_uuid): ObjectInStoreState.Ready.value}


def visible_files(path) -> list:
    """The files users see under a Local store's root (not its temporary area)."""
    return sorted(p for p in path.rglob("*") if p.is_file() and ".secstor-" not in str(p.relative_to(path)))


def temp_files(path) -> list:
    return sorted(p for p in (path / ".secstor-tmp").glob("*")) if (path / ".secstor-tmp").exists() else []


# ---- workers the test chooses ------------------------------------------------------------------

@pytest.fixture(scope="package")
def api_only(runtime, db_url):
    """A server with no embedded worker and the test commands (testRunJob), so a test decides
    which worker runs a job: jobs go to a queue only that test's workers serve."""
    srv = ServerProcess(home=runtime.config.home, database_url=db_url, extra_args=["--workers", "0"],
                        env={EXTRA_MODULES_ENV: EXTRA_MODULES}).start()
    yield srv
    srv.stop()


@pytest.fixture
def workers(runtime, db_url):
    """``workers(*hook modules, **env)`` starts a `secstor worker` serving a queue of this test's
    own (``workers.queue``, one job at a time) with the test hooks loaded (tests.migration.*:
    slow copies, crashes and failures at chosen points) and leases of 3 s."""
    queue = f"mig-{uuid.uuid4().hex[:8]}"
    started: list[WorkerProcess] = []

    def start(*modules: str, **env: str) -> WorkerProcess:
        w = WorkerProcess(runtime.config.home, db_url, f"w-{uuid.uuid4().hex[:6]}", f"{queue}=1",
                          {EXTRA_MODULES_ENV: ",".join(modules), LEASE_ENV: "3", **env})
        started.append(w)
        return w

    start.queue = queue
    yield start
    for w in started:
        w.close()


@pytest.fixture
def slow_workers(workers):
    """Workers whose migration copies crawl (tests.migration.slow_copy)."""

    def start(**env: str) -> WorkerProcess:
        return workers(SLOW_COPY, **{"SECSTOR_TEST_COPY_DELAY": "0.15", **env})

    start.queue = workers.queue
    return start


def submit_on(cs, queue: str, handler: str, params: dict) -> str:
    return cs.testRunJob(handler=handler, params=json.dumps(params), queue=queue)["jobid"]


def complete_on(cs, queue: str, src: dict, dst: dict) -> str:
    """A Complete migration from ``src`` to ``dst`` (image store responses) on ``queue``."""
    return submit_on(cs, queue, "migration.data", {"srcpool": src["id"], "destpools": [dst["id"]],
                                                   "policy": "COMPLETE"})


def mid_copy(cs, jobid: str, object_size: int):
    """The job, once it reports bytes copied beyond its finished objects (a copy is under way)."""
    job = cs.queryAsyncJobResult(jobid=jobid)
    p = job.get("progress") or {}
    return p.get("bytesdone", 0) > p.get("objectsdone", 0) * object_size and job
