"""registerTemplate / registerIso / listTemplates / listIsos / deleteTemplate through the real API,
downloading from a real local HTTP server into real Local stores."""

from __future__ import annotations

import hashlib
import time

import pytest
from cs import CloudStackApiException

from tests.support.httpserver import Fault
from tests.templates.conftest import MIB, wait_for

pytestmark = pytest.mark.usefixtures("loopback_allowed")


def api_error(call, **params) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        call(**params)
    return err.value.error


def register(cs, zone, url, name, **params) -> dict:
    params = {"format": "QCOW2", "hypervisor": "KVM", "displaytext": name, **params}
    answer = cs.registerTemplate(name=name, url=url, zoneid=zone.id, **params)
    assert answer["count"] == 1 and len(answer["template"]) == 1
    return answer["template"][0]


def listed(cs, template_id, *, iso=False, **params) -> dict | None:
    if iso:
        items = cs.listIsos(id=template_id, isofilter=params.pop("isofilter", "self"), **params).get("iso", [])
    else:
        items = cs.listTemplates(id=template_id, templatefilter=params.pop("templatefilter", "self"),
                                 **params).get("template", [])
    return items[0] if items else None


def settled(cs, template_id, **kw) -> dict:
    """The template once every copy finished downloading, successfully or not."""
    def done():
        t = listed(cs, template_id, **kw)
        states = [d["downloadState"] for d in t["downloaddetails"]]
        return t if all(s in ("DOWNLOADED", "DOWNLOAD_ERROR") for s in states) else None
    return wait_for(done)


def delete_and_wait(cs, template_id, **params) -> None:
    job = cs.deleteTemplate(id=template_id, fetch_result=True, **params)
    assert job["success"] is True


def test_qcow2_template_is_downloaded_verified_and_listed_as_ready(admin_cs, make_zone, serve, images, unique_name):
    zone = make_zone()
    content = images["qcow2"]
    url = serve(content, "disk.qcow2")
    first = register(admin_cs, zone, url, unique_name)
    assert first["name"] == unique_name and first["isready"] is False and first["zoneid"] == zone.id
    assert first["format"] == "QCOW2" and first["hypervisor"] == "KVM" and first["templatetype"] == "USER"

    t = settled(admin_cs, first["id"])
    assert t["status"] == "Download Complete" and t["isready"] is True
    assert t["size"] == 2 * MIB and t["physicalsize"] == len(content)
    assert t["checksum"] == hashlib.sha512(content).hexdigest()  # computed when none is given, hex only
    assert t["downloaddetails"] == [{"datastore": zone.stores[0]["name"], "datastoreId": zone.stores[0]["id"],
                                     "datastoreRole": "Image", "downloadPercent": "100",
                                     "downloadState": "DOWNLOADED"}]
    image, = [f for f in zone.files(0) if f.suffix == ".qcow2"]
    assert image.relative_to(zone.paths[0]).parts[:2] == ("template", "tmpl")  # CloudStack's layout
    assert image.read_bytes() == content
    properties = dict(line.split("=", 1) for line in (image.parent / "template.properties").read_text().splitlines())
    assert properties["filename"] == image.name and properties["virtualsize"] == str(2 * MIB)
    assert properties["checksum"] == "{SHA-512}" + hashlib.sha512(content).hexdigest()
    # listed in the zone and by the filters that show Ready templates
    assert listed(admin_cs, t["id"], templatefilter="selfexecutable", zoneid=zone.id)["id"] == t["id"]
    delete_and_wait(admin_cs, t["id"])


def test_iso_is_successfully_installed(admin_cs, make_zone, serve, images, unique_name):
    zone = make_zone()
    iso = images["iso"]
    answer = admin_cs.registerIso(name=unique_name, displaytext=unique_name, url=serve(iso, "cd.iso"), zoneid=zone.id,
                                  checksum="{sha-256}" + hashlib.sha256(iso).hexdigest().upper())
    assert answer["count"] == 1 and answer["iso"][0]["bootable"] is True
    i = settled(admin_cs, answer["iso"][0]["id"], iso=True)
    assert i["status"] == "Successfully Installed" and i["isready"] is True
    assert i["checksum"] == hashlib.sha256(iso).hexdigest()
    assert "format" not in i
    assert listed(admin_cs, i["id"]) is None  # an ISO is not a template
    admin_cs.deleteIso(id=i["id"], fetch_result=True)
    assert listed(admin_cs, i["id"], iso=True) is None


