"""Download faults through the real API: dropped and stalled connections, full stores, dead workers,
resetTemplateDownload, stale temporary files, and a new store receiving the zone's public templates."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from secstor.db.models import Account, AsyncJob, ImageStore, TemplateStoreRef, VMTemplate
from secstor.domain import templates as dt
from secstor.services.template_sync import clean_stale_writes, sync_all
from tests.support.httpserver import Fault
from tests.templates.conftest import wait_for
from tests.templates.test_templates_api import api_error, delete_and_wait, listed, register, settled

pytestmark = pytest.mark.usefixtures("loopback_allowed")


def _set(cs, name: str, value: str) -> None:
    cs.updateConfiguration(name=name, value=value)
    time.sleep(1.2)  # the server's settings cache holds values for a second


def test_dropped_connection_is_resumed_with_range(admin_cs, make_zone, web, serve, images, unique_name):
    zone = make_zone()
    content = images["qcow2"]
    url = serve(content, "disk.qcow2", fault=Fault(drop_after=len(content) // 3))
    t = settled(admin_cs, register(admin_cs, zone, url, unique_name,
                                   checksum="{SHA-256}" + hashlib.sha256(content).hexdigest())["id"])
    assert t["status"] == "Download Complete" and t["isready"] is True
    requests = web.requests(urlsplit(url).path)
    assert len(requests) == 2 and requests[1]["range"] == f"bytes={len(content) // 3}-"
    image, = [f for f in zone.files(0) if f.suffix == ".qcow2"]
    assert image.read_bytes() == content
    delete_and_wait(admin_cs, t["id"])


def test_stalled_download_is_detected_and_resumed(admin_cs, make_zone, web, serve, images, unique_name):
    zone = make_zone()
    content = images["qcow2"]
    url = serve(content, fault=Fault(stall_after=len(content) // 2, stall_seconds=20))
    name = "secstorage.download.stall.timeout"
    before = admin_cs.listConfigurations(name=name)["configuration"][0]["value"]
    _set(admin_cs, name, "1")
    try:
        started = time.monotonic()
        t = settled(admin_cs, register(admin_cs, zone, url, unique_name)["id"])
    finally:
        _set(admin_cs, name, before)
    assert t["status"] == "Download Complete"
    assert time.monotonic() - started < 15  # not waiting out the 20 s stall
    assert web.requests(urlsplit(url).path)[1]["range"] == f"bytes={len(content) // 2}-"
    assert t["checksum"] == hashlib.sha512(content).hexdigest()
    delete_and_wait(admin_cs, t["id"])


def _fill(admin_cs, zone, index: int) -> None:
    """Make store ``index`` of ``zone`` full: a cap just under what it already holds."""
    (zone.paths[index] / "filler.bin").write_bytes(b"x" * 1000)
    store = admin_cs.updateImageStore(id=zone.stores[index]["id"], capacitybytes=1000)["imagestore"]
    assert store["disksizeused"] >= store["disksizetotal"] == 1000


def test_full_store_is_skipped_and_only_full_stores_is_530(admin_cs, make_zone, serve, images, unique_name):
    zone = make_zone(stores=2)
    _fill(admin_cs, zone, 0)
    t = settled(admin_cs, register(admin_cs, zone, serve(images["qcow2"]), unique_name, ispublic=True)["id"])
    assert [d["datastore"] for d in t["downloaddetails"]] == [zone.stores[1]["name"]]
    assert t["isready"] is True
    delete_and_wait(admin_cs, t["id"])

    full = make_zone()
    _fill(admin_cs, full, 0)
    err = api_error(admin_cs.registerTemplate, name=unique_name, displaytext="x", format="QCOW2", hypervisor="KVM",
                    url=serve(images["qcow2"]), zoneid=full.id)
    assert err["errorcode"] == 530 and err["errortext"].startswith("Unable to find image store")


def test_reset_downloads_a_failed_copy_again_once_the_server_is_fixed(admin_cs, make_zone, serve, images,
                                                                      unique_name):
    zone = make_zone()
    content = images["qcow2"]
    url = serve(content, fault=Fault(status=404, times=1))  # missing at first, there later
    t = settled(admin_cs, register(admin_cs, zone, url, unique_name)["id"])
    assert t["status"] == "HTTP 404 Not Found" and t["downloaddetails"][0]["downloadState"] == "DOWNLOAD_ERROR"

    answer = admin_cs.resetTemplateDownload(id=t["id"])
    assert answer["template"][0]["downloaddetails"][0]["downloadState"] in ("NOT_DOWNLOADED", "DOWNLOAD_IN_PROGRESS",
                                                                          "DOWNLOADED")
    t = settled(admin_cs, t["id"])
    assert t["status"] == "Download Complete" and t["isready"] is True
    assert t["checksum"] == hashlib.sha512(content).hexdigest()

    err = api_error(admin_cs.resetTemplateDownload, id=t["id"])  # Ready: nothing to reset
    assert err["errorcode"] == 431 and err["errortext"].endswith(f"image store {zone.stores[0]['name']} is Ready")
    err = api_error(admin_cs.resetTemplateDownload, id=t["id"], storeid=str(uuid.uuid4()))
    assert err["errorcode"] == 431 and "storeid" in err["errortext"]
    delete_and_wait(admin_cs, t["id"])


def _orphan_download(runtime, zone, url: str, name: str, *, attempts: int, max_attempts: int) -> tuple[int, int]:
    """A copy whose download job's worker died mid-way (running, lease expired): (template id, ref id)."""
    with runtime.session() as s:
        store = s.query(ImageStore).filter_by(uuid=zone.stores[0]["id"]).one()
        admin = s.query(Account).filter_by(role="Admin").order_by(Account.id).first()
        template = VMTemplate(name=name, displaytext=name, format="QCOW2", hypervisor="KVM", url=url,
                              account_id=admin.id, created=runtime.now())
        s.add(template)
        s.flush()
        ref = TemplateStoreRef(template_id=template.id, store_id=store.id, zone_id=store.zone_id, state="Creating",
                               download_state="DOWNLOAD_IN_PROGRESS", download_pct=40, created=runtime.now())
        s.add(ref)
        s.flush()
        past = runtime.now() - timedelta(minutes=5)
        job = AsyncJob(cmd="registerTemplate", handler="template.download", params_json=f'{{"ref_id": {ref.id}}}',
                       queue="default", state="running", jobstatus=0, attempts=attempts, max_attempts=max_attempts,
                       lease_owner="dead-worker", lease_expires=past, started=past, created=past,
                       instance_type="Template", instance_id=template.uuid)
        s.add(job)
        s.flush()
        ref.job_id = job.id
        return template.id, ref.id


