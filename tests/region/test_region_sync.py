"""Templates and ISOs already on a zone's image store are uploaded to the region store once the
zone uses the region (it gets a staging store): listed and pulled in every zone, each object
uploaded exactly once (the bucket is versioned: every PUT is a version), in parallel up to a bound,
and an upload interrupted or failed is resumed or retried without a second upload."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select, update

from secstor.db.models import AsyncJob, ImageStore, TemplateStoreRef, VMTemplate
from secstor.movers.checksums import parse_checksum
from secstor.movers.transfer import copy_verified
from secstor.services import region_sync
from secstor.services.region_sync import queue_uploads, sync_to_region, upload_copy
from tests.region.test_staging_pull import extract, staged
from tests.templates.conftest import wait_for

pytestmark = pytest.mark.usefixtures("loopback_allowed")

HELD = "held"  # a job queue no worker serves: the test decides when (and where) its uploads run
PARALLEL = "secstorage.region.sync.parallel"


@pytest.fixture
def versioned(region):
    """Every PUT of an object becomes a version of it: the versions count the uploads."""
    region.s3.put_bucket_versioning(Bucket=region.bucket, VersioningConfiguration={"Status": "Enabled"})
    yield
    region.s3.put_bucket_versioning(Bucket=region.bucket, VersioningConfiguration={"Status": "Suspended"})


def versions(region, key: str) -> int:
    listed = region.s3.list_object_versions(Bucket=region.bucket, Prefix=key).get("Versions", [])
    return len([v for v in listed if v["Key"] == key])


def unfinished_uploads(region) -> list[str]:
    return [u["Key"] for u in region.s3.list_multipart_uploads(Bucket=region.bucket).get("Uploads", [])]


def listed_in(cs, item: dict, zone: dict) -> dict | None:
    if "format" not in item:  # an ISO
        found = cs.listIsos(isofilter="self", id=item["id"], zoneid=zone["id"]).get("iso", [])
    else:
        found = cs.listTemplates(templatefilter="self", id=item["id"], zoneid=zone["id"]).get("template", [])
    return found[0] if found else None


def ready_in(cs, item: dict, zone: dict) -> dict | None:
    found = listed_in(cs, item, zone)
    return found if found and found.get("isready") else None


def preexisting(cs, region, legacy, url: str, name: str, *, iso: bool = False, keep_readonly: bool = False) -> dict:
    """A template (or ISO) registered in the legacy zone while the region store takes no new data,
    as it would have been before the region store existed: its copy is on the zone's own store."""
    cs.updateImageStore(id=region.store["id"], readonly=True)
    try:
        common = dict(name=name, displaytext=name, url=url, zoneid=legacy.zone["id"], isextractable=True,
                      ostypeid="1")
        item = cs.registerIso(**common)["iso"][0] if iso else \
            cs.registerTemplate(format="QCOW2", hypervisor="KVM", **common)["template"][0]
    finally:
        if not keep_readonly:
            cs.updateImageStore(id=region.store["id"], readonly=False)
    listed = wait_for(lambda: ready_in(cs, item, legacy.zone))
    assert [d["datastore"] for d in listed["downloaddetails"]] == [legacy.store["name"]]
    return item


def join_region(cs, legacy, tmp_path) -> dict:
    return cs.createSecondaryStagingStore(url=f"file://{tmp_path}/staging", zoneid=legacy.zone["id"])[
        "secondarystorage"]


def region_copies(runtime, uuid: str) -> list[TemplateStoreRef]:
    with runtime.session() as s:
        template_id = s.scalar(select(VMTemplate.id).where(VMTemplate.uuid == uuid))
        copies = list(s.scalars(select(TemplateStoreRef).where(TemplateStoreRef.template_id == template_id,
                                                               TemplateStoreRef.zone_id.is_(None))))
        s.expunge_all()
    return copies


def upload_jobs(runtime, uuid: str) -> int:
    with runtime.session() as s:
        return s.scalar(select(func.count()).select_from(AsyncJob).where(
            AsyncJob.handler == region_sync.UPLOAD_HANDLER, AsyncJob.instance_id == uuid))