def test_wrong_checksum_ends_in_download_error_and_stores_nothing(admin_cs, make_zone, serve, images, unique_name):
    zone = make_zone()
    content = images["qcow2"]
    wrong = hashlib.sha256(b"something else").hexdigest()
    t = register(admin_cs, zone, serve(content), unique_name, checksum="{SHA-256}" + wrong)
    t = settled(admin_cs, t["id"])
    actual = hashlib.sha256(content).hexdigest()
    assert t["status"] == f'checksum "{{SHA-256}}{actual}" didn\'t match the given value, "{{SHA-256}}{wrong}"'
    assert t["isready"] is False and t["downloaddetails"][0]["downloadState"] == "DOWNLOAD_ERROR"
    assert zone.files(0) == []
    delete_and_wait(admin_cs, t["id"])


def test_unknown_checksum_algorithm_is_431_and_registers_nothing(admin_cs, make_zone, serve, images, unique_name):
    zone = make_zone()
    err = api_error(admin_cs.registerTemplate, name=unique_name, displaytext="x", format="QCOW2", hypervisor="KVM",
                    url=serve(images["qcow2"]), zoneid=zone.id, checksum="{SHA-3}" + "0" * 64)
    assert err["errorcode"] == 431 and err["errortext"] == "checksum algorithm not recognised: SHA-3"
    assert admin_cs.listTemplates(templatefilter="self", name=unique_name) == {}


@pytest.mark.parametrize("params,param_text", [
    ({"format": "VDI"}, "Image format: VDI is incorrect"),
    ({"url": "file:///etc/passwd"}, "Invalid url file:///etc/passwd"),
])
def test_bad_format_or_url_scheme_is_431(admin_cs, make_zone, unique_name, params, param_text):
    zone = make_zone()
    base = {"name": unique_name, "displaytext": "x", "format": "QCOW2", "hypervisor": "KVM",
            "url": "http://example.org/a.qcow2", "zoneid": zone.id}
    err = api_error(admin_cs.registerTemplate, **{**base, **params})
    assert err["errorcode"] == 431 and err["errortext"].startswith(param_text)


def test_404_url_ends_in_download_error(admin_cs, make_zone, web, unique_name):
    zone = make_zone()
    t = settled(admin_cs, register(admin_cs, zone, web.url(f"/missing/{unique_name}.qcow2"), unique_name)["id"])
    assert t["status"] == "HTTP 404 Not Found" and t["isready"] is False
    delete_and_wait(admin_cs, t["id"])


def test_internal_url_is_refused_when_no_site_is_allowed(admin_cs, make_zone, serve, images, unique_name):
    zone = make_zone()
    name = "secstorage.allowed.internal.sites"
    admin_cs.updateConfiguration(name=name, value="")
    try:
        time.sleep(1.2)  # the server's settings cache holds values for a second
        t = settled(admin_cs, register(admin_cs, zone, serve(images["qcow2"]), unique_name)["id"])
    finally:
        admin_cs.updateConfiguration(name=name, value="127.0.0.0/8")
    assert "127.0.0.1" in t["status"] and t["isready"] is False
    assert zone.files(0) == []
    delete_and_wait(admin_cs, t["id"])


@pytest.mark.parametrize("image,declared,reason", [
    ("overlay", "QCOW2", "backing file"),
    ("qcow2", "RAW", "qcow2"),
])
def test_unsafe_or_mislabelled_image_is_refused_and_removed(admin_cs, make_zone, serve, images, unique_name,
                                                           image, declared, reason):
    zone = make_zone()
    t = settled(admin_cs, register(admin_cs, zone, serve(images[image]), unique_name, format=declared)["id"])
    assert t["downloaddetails"][0]["downloadState"] == "DOWNLOAD_ERROR"
    assert reason in t["status"] and t["isready"] is False
    assert [f for f in zone.files(0) if f.name != "template.properties"] == []
    delete_and_wait(admin_cs, t["id"])


def test_private_template_skips_read_only_store(admin_cs, make_zone, serve, images, unique_name):
    zone = make_zone(stores=2, readonly=(0,))
    t = settled(admin_cs, register(admin_cs, zone, serve(images["qcow2"]), unique_name)["id"])
    assert [d["datastore"] for d in t["downloaddetails"]] == [zone.stores[1]["name"]]
    assert zone.files(0) == []
    delete_and_wait(admin_cs, t["id"])


def test_zone_with_only_read_only_stores_refuses_with_530(admin_cs, make_zone, serve, images, unique_name):
    zone = make_zone(stores=1, readonly=(0,))
    err = api_error(admin_cs.registerTemplate, name=unique_name, displaytext="x", format="QCOW2", hypervisor="KVM",
                    url=serve(images["qcow2"]), zoneid=zone.id)
    assert err["errorcode"] == 530
    assert err["errortext"].startswith(f"Unable to find image store to download the template {unique_name}")


