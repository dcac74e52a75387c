"""copyTemplate / copyIso through the real API: templates downloaded from a real HTTP server into
Local stores, copied to other zones' Local stores and to an S3 store (a real moto server)."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from cs import CloudStackApiException

from tests.stores.helpers import s3_client
from tests.support.moto import moto_server_process
from tests.templates.conftest import wait_for

pytestmark = pytest.mark.usefixtures("loopback_allowed")


@pytest.fixture(scope="module")
def s3_endpoint():
    with moto_server_process() as endpoint:
        yield endpoint


def api_error(call, **params) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        call(**params)
    return err.value.error


def finished(cs, jobid: str) -> dict:
    return wait_for(lambda: (lambda j: j if j["jobstatus"] != 0 else None)(cs.queryAsyncJobResult(jobid=jobid)))


def ready_template(cs, zone, url: str, name: str, **params) -> dict:
    t = cs.registerTemplate(name=name, displaytext=name, format="QCOW2", hypervisor="KVM", url=url, zoneid=zone.id,
                            **params)["template"][0]
    return wait_for(lambda: (cs.listTemplates(templatefilter="self", id=t["id"], zoneid=zone.id).get("template")
                             or [{}])[0].get("isready") and t)


def by_zone(cs, template_id: str, *, iso: bool = False) -> dict[str, dict]:
    items = (cs.listIsos(isofilter="self", id=template_id).get("iso", []) if iso
             else cs.listTemplates(templatefilter="self", id=template_id).get("template", []))
    return {t["zoneid"]: t for t in items}


def image_file(zone, index: int = 0):
    image, = [f for f in zone.files(index) if f.name != "template.properties"]
    return image


def test_copy_to_another_zones_local_store_is_verified_and_listed_in_both(admin_cs, make_zone, serve, images,
                                                                         unique_name):
    a, b = make_zone(), make_zone()
    content = images["qcow2"]
    t = ready_template(admin_cs, a, serve(content), unique_name)
    jobid = admin_cs.copyTemplate(id=t["id"], destzoneid=b.id)["jobid"]
    job = finished(admin_cs, jobid)
    assert job["jobstatus"] == 1, job
    result = job["jobresult"]["template"]
    assert (result["id"], result["zoneid"], result["isready"]) == (t["id"], b.id, True)
    assert result["status"] == "Download Complete"
    assert job["progress"]["bytesdone"] == job["progress"]["bytestotal"] == len(content)
    assert job["queue"] == "copy"

    listed = by_zone(admin_cs, t["id"])
    assert set(listed) == {a.id, b.id} and all(z["isready"] for z in listed.values())
    assert listed[b.id]["checksum"] == listed[a.id]["checksum"] == hashlib.sha512(content).hexdigest()
    source, copy = image_file(a), image_file(b)
    assert copy.read_bytes() == content
    # the same CloudStack layout on both stores, with its template.properties
    assert copy.relative_to(b.paths[0]) == source.relative_to(a.paths[0])
    assert (copy.parent / "template.properties").read_text() == (source.parent / "template.properties").read_text()

    # copying again to a zone that has a Ready copy changes nothing there
    again = finished(admin_cs, admin_cs.copyTemplate(id=t["id"], destzoneids=b.id)["jobid"])
    assert again["jobstatus"] == 1 and again["jobresult"]["template"]["zoneid"] == b.id
    assert len(by_zone(admin_cs, t["id"])[b.id]["downloaddetails"]) == 1
    admin_cs.deleteTemplate(id=t["id"], fetch_result=True)
    assert a.files(0) == [] and b.files(0) == []


def test_copy_to_an_s3_store_of_another_zone(admin_cs, make_zone, serve, images, unique_name, s3_endpoint):
    a, b = make_zone(), make_zone(stores=0)
    bucket = f"b-{uuid.uuid4().hex}"
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    store = admin_cs.addImageStoreS3(accesskey="testing", secretkey="testing", endpoint=s3_endpoint, bucket=bucket,
                                     usehttps=False, name=unique_name, zoneid=b.id)["imagestore"]
    content = images["qcow2"]
    t = ready_template(admin_cs, a, serve(content), unique_name)
    job = finished(admin_cs, admin_cs.copyTemplate(id=t["id"], destzoneid=b.id, sourcezoneid=a.id)["jobid"])
    assert job["jobstatus"] == 1, job

    listed = by_zone(admin_cs, t["id"])
    assert listed[b.id]["isready"] is True
    assert listed[b.id]["downloaddetails"] == [{"datastore": store["name"], "datastoreId": store["id"],
                                                "datastoreRole": "Image", "downloadPercent": "100",
                                                "downloadState": "DOWNLOADED"}]
    key = str(image_file(a).relative_to(a.paths[0]))
    copied = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha512(copied).hexdigest() == listed[a.id]["checksum"] == listed[b.id]["checksum"]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {key, key.rsplit("/", 1)[0] + "/template.properties"}
    admin_cs.deleteTemplate(id=t["id"], fetch_result=True)
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []


def test_copy_iso_to_several_zones(admin_cs, make_zone, serve, images, unique_name):
    a, b, c = make_zone(), make_zone(), make_zone()
    iso = images["iso"]
    i = admin_cs.registerIso(name=unique_name, displaytext="x", url=serve(iso, "cd.iso"), zoneid=a.id)["iso"][0]
    wait_for(lambda: by_zone(admin_cs, i["id"], iso=True)[a.id]["isready"])
    job = finished(admin_cs, admin_cs.copyIso(id=i["id"], destzoneids=f"{b.id},{c.id}")["jobid"])
    assert job["jobstatus"] == 1 and job["jobresult"]["iso"]["zoneid"] == b.id
    assert job["progress"] == {"bytesdone": 2 * len(iso), "bytestotal": 2 * len(iso), "objectsdone": 2,
                               "objectstotal": 2}
    listed = by_zone(admin_cs, i["id"], iso=True)
    assert {z: v["status"] for z, v in listed.items()} == {z.id: "Successfully Installed" for z in (a, b, c)}
    assert image_file(b).read_bytes() == image_file(c).read_bytes() == iso
    admin_cs.deleteIso(id=i["id"], fetch_result=True)


def test_copy_of_a_corrupted_source_fails_with_the_reason_and_leaves_nothing(admin_cs, make_zone, serve, images,
                                                                            unique_name):
    a, b = make_zone(), make_zone()
    content = images["qcow2"]
    t = ready_template(admin_cs, a, serve(content), unique_name)
    source = image_file(a)
    source.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))  # bit rot since the checksum was recorded
    job = finished(admin_cs, admin_cs.copyTemplate(id=t["id"], destzoneid=b.id)["jobid"])
    assert job["jobstatus"] == 2 and job["jobresult"]["errorcode"] == 530
    assert "didn't match the given value" in job["jobresult"]["errortext"]
    failed = by_zone(admin_cs, t["id"])[b.id]
    assert failed["isready"] is False and "didn't match the given value" in failed["status"]
    assert failed["downloaddetails"][0]["downloadState"] == "DOWNLOAD_ERROR"
    assert b.files(0) == []

    # once the source is sound again, copying again replaces the failed copy
    source.write_bytes(content)
    assert finished(admin_cs, admin_cs.copyTemplate(id=t["id"], destzoneid=b.id)["jobid"])["jobstatus"] == 1
    assert by_zone(admin_cs, t["id"])[b.id]["isready"] is True and image_file(b).read_bytes() == content
    admin_cs.deleteTemplate(id=t["id"], fetch_result=True)


def test_copy_to_a_zone_without_eligible_store_fails_530(admin_cs, make_zone, serve, images, unique_name):
    a, b = make_zone(), make_zone(readonly=(0,))
    t = ready_template(admin_cs, a, serve(images["qcow2"]), unique_name)
    job = finished(admin_cs, admin_cs.copyTemplate(id=t["id"], destzoneid=b.id)["jobid"])
    assert job["jobstatus"] == 2 and job["jobresult"]["errorcode"] == 530
    assert job["jobresult"]["errortext"].startswith(f"Unable to find image store to copy the template {unique_name}")
    assert set(by_zone(admin_cs, t["id"])) == {a.id}
    admin_cs.deleteTemplate(id=t["id"], fetch_result=True)


def test_bad_copy_requests_are_431(admin_cs, make_zone, web, serve, images, unique_name):
    a, b = make_zone(), make_zone()
    broken = admin_cs.registerTemplate(name=unique_name, displaytext="x", format="QCOW2", hypervisor="KVM",
                                       url=web.url(f"/missing/{unique_name}.qcow2"), zoneid=a.id)["template"][0]
    wait_for(lambda: by_zone(admin_cs, broken["id"])[a.id]["downloaddetails"][0]["downloadState"] == "DOWNLOAD_ERROR")
    err = api_error(admin_cs.copyTemplate, id=broken["id"], destzoneid=b.id)
    assert (err["errorcode"], err["errortext"]) == (431, f"There is no template {broken['id']} ready on image store.")

    t = ready_template(admin_cs, a, serve(images["qcow2"]), unique_name + "-ok")
    for params, text in (
        ({"destzoneid": b.id, "destzoneids": b.id}, "Parameters destzoneid and destzoneids cannot be specified together"),
        ({}, "Either destzoneid or destzoneids is required"),
        ({"destzoneid": b.id, "sourcezoneid": b.id}, "Please specify different source and destination zones."),
        ({"destzoneid": str(uuid.uuid4())}, "Unable to find zone with specified destzoneid"),
    ):
        err = api_error(admin_cs.copyTemplate, id=t["id"], **params)
        assert err["errorcode"] == 431 and err["errortext"].startswith(text), params
    err = api_error(admin_cs.copyIso, id=t["id"], destzoneid=b.id)  # a template is not an ISO
    assert err["errorcode"] == 431
    assert set(by_zone(admin_cs, t["id"])) == {a.id}
    for tid in (t["id"], broken["id"]):
        admin_cs.deleteTemplate(id=tid, fetch_result=True)
