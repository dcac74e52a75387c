"""updateTemplate/updateIso, launch permissions (update/list TemplatePermissions, IsoPermissions)
and what every templatefilter shows to a User and to an Admin, through the real API.

Most templates here are rows made directly in the database (their data is never read); sharing
is always done through the API, and one template goes all the way from registration."""

from __future__ import annotations

import uuid

import pytest
from cs import CloudStackApiException
from sqlalchemy import select

from secstor.db.models import Account, ImageStore, TemplateStoreRef, VMTemplate, Zone
from secstor.domain.states import DownloadState, ObjectInStoreState
from tests.support.api import create_api_user
from tests.templates.conftest import wait_for


def api_error(call, **params) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        call(**params)
    return err.value.error


@pytest.fixture(scope="module")
def other_user(server, admin_cs):
    """A second User account, owner of the templates shared with (or hidden from) regular_user."""
    return create_api_user(server, admin_cs)


@pytest.fixture(scope="module")
def zone(admin_cs, tmp_path_factory):
    suffix = uuid.uuid4().hex[:8]
    z = admin_cs.createZone(name=f"perm-{suffix}", dns1="8.8.8.8", internaldns1="8.8.8.8")["zone"]
    path = tmp_path_factory.mktemp("perm-store")
    store = admin_cs.addImageStore(provider="Local", url=f"file://{path}", name=f"perm-{suffix}",
                                   zoneid=z["id"])["imagestore"]
    return z, store


@pytest.fixture
def make_row(runtime, zone):
    """Insert a template (or ISO) owned by an account, with one copy, Ready or still downloading."""
    zone_row, store_row = zone

    def make(name: str, owner_uuid: str, *, ready: bool = True, is_iso: bool = False, **fields) -> str:
        with runtime.session() as s:
            account = s.scalars(select(Account).where(Account.uuid == owner_uuid)).one()
            zone_id = s.scalars(select(Zone.id).where(Zone.uuid == zone_row["id"])).one()
            store_id = s.scalars(select(ImageStore.id).where(ImageStore.uuid == store_row["id"])).one()
            t = VMTemplate(name=name, displaytext=name, format="ISO" if is_iso else "QCOW2",
                           hypervisor=None if is_iso else "KVM", account_id=account.id, is_iso=is_iso,
                           url="http://example.org/image", ostypeid="os-1", size=1 << 20, physical_size=1 << 20,
                           created=runtime.now(), **fields)
            s.add(t)
            s.flush()
            s.add(TemplateStoreRef(
                template_id=t.id, store_id=store_id, zone_id=zone_id, created=runtime.now(),
                state=ObjectInStoreState.Ready.value if ready else ObjectInStoreState.Creating.value,
                download_state=(DownloadState.DOWNLOADED if ready else DownloadState.DOWNLOAD_IN_PROGRESS).value,
                download_pct=100 if ready else 40))
            return t.uuid

    return make


def names(cs, prefix: str, *, iso: bool = False, **params) -> set[str]:
    """The names listed with this prefix (the matrix of one test), without the prefix."""
    if iso:
        items = cs.listIsos(keyword=prefix, **params).get("iso", [])
    else:
        items = cs.listTemplates(keyword=prefix, **params).get("template", [])
    return {t["name"][len(prefix):] for t in items}


def test_every_filter_shows_a_user_and_an_admin_what_cloudstack_shows(admin_cs, regular_user, other_user, make_row,
                                                                     unique_name):
    p = unique_name + "-"
    user, other = regular_user.account["id"], other_user.account["id"]
    admin = admin_cs.listAccounts(name="admin")["account"][0]["id"]
    make_row(p + "own", user)
    make_row(p + "own-pending", user, ready=False)
    make_row(p + "unshared", other)
    make_row(p + "public", other, is_public=True)
    make_row(p + "featured", admin, is_public=True, featured=True)
    make_row(p + "system", admin, is_public=True, template_type="SYSTEM")
    shared = make_row(p + "shared", other)
    shared_pending = make_row(p + "shared-pending", other, ready=False)
    for tid in (shared, shared_pending):
        assert other_user.cs.updateTemplatePermissions(id=tid, accounts=regular_user.account["name"],
                                                       op="add")["success"] is True

    user_view = {
        "featured": {"featured"},
        "self": {"own", "own-pending"},
        "selfexecutable": {"own"},
        "shared": {"shared", "shared-pending"},
        "sharedexecutable": {"own", "shared"},
        "executable": {"own", "own-pending", "shared", "shared-pending", "public", "featured"},
        "community": {"public"},
    }
    for f, expected in user_view.items():
        assert names(regular_user.cs, p, templatefilter=f) == expected, f
    assert api_error(regular_user.cs.listTemplates, templatefilter="all")["errorcode"] == 431

    admin_view = {
        "featured": {"featured"},
        "self": {"featured", "system"},
        "selfexecutable": {"featured", "system"},
        "shared": set(),
        "sharedexecutable": {"featured", "system"},
        "executable": {"featured", "system", "public"},
        "community": {"public"},
        "all": {"own", "own-pending", "unshared", "public", "featured", "system", "shared", "shared-pending"},
    }
    for f, expected in admin_view.items():
        assert names(admin_cs, p, templatefilter=f) == expected, f
    # the owner of the shared templates still sees them as its own, not as shared
    assert names(other_user.cs, p, templatefilter="shared") == set()
    assert names(other_user.cs, p, templatefilter="self") == {"unshared", "public", "shared", "shared-pending"}
    # regular_user is shared by the whole session: leave it seeing only its own and public objects
    for tid in (shared, shared_pending):
        other_user.cs.updateTemplatePermissions(id=tid, accounts=regular_user.account["name"], op="remove")