def test_copy_of_a_job_out_of_attempts_ends_download_error_and_can_be_reset(admin_cs, runtime, make_zone, serve,
                                                                            images, unique_name):
    zone = make_zone()
    _orphan_download(runtime, zone, serve(images["qcow2"]), unique_name, attempts=1, max_attempts=1)
    tid = admin_cs.listTemplates(templatefilter="all", name=unique_name)["template"][0]["id"]
    t = settled(admin_cs, tid, templatefilter="all")
    assert t["downloaddetails"][0]["downloadState"] == "DOWNLOAD_ERROR"
    assert t["status"].startswith("Job failed after 1 attempts: the worker running it died")
    admin_cs.resetTemplateDownload(id=tid, storeid=zone.stores[0]["id"])
    assert settled(admin_cs, tid, templatefilter="all")["status"] == "Download Complete"
    delete_and_wait(admin_cs, tid)


def test_retried_download_removes_what_the_dead_attempt_left(admin_cs, runtime, make_zone, serve, images,
                                                             unique_name):
    zone = make_zone()
    content = images["qcow2"]
    template_id, _ref = _orphan_download(runtime, zone, serve(content), unique_name, attempts=1, max_attempts=5)
    with runtime.session() as s:
        account_id = s.get(VMTemplate, template_id).account_id
    leftover = zone.paths[0] / dt.install_dir(account_id, template_id) / "published-by-dead-attempt.qcow2"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(content[:1000])
    tid = admin_cs.listTemplates(templatefilter="all", name=unique_name)["template"][0]["id"]
    assert settled(admin_cs, tid, templatefilter="all")["status"] == "Download Complete"
    files = [f for f in zone.files(0) if f.name != "template.properties"]
    assert len(files) == 1 and files[0].read_bytes() == content and not leftover.exists()
    delete_and_wait(admin_cs, tid)


def test_stale_temporary_files_are_removed_and_fresh_ones_kept(admin_cs, runtime, make_zone):
    zone = make_zone()
    tmp = zone.paths[0] / ".secstor-tmp"
    tmp.mkdir(exist_ok=True)
    stale, fresh = tmp / "dead-worker-write", tmp / "live-write"
    stale.write_bytes(b"half an image")
    fresh.write_bytes(b"being written")
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))
    assert clean_stale_writes(runtime) >= 1
    assert not stale.exists() and fresh.exists()


def test_new_store_receives_the_zone_public_templates(admin_cs, runtime, make_zone, serve, images, unique_name,
                                                      tmp_path):
    zone = make_zone()
    content = images["qcow2"]
    public = settled(admin_cs, register(admin_cs, zone, serve(content), unique_name, ispublic=True)["id"])
    private = settled(admin_cs, register(admin_cs, zone, serve(content), unique_name + "-private")["id"])
    path = tmp_path / "added-later"
    added = admin_cs.addImageStore(provider="Local", url=f"file://{path}", name=f"late-{unique_name}",
                                   zoneid=zone.id)["imagestore"]

    def copied():
        t = listed(admin_cs, public["id"])
        states = {d["datastore"]: d["downloadState"] for d in t["downloaddetails"]}
        return t if states.get(added["name"]) == "DOWNLOADED" else None

    t = wait_for(copied)
    assert len(t["downloaddetails"]) == 2
    images_on_new = [f for f in path.rglob("*.qcow2")]
    assert len(images_on_new) == 1 and images_on_new[0].read_bytes() == content
    assert (images_on_new[0].parent / "template.properties").is_file()
    assert [d["datastore"] for d in listed(admin_cs, private["id"])["downloaddetails"]] == [zone.stores[0]["name"]]
    sync_all(runtime)
    assert len(listed(admin_cs, public["id"])["downloaddetails"]) == 2  # idempotent: no second copy
    delete_and_wait(admin_cs, public["id"])
    delete_and_wait(admin_cs, private["id"])
    assert list(path.rglob("*.qcow2")) == []