def sync_pass_state(runtime, store: dict) -> str | None:
    """The state of the pass a new store queued."""
    with runtime.session() as s:
        return s.scalar(select(AsyncJob.state).where(AsyncJob.handler == region_sync.SYNC_HANDLER,
                                                     AsyncJob.instance_id == store["id"]))


def properties_of(key: str) -> str:
    return key.rsplit("/", 1)[0] + "/template.properties"


def uploaded_once(runtime, region, item: dict) -> TemplateStoreRef:
    """The one Ready region copy of ``item``, whose image and properties were each PUT once."""
    (copy,) = region_copies(runtime, item["id"])
    assert copy.state == "Ready" and copy.download_state == "DOWNLOADED"
    assert versions(region, copy.install_path) == 1
    assert versions(region, properties_of(copy.install_path)) == 1
    return copy


def delete_everywhere(cs, region, item: dict, copy: TemplateStoreRef | None = None) -> None:
    if "format" not in item:
        cs.deleteIso(id=item["id"], fetch_result=True)
    else:
        cs.deleteTemplate(id=item["id"], fetch_result=True)
    if copy is not None:
        directory = copy.install_path.rsplit("/", 1)[0] + "/"
        assert [k for k in region.objects() if k.startswith(directory)] == []


def test_zone_templates_and_isos_are_uploaded_once_then_served_in_every_zone(quick_cs, runtime, region, legacy_zone,
                                                                              versioned, serve, images, unique_name,
                                                                              tmp_path):
    template = preexisting(quick_cs, region, legacy_zone, serve(images["qcow2"]), f"{unique_name}-t")
    iso = preexisting(quick_cs, region, legacy_zone, serve(images["iso"], "cd.iso"), f"{unique_name}-i", iso=True)
    zone2 = region.zones[1]
    sync_to_region(runtime)
    # A zone without a staging store does not use the region store: nothing of it is uploaded.
    assert region_copies(runtime, template["id"]) == [] and listed_in(quick_cs, template, zone2) is None

    # The ISO's file rots on the zone store: its upload will fail verification.
    (iso_file,) = legacy_zone.path.rglob("*.iso")
    original = iso_file.read_bytes()
    middle = len(original) // 2
    iso_file.write_bytes(original[:middle] + bytes([original[middle] ^ 0xFF]) + original[middle + 1:])
    try:
        # The zone joins the region: its new staging store queues a pass in the server; two
        # more passes race with it from here.
        join_region(quick_cs, legacy_zone, tmp_path)
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda _: sync_to_region(runtime), range(2)))
        region_detail = {"datastore": region.store["name"], "datastoreId": region.store["id"],
                         "datastoreRole": "Image", "downloadPercent": "100", "downloadState": "DOWNLOADED"}
        assert wait_for(lambda: ready_in(quick_cs, template, zone2))["downloaddetails"] == [region_detail]
        template_copy = uploaded_once(runtime, region, template)
        in_legacy = ready_in(quick_cs, template, legacy_zone.zone)
        assert {d["datastore"] for d in in_legacy["downloaddetails"]} == {legacy_zone.store["name"],
                                                                          region.store["name"]}
        # The failed upload left nothing behind, and the ISO is not ready in zone 2.
        (failed,) = wait_for(lambda: [c for c in region_copies(runtime, iso["id"])
                                      if c.download_state == "DOWNLOAD_ERROR"])
        assert "checksum" in failed.error_text
        key = iso_file.relative_to(legacy_zone.path).as_posix()
        assert versions(region, key) == 0 and key not in unfinished_uploads(region)
        assert listed_in(quick_cs, iso, zone2)["isready"] is False
    finally:
        iso_file.write_bytes(original)
    sync_to_region(runtime)  # the periodic pass queues the failed upload again
    wait_for(lambda: ready_in(quick_cs, iso, zone2))
    iso_copy = uploaded_once(runtime, region, iso)
    # The template took one upload job; the ISO its failed one(s) and the retry that worked (a pass
    # triggered by another upload's end may retry it once more before the file is repaired).
    assert upload_jobs(runtime, template["id"]) == 1 and upload_jobs(runtime, iso["id"]) >= 2
    # Later passes find nothing more to do.
    sync_to_region(runtime)
    assert [len(region_copies(runtime, i["id"])) for i in (template, iso)] == [1, 1]

    # Zone 2 pulls the template from the region store into its staging store.
    before = set(staged(region, 1))
    assert extract(quick_cs, template["id"], zone2) == images["qcow2"]
    assert len(set(staged(region, 1)) - before) == 1

    delete_everywhere(quick_cs, region, template, template_copy)
    delete_everywhere(quick_cs, region, iso, iso_copy)