def test_permissions_add_remove_reset_and_list(admin_cs, regular_user, other_user, make_row, unique_name):
    p = unique_name + "-"
    tid = make_row(p + "t", other_user.account["id"])
    both = f"{regular_user.account['name']},{admin_cs.listAccounts(name='admin')['account'][0]['name']}"
    other_user.cs.updateTemplatePermissions(id=tid, accounts=both, op="add")
    perms = other_user.cs.listTemplatePermissions(id=tid)["templatepermission"]
    assert perms["id"] == tid and perms["ispublic"] is False
    assert perms["account"] == sorted(["admin", regular_user.account["name"]])
    assert perms["domainid"] == other_user.account["domainid"]
    assert names(regular_user.cs, p, templatefilter="shared") == {"t"}

    other_user.cs.updateTemplatePermissions(id=tid, accounts=regular_user.account["name"], op="remove")
    assert other_user.cs.listTemplatePermissions(id=tid)["templatepermission"]["account"] == ["admin"]
    assert names(regular_user.cs, p, templatefilter="shared") == set()
    assert names(regular_user.cs, p, templatefilter="executable") == set()

    other_user.cs.updateTemplatePermissions(id=tid, op="reset")
    assert other_user.cs.listTemplatePermissions(id=tid)["templatepermission"]["account"] == []
    # a private template's permissions are its owner's business
    assert api_error(regular_user.cs.listTemplatePermissions, id=tid)["errorcode"] == 531

    # making it public shows it to everybody, as a community template
    other_user.cs.updateTemplatePermissions(id=tid, ispublic=True)
    assert names(regular_user.cs, p, templatefilter="community") == {"t"}
    assert regular_user.cs.listTemplatePermissions(id=tid)["templatepermission"]["ispublic"] is True


def test_marvin_permissions_flow_makes_an_admin_template_featured(admin_cs, regular_user, make_row, unique_name):
    p = unique_name + "-"
    tid = make_row(p + "t", admin_cs.listAccounts(name="admin")["account"][0]["id"])
    admin_cs.updateTemplatePermissions(id=tid, isfeatured=True, ispublic=True, isextractable=True)
    t, = admin_cs.listTemplates(templatefilter="featured", id=tid)["template"]
    assert t["ispublic"] is True and t["isfeatured"] is True and t["isextractable"] is True
    assert t["templatetype"] != "SYSTEM"
    assert names(regular_user.cs, p, templatefilter="featured") == {"t"}


@pytest.mark.parametrize("params,code,text", [
    ({"isfeatured": True}, 531, "Only admins may change whether a template or ISO is featured"),
    ({"isextractable": True}, 431, "Only ROOT admins are allowed to modify isExtractable attribute."),
    ({"accounts": "nobody-at-all", "op": "add"}, 431, "Unable to find account nobody-at-all"),
    ({"accounts": "admin"}, 431, "Specify op (add, remove or reset) with accounts or projectids"),
    ({"accounts": "admin", "op": "share"}, 431, "Invalid op share: valid values are add, remove, reset"),
    ({"op": "add"}, 431, "Specify the accounts to add"),
])
def test_bad_permission_updates_are_refused_and_change_nothing(regular_user, make_row, unique_name, params, code,
                                                              text):
    tid = make_row(unique_name, regular_user.account["id"])
    err = api_error(regular_user.cs.updateTemplatePermissions, id=tid, ispublic=True, **params)
    assert (err["errorcode"], err["errortext"]) == (code, text)
    t, = regular_user.cs.listTemplates(templatefilter="self", id=tid)["template"]
    assert t["ispublic"] is False and t["isfeatured"] is False
    assert regular_user.cs.listTemplatePermissions(id=tid)["templatepermission"]["account"] == []


