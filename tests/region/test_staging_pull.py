"""Pull on first use into a zone's staging store, later uses served from it, and
least-recently-used eviction of staging copies (the periodic task's function called directly)."""

from __future__ import annotations

import urllib.request
import uuid

import pytest

from secstor.services.staging import evict_staging_copies
from tests.templates.conftest import wait_for

pytestmark = pytest.mark.usefixtures("loopback_allowed")


def ready_everywhere(cs, region, url: str, name: str, hypervisor: str = "KVM") -> dict:
    t = cs.registerTemplate(name=name, displaytext=name, format="QCOW2", hypervisor=hypervisor, url=url,
                            zoneid=region.zones[0]["id"], isextractable=True, ostypeid="1")["template"][0]
    wait_for(lambda: all(x.get("isready") for x in cs.listTemplates(templatefilter="self", id=t["id"],
                                                                     zoneid=region.zones[1]["id"]).get("template", [])))
    return t


def extract(cs, template_id: str, zone: dict) -> bytes:
    answer = cs.extractTemplate(id=template_id, mode="HTTP_DOWNLOAD", zoneid=zone["id"], fetch_result=True)
    assert answer["template"]["zoneid"] == zone["id"]
    with urllib.request.urlopen(answer["template"]["url"], timeout=10) as reply:
        return reply.read()


def staged(region, zone_index: int) -> list:
    """The image files a zone's staging store holds."""
    return sorted(region.staging_paths[zone_index].rglob("*.qcow2"))


def test_extract_in_another_zone_pulls_once_then_serves_from_staging(admin_cs, region, serve, images, unique_name):
    content = images["qcow2"]
    t = ready_everywhere(admin_cs, region, serve(content), unique_name)
    before = set(staged(region, 1))
    assert extract(admin_cs, t["id"], region.zones[1]) == content
    pulled = sorted(set(staged(region, 1)) - before)
    assert len(pulled) == 1 and pulled[0].read_bytes() == content
    first = pulled[0].stat()
    zone2 = admin_cs.listTemplates(templatefilter="self", id=t["id"], zoneid=region.zones[1]["id"])["template"][0]
    staging = region.staging[1]
    assert {"datastore": staging["name"], "datastoreId": staging["id"], "datastoreRole": "ImageCache",
            "downloadPercent": "100", "downloadState": "DOWNLOADED"} in zone2["downloaddetails"]

    # The second use is served by the staging copy, not pulled again: it works even with the
    # region's object gone, and the staged file is the same one.
    key = str(pulled[0].relative_to(region.staging_paths[1]))
    region.s3.delete_object(Bucket=region.bucket, Key=key)
    assert extract(admin_cs, t["id"], region.zones[1]) == content
    again = pulled[0].stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    # Zone 1 never needed it: its staging store holds nothing of it.
    assert not (region.staging_paths[0] / key).exists()

    admin_cs.deleteTemplate(id=t["id"], fetch_result=True)
    assert not pulled[0].exists()
    assert admin_cs.listTemplates(templatefilter="self", id=t["id"]).get("template", []) == []


def test_deploy_in_another_zone_pulls_into_staging_then_caches_on_the_pool(server, admin_cs, region, serve, images,
                                                                           unique_name, tmp_path):
    cs = server.cs(poll_interval=0.1, job_timeout=60, fetch_result=True)
    zone2 = region.zones[1]
    t = ready_everywhere(admin_cs, region, serve(images["qcow2"]), unique_name, hypervisor="Simulator")
    pool_path = tmp_path / "pool"
    pool = cs.createStoragePool(name=f"p-{unique_name}", zoneid=zone2["id"], url=f"file://{pool_path}", scope="zone",
                                volumeformat="QCOW2")["storagepool"]
    before = set(staged(region, 1))
    vm = cs.deployVirtualMachine(templateid=t["id"], zoneid=zone2["id"], serviceofferingid=str(uuid.uuid4()),
                                 name=f"vm-{uuid.uuid4().hex[:6]}")["virtualmachine"]
    try:
        assert vm["state"] == "Running" and vm["zoneid"] == zone2["id"]
        pulled = sorted(set(staged(region, 1)) - before)
        assert len(pulled) == 1 and pulled[0].read_bytes() == images["qcow2"]  # via zone 2's staging store
        assert [p.name for p in (pool_path / "template-cache").iterdir()] == [t["id"]]
    finally:
        cs.destroyVirtualMachine(id=vm["id"], expunge=True)
        cs.deleteStoragePool(id=pool["id"])
        admin_cs.deleteTemplate(id=t["id"], fetch_result=True)
    assert not pulled[0].exists()


def test_least_recently_used_staging_copy_is_evicted_past_the_fill_level(admin_cs, runtime, region, serve, images,
                                                                        unique_name):
    content = images["qcow2"]
    old = ready_everywhere(admin_cs, region, serve(content), f"{unique_name}-old")
    recent = ready_everywhere(admin_cs, region, serve(content), f"{unique_name}-recent")
    zone1 = region.zones[0]
    extract(admin_cs, old["id"], zone1)
    extract(admin_cs, recent["id"], zone1)
    extract(admin_cs, recent["id"], zone1)  # a later use: "recent" is the most recently used
    held = sum(p.stat().st_size for p in region.staging_paths[0].rglob("*") if p.is_file())
    staging = region.staging[0]
    try:
        assert evict_staging_copies(runtime) == 0  # no cap: far under the fill level
        # Cap the store so it sits past 0.8 full, and dropping one copy brings it back under.
        admin_cs.updateImageStore(id=staging["id"], capacitybytes=int(held * 0.75 / 0.8))
        assert evict_staging_copies(runtime) == 1

        def stores_of(template_id):
            listed = admin_cs.listTemplates(templatefilter="self", id=template_id, zoneid=zone1["id"])["template"]
            return [d["datastore"] for d in listed[0]["downloaddetails"]]

        assert staging["name"] not in stores_of(old["id"])
        assert staging["name"] in stores_of(recent["id"])
        # The evicted copy comes back on its next use.
        assert extract(admin_cs, old["id"], zone1) == content
        assert staging["name"] in stores_of(old["id"])
    finally:
        admin_cs.updateImageStore(id=staging["id"], capacitybytes=0)
        for t in (old, recent):
            admin_cs.deleteTemplate(id=t["id"], fetch_result=True)