class WorkerKilled(Exception):
    """The worker running an upload dies (here, in its progress callback: before the commit)."""


def _set(runtime, name: str, value: str | None) -> None:
    with runtime.session() as s:
        runtime.settings.set(s, name, value) if value is not None else runtime.settings.reset(s, name)
    runtime.settings.invalidate()


def test_an_interrupted_upload_resumes_without_a_second_upload_and_the_bound_queues_the_rest(
        quick_cs, runtime, region, legacy_zone, versioned, serve, images, unique_name, tmp_path):
    first = preexisting(quick_cs, region, legacy_zone, serve(images["qcow2"]), f"{unique_name}-1", keep_readonly=True)
    second = preexisting(quick_cs, region, legacy_zone, serve(images["qcow2"]), f"{unique_name}-2",
                         keep_readonly=True)
    staging = join_region(quick_cs, legacy_zone, tmp_path)
    wait_for(lambda: sync_pass_state(runtime, staging) == "succeeded")  # it found no writable region store
    _set(runtime, PARALLEL, "1")
    job_id = None
    try:
        with runtime.session() as s:
            # The region store takes data again and, in the same transaction, a pass queues what
            # the bound allows on a queue no worker serves.
            s.scalars(select(ImageStore).where(ImageStore.uuid == region.store["id"])).one().readonly = False
            s.flush()
            assert queue_uploads(s, runtime, queue=HELD) == 1
        with runtime.session() as s:
            assert queue_uploads(s, runtime, queue=HELD) == 0  # one upload in flight: the bound is reached
        (copy,) = region_copies(runtime, first["id"])
        assert region_copies(runtime, second["id"]) == []
        job_id = copy.job_id
        with runtime.session() as s:
            source_id = json.loads(s.get(AsyncJob, job_id).params_json)["source_ref_id"]
            source = s.get(TemplateStoreRef, source_id)
            zone_driver = runtime.drivers.for_store(s.get(ImageStore, source.store_id))
            region_driver = runtime.drivers.for_store(s.get(ImageStore, copy.store_id))
            key, checksum = source.install_path, source.checksum

        # Attempt 1 dies mid-upload: nothing is visible, no unfinished upload is left.
        def die(_pct):
            raise WorkerKilled()

        with pytest.raises(WorkerKilled):
            upload_copy(runtime, copy.id, source_id, die, logging.getLogger("test"))
        assert versions(region, key) == 0 and key not in unfinished_uploads(region)
        assert region_copies(runtime, first["id"])[0].state == "Creating"
        assert not (listed_in(quick_cs, first, region.zones[1]) or {}).get("isready")
        # Attempt 2 publishes the image, then dies before recording it.
        copy_verified(zone_driver, key, region_driver, key, expected=parse_checksum(checksum))
        assert versions(region, key) == 1
    finally:
        _set(runtime, PARALLEL, None)
        if job_id is not None:  # a worker of the server takes the upload over
            with runtime.session() as s:
                s.execute(update(AsyncJob).where(AsyncJob.id == job_id).values(queue=region_sync.COPY_QUEUE))
    # The resumed upload verifies the published image instead of uploading it again, and once
    # it ends the next upload is queued without waiting for a periodic pass.
    for item in (first, second):
        wait_for(lambda: ready_in(quick_cs, item, region.zones[1]))
    copies = [uploaded_once(runtime, region, item) for item in (first, second)]
    assert [upload_jobs(runtime, item["id"]) for item in (first, second)] == [1, 1]
    assert unfinished_uploads(region) == []
    for item, copy in zip((first, second), copies):
        delete_everywhere(quick_cs, region, item, copy)