def test_users_cannot_touch_others_templates(regular_user, other_user, make_row, unique_name):
    tid = make_row(unique_name, other_user.account["id"])
    for call, params in ((regular_user.cs.updateTemplate, {"displaytext": "mine now"}),
                         (regular_user.cs.updateTemplatePermissions, {"ispublic": True}),
                         (regular_user.cs.copyTemplate, {"destzoneid": str(uuid.uuid4())})):
        assert api_error(call, id=tid, **params)["errorcode"] == 531
    t, = other_user.cs.listTemplates(templatefilter="self", id=tid)["template"]
    assert t["displaytext"] == unique_name and t["ispublic"] is False


def test_update_template_changes_what_was_asked_only(admin_cs, regular_user, make_row, unique_name):
    tid = make_row(unique_name, regular_user.account["id"], isdynamicallyscalable=True)
    before, = regular_user.cs.listTemplates(templatefilter="self", id=tid)["template"]
    t = regular_user.cs.updateTemplate(id=tid, name=unique_name + "-new", displaytext="new text", bootable=False,
                                       passwordenabled=True, templatetype="SYSTEM",
                                       **{"details[0].key": "rootDiskController", "details[0].value": "scsi"})["template"]
    assert (t["id"], t["name"], t["displaytext"]) == (tid, unique_name + "-new", "new text")
    assert t["passwordenabled"] is True and t["bootable"] is False
    assert t["templatetype"] == "USER"  # an admin-only attribute, ignored from a User
    assert t["details"] == {"rootDiskController": "scsi"}
    after, = regular_user.cs.listTemplates(templatefilter="self", id=tid)["template"]
    assert after["ostypeid"] == before["ostypeid"] == "os-1"
    assert after["isdynamicallyscalable"] is True and after["name"] == unique_name + "-new"

    assert "details" not in regular_user.cs.updateTemplate(id=tid, cleanupdetails=True)["template"]
    assert admin_cs.updateTemplate(id=tid, templatetype="routing")["template"]["templatetype"] == "ROUTING"


@pytest.mark.parametrize("params,text", [
    ({"name": "  "}, "Template name cannot be empty"),
    ({"format": "VDI"}, "Image format: VDI is incorrect"),
    ({"format": "RAW"}, "cannot change: a copy of it was already verified as QCOW2"),
])
def test_bad_template_updates_are_431_and_change_nothing(regular_user, make_row, unique_name, params, text):
    tid = make_row(unique_name, regular_user.account["id"])
    err = api_error(regular_user.cs.updateTemplate, id=tid, displaytext="changed", **params)
    assert err["errorcode"] == 431 and text in err["errortext"]
    t, = regular_user.cs.listTemplates(templatefilter="self", id=tid)["template"]
    assert t["displaytext"] == unique_name and t["format"] == "QCOW2"


def test_format_may_change_until_a_copy_is_ready(regular_user, make_row, unique_name):
    tid = make_row(unique_name, regular_user.account["id"], ready=False)
    assert regular_user.cs.updateTemplate(id=tid, format="raw")["template"]["format"] == "RAW"


def test_update_iso_and_share_it(regular_user, other_user, make_row, unique_name):
    p = unique_name + "-"
    iid = make_row(p + "iso", other_user.account["id"], is_iso=True)
    i = other_user.cs.updateIso(id=iid, displaytext="new", bootable=False, passwordenabled=True)["iso"]
    assert (i["displaytext"], i["bootable"], i["passwordenabled"], i["ostypeid"]) == ("new", False, True, "os-1")
    assert api_error(other_user.cs.updateTemplate, id=iid, name="x")["errorcode"] == 431  # an ISO is no template
    # users may make their own ISOs extractable (unlike templates)
    other_user.cs.updateIsoPermissions(id=iid, isextractable=True, accounts=regular_user.account["name"], op="add")
    assert other_user.cs.listIsoPermissions(id=iid)["templatepermission"]["account"] == [regular_user.account["name"]]
    assert names(regular_user.cs, p, iso=True, isofilter="shared") == {"iso"}
    assert names(regular_user.cs, p, iso=True, isofilter="sharedexecutable") == {"iso"}
    assert names(regular_user.cs, p, iso=True, isofilter="self") == set()


@pytest.mark.usefixtures("loopback_allowed")
def test_registered_template_shared_by_a_user_is_usable_by_the_other(regular_user, other_user, make_zone, serve,
                                                                     images, unique_name):
    zone = make_zone()
    t = other_user.cs.registerTemplate(name=unique_name, displaytext="x", format="QCOW2", hypervisor="KVM",
                                       url=serve(images["qcow2"]), zoneid=zone.id)["template"][0]
    other_user.cs.updateTemplatePermissions(id=t["id"], accounts=regular_user.account["name"], op="add")
    seen = wait_for(lambda: regular_user.cs.listTemplates(templatefilter="sharedexecutable", id=t["id"]))
    assert seen["template"][0]["isready"] is True and seen["template"][0]["account"] == other_user.account["name"]
    other_user.cs.deleteTemplate(id=t["id"], fetch_result=True)
    assert regular_user.cs.listTemplates(templatefilter="shared", id=t["id"]) == {}
