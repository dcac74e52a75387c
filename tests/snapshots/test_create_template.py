"""createTemplate from a snapshot and from a stopped instance's ROOT volume: the new RAW template
is Ready with exactly the source's bytes; refusals change nothing."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests
from sqlalchemy import select

from secstor.db.models import TemplateStoreRef, VMTemplate
from tests.snapshots.conftest import api_error, store_root
from tests.volumes.conftest import raw_image

pytestmark = pytest.mark.usefixtures("loopback_allowed")


@pytest.fixture
def stopped_vm(fast_admin, pool_zone, ready_template):
    """A stopped instance deployed from a 4 MiB RAW template, with its ROOT volume and the file of
    that volume."""
    pz = pool_zone("RAW")
    template = ready_template(pz.zone_id, raw_image())  # ostypeid 1
    vm = fast_admin.deployVirtualMachine(templateid=template["id"], zoneid=pz.zone_id, startvm=False)["virtualmachine"]
    root = fast_admin.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"][0]
    return pz, vm, root, pz.pool_file("RAW", root["path"])


def listed_self(cs, template_id: str) -> dict:
    found, = cs.listTemplates(templatefilter="self", id=template_id)["template"]
    return found


def stored_image(cs, runtime, zone_id: str, template_id: str) -> Path:
    """The file of the template's copy in the zone's Local image store."""
    with runtime.session() as s:
        key = s.scalar(select(TemplateStoreRef.install_path)
                       .join(VMTemplate, VMTemplate.id == TemplateStoreRef.template_id)
                       .where(VMTemplate.uuid == template_id))
    return store_root(cs, zone_id) / key


def test_template_from_a_stopped_instances_root_volume(fast_admin, stopped_vm, runtime):
    pz, vm, root, file = stopped_vm
    name = f"from-root-{uuid.uuid4().hex[:6]}"
    answer = fast_admin.createTemplate(volumeid=root["id"], name=name, displaytext="made from ROOT", ostypeid="42",
                                       isfeatured=True, ispublic=False, isextractable=True, passwordenabled=True,
                                       account="admin", fetch_result=False)
    assert set(answer) == {"id", "jobid"}  # an async create: the template's id at once
    assert fast_admin.queryAsyncJobResult(jobid=answer["jobid"])["template"]["id"] == answer["id"]  # polls

    made = listed_self(fast_admin, answer["id"])  # as Marvin's TestCreateTemplate checks it
    assert made["isready"] is True and made["status"] == "Download Complete"
    assert made["displaytext"] == "made from ROOT" and made["ostypeid"] == "42" and name in made["name"]
    assert made["format"] == "RAW" and made["hypervisor"] == "Simulator" and made["zoneid"] == pz.zone_id
    assert made["passwordenabled"] is True and made["isfeatured"] is True and made["size"] == root["size"]
    content = file.read_bytes()
    assert content == raw_image()
    image = stored_image(fast_admin, runtime, pz.zone_id, made["id"])
    assert image.read_bytes() == content
    properties = (image.parent / "template.properties").read_text().splitlines()
    assert f"uniquename={made['id']}" in properties and f"virtualsize={len(content)}" in properties
    # nothing left behind on the pool, and a deployment from the new template gets the same disk
    assert not list((pz.paths["RAW"] / "snapshots").glob("template-*"))
    clone = fast_admin.deployVirtualMachine(templateid=made["id"], zoneid=pz.zone_id)["virtualmachine"]
    clone_root = fast_admin.listVolumes(virtualmachineid=clone["id"], type="ROOT")["volume"][0]
    assert pz.pool_file("RAW", clone_root["path"]).read_bytes() == content


def test_template_from_a_snapshot_has_the_snapshots_content(fast_admin, stopped_vm):
    pz, vm, root, file = stopped_vm
    with open(file, "r+b") as f:  # content of the snapshot's own, not the template's
        f.seek(1 << 20)
        f.write(b"snapshot-time" * 1000)
    at_snapshot = file.read_bytes()
    snap = fast_admin.createSnapshot(volumeid=root["id"])["snapshot"]
    with open(file, "r+b") as f:  # changed after the snapshot: must not reach the template
        f.write(b"later" * 1000)

    made = fast_admin.createTemplate(snapshotid=snap["id"], name="from-snap", displaytext="snap", ispublic=True,
                                     isextractable=True)["template"]
    assert made["isready"] is True
    listed = listed_self(fast_admin, made["id"])
    # no ostypeid given: the one of the template the volume came from
    assert (listed["isready"], listed["displaytext"], listed["ostypeid"]) == (True, "snap", "1")
    assert "from-snap" in listed["name"] and listed["ispublic"] is True
    extract = fast_admin.extractTemplate(id=made["id"], mode="HTTP_DOWNLOAD", zoneid=pz.zone_id)["template"]
    assert requests.get(unquote(extract["url"]), timeout=30).content == at_snapshot


def test_refusals_create_no_template(fast_admin, fast_user, stopped_vm):
    pz, vm, root, _file = stopped_vm
    snap = fast_admin.createSnapshot(volumeid=root["id"])["snapshot"]
    name = f"refused-{uuid.uuid4().hex[:6]}"

    err = api_error(fast_admin.createTemplate, name=name, ostypeid="42")
    assert err["errorcode"] == 431 and "neither volume ID nor snapshot ID" in err["errortext"]
    err = api_error(fast_admin.createTemplate, name=name, volumeid=root["id"], snapshotid=snap["id"])
    assert err["errorcode"] == 431 and "please specify only one of volume ID" in err["errortext"]
    err = api_error(fast_admin.createTemplate, name=name, volumeid=root["id"], bits=16)
    assert err["errorcode"] == 431 and "bits" in err["errortext"]
    err = api_error(fast_admin.createTemplate, name=name, snapshotid=str(uuid.uuid4()))
    assert err["errorcode"] == 431 and "snapshotid" in err["errortext"]
    # another account's volume and snapshot
    assert api_error(fast_user.createTemplate, name=name, volumeid=root["id"])["errorcode"] in (431, 531)
    assert api_error(fast_user.createTemplate, name=name, snapshotid=snap["id"])["errorcode"] in (431, 531)

    fast_admin.startVirtualMachine(id=vm["id"])
    err = api_error(fast_admin.createTemplate, name=name, volumeid=root["id"])
    assert err["errorcode"] == 431
    assert err["errortext"] == (f"Unable to create private template for volume: {root['name']}; volume is attached "
                                f"to a non-stopped VM, please stop the VM first")
    assert fast_admin.listTemplates(templatefilter="self", name=name) == {}
    assert fast_admin.listVolumes(id=root["id"])["volume"][0]["state"] == "Ready"
