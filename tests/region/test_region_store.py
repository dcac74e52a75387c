"""A region-wide S3 store with zone staging stores, through the real API and `secstor serve`:
staging store commands, one canonical copy region-wide listed ready in every zone."""

from __future__ import annotations

import pytest
from cs import CloudStackApiException

from tests.templates.conftest import wait_for

pytestmark = pytest.mark.usefixtures("loopback_allowed")


def api_error(call, **params) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        call(**params)
    return err.value.error


def by_zone(cs, template_id: str) -> dict[str, dict]:
    return {t["zoneid"]: t for t in cs.listTemplates(templatefilter="self", id=template_id).get("template", [])}


def test_s3_store_without_zone_is_region_wide(admin_cs, region):
    listed = admin_cs.listImageStores(id=region.store["id"])["imagestore"][0]
    assert listed["scope"] == "REGION" and "zoneid" not in listed and listed["providername"] == "S3"


def test_staging_stores_are_listed_apart_from_image_stores(admin_cs, region):
    zone = region.zones[1]
    staging = admin_cs.listSecondaryStagingStores(zoneid=zone["id"])
    assert staging["count"] == 1
    assert staging["imagestore"][0]["id"] == region.staging[1]["id"]
    assert staging["imagestore"][0]["providername"] == "Local" and staging["imagestore"][0]["protocol"] == "file"
    assert admin_cs.listSecondaryStagingStores(id=region.staging[0]["id"])["imagestore"][0]["zoneid"] == \
        region.zones[0]["id"]
    # A staging store is no image store: listImageStores leaves it out, as CloudStack does.
    assert admin_cs.listImageStores(zoneid=zone["id"]).get("imagestore", []) == []
    # Nor is an image store a staging store.
    assert admin_cs.listSecondaryStagingStores(id=region.store["id"]).get("imagestore", []) == []


def test_staging_store_bad_input_is_refused(admin_cs, region, tmp_path):
    error = api_error(admin_cs.createSecondaryStagingStore, url=f"file://{tmp_path}/s3", provider="S3",
                      zoneid=region.zones[0]["id"])
    assert error["errorcode"] == 431 and "provider" in error["errortext"]
    error = api_error(admin_cs.createSecondaryStagingStore, url="file://relative/path", zoneid=region.zones[0]["id"])
    assert error["errorcode"] == 431
    error = api_error(admin_cs.deleteSecondaryStagingStore, id=region.store["id"])
    assert error["errorcode"] == 431 and "staging" in error["errortext"]
    assert admin_cs.listImageStores(id=region.store["id"])["count"] == 1


def test_register_once_is_ready_in_every_zone(admin_cs, region, serve, images, unique_name):
    zone1, zone2 = region.zones
    t = admin_cs.registerTemplate(name=unique_name, displaytext=unique_name, format="QCOW2", hypervisor="KVM",
                                  url=serve(images["qcow2"]), zoneid=zone1["id"])["template"][0]
    listed = wait_for(lambda: (lambda z: z if all(z.get(zone["id"], {}).get("isready") for zone in region.zones)
                               else None)(by_zone(admin_cs, t["id"])))
    for zone in region.zones:
        assert listed[zone["id"]]["zonename"] == zone["name"]
        assert listed[zone["id"]]["downloaddetails"] == [{
            "datastore": region.store["name"], "datastoreId": region.store["id"], "datastoreRole": "Image",
            "downloadPercent": "100", "downloadState": "DOWNLOADED"}]
    listed2 = admin_cs.listTemplates(templatefilter="self", id=t["id"], zoneid=zone2["id"])["template"]
    assert [x["zoneid"] for x in listed2] == [zone2["id"]] and listed2[0]["isready"] is True
    # One canonical copy region-wide, on S3, none on the staging stores.
    assert len([k for k in region.objects() if k.endswith(".qcow2")]) == 1
    assert all(not list(p.rglob("*.qcow2")) for p in region.staging_paths)

    admin_cs.deleteTemplate(id=t["id"], fetch_result=True)
    assert admin_cs.listTemplates(templatefilter="self", id=t["id"]).get("template", []) == []
    assert [k for k in region.objects() if k.startswith("template/")] == []


def test_a_second_staging_store_can_be_added_and_deleted(admin_cs, region, tmp_path):
    extra = admin_cs.createSecondaryStagingStore(url=f"file://{tmp_path}/extra", zoneid=region.zones[0]["id"],
                                                 provider="local")["secondarystorage"]
    assert extra["providername"] == "Local" and extra["zoneid"] == region.zones[0]["id"]
    assert admin_cs.listSecondaryStagingStores(zoneid=region.zones[0]["id"])["count"] == 2
    assert admin_cs.deleteSecondaryStagingStore(id=extra["id"]) == {"success": True}
    assert admin_cs.listSecondaryStagingStores(id=extra["id"]).get("imagestore", []) == []