def test_public_template_goes_to_every_store_and_delete_removes_every_copy(admin_cs, make_zone, serve, images,
                                                                         unique_name, regular_user):
    zone = make_zone(stores=2)
    t = settled(admin_cs, register(admin_cs, zone, serve(images["qcow2"]), unique_name, ispublic=True,
                                   isfeatured=True)["id"])
    assert sorted(d["datastore"] for d in t["downloaddetails"]) == sorted(s["name"] for s in zone.stores)
    assert {d["downloadState"] for d in t["downloaddetails"]} == {"DOWNLOADED"}
    assert zone.files(0) and zone.files(1)
    # a user sees it as featured and executable, not as its own; details hide store ids
    user_view = listed(regular_user.cs, t["id"], templatefilter="featured")
    assert user_view["isready"] is True and "datastoreId" not in user_view["downloaddetails"][0]
    assert listed(regular_user.cs, t["id"], templatefilter="executable")["id"] == t["id"]
    assert listed(regular_user.cs, t["id"], templatefilter="self") is None
    assert listed(regular_user.cs, t["id"], templatefilter="community") is None
    err = api_error(regular_user.cs.deleteTemplate, id=t["id"])
    assert err["errorcode"] == 531
    delete_and_wait(admin_cs, t["id"])
    assert zone.files(0) == [] and zone.files(1) == []
    assert listed(admin_cs, t["id"], templatefilter="all") is None


def test_users_see_their_own_private_templates_only(admin_cs, make_zone, serve, images, unique_name, regular_user):
    zone = make_zone()
    mine = register(regular_user.cs, zone, serve(images["qcow2"]), unique_name)
    theirs = register(admin_cs, zone, serve(images["qcow2"]), unique_name + "-admin")
    settled(admin_cs, mine["id"], templatefilter="all")
    settled(admin_cs, theirs["id"])
    assert listed(regular_user.cs, mine["id"], templatefilter="selfexecutable")["account"] == \
        regular_user.account["name"]
    for f in ("self", "executable", "featured"):
        assert listed(regular_user.cs, theirs["id"], templatefilter=f) is None
    err = api_error(regular_user.cs.listTemplates, templatefilter="all")
    assert err["errorcode"] == 431 and err["errortext"] == "Filter all can be specified by admin only"
    err = api_error(regular_user.cs.listTemplates, templatefilter="mine")
    assert err["errorcode"] == 431
    delete_and_wait(regular_user.cs, mine["id"])
    delete_and_wait(admin_cs, theirs["id"])


def test_delete_is_refused_while_a_copy_downloads(admin_cs, make_zone, serve, images, unique_name):
    zone = make_zone()
    content = images["qcow2"]
    url = serve(content, fault=Fault(stall_after=len(content) // 2, stall_seconds=3))
    t = register(admin_cs, zone, url, unique_name)
    wait_for(lambda: listed(admin_cs, t["id"])["downloaddetails"][0]["downloadState"] == "DOWNLOAD_IN_PROGRESS")
    err = api_error(admin_cs.deleteTemplate, id=t["id"])
    assert err["errorcode"] == 431
    assert err["errortext"] == "Please specify a template that is not currently being downloaded."
    assert settled(admin_cs, t["id"])["status"] == "Download Complete"
    delete_and_wait(admin_cs, t["id"])
    assert zone.files(0) == []


def test_zone_scoped_delete_keeps_other_zones_copies(admin_cs, make_zone, serve, images, unique_name):
    a, b = make_zone(), make_zone()
    answer = admin_cs.registerTemplate(name=unique_name, displaytext="x", format="QCOW2", hypervisor="KVM",
                                       url=serve(images["qcow2"]), zoneids=f"{a.id},{b.id}")
    assert answer["count"] == 2 and {t["zoneid"] for t in answer["template"]} == {a.id, b.id}
    tid = answer["template"][0]["id"]
    wait_for(lambda: [t["isready"] for t in admin_cs.listTemplates(templatefilter="self", id=tid)["template"]]
             == [True, True])
    delete_and_wait(admin_cs, tid, zoneid=a.id)
    left = admin_cs.listTemplates(templatefilter="self", id=tid)["template"]
    assert [t["zoneid"] for t in left] == [b.id]
    assert a.files(0) == [] and b.files(0)
    delete_and_wait(admin_cs, tid)
    assert b.files(0) == []
