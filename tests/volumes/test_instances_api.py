"""Instances on the Simulator: ROOT volumes cloned from the template's copy cached on the pool,
the instance life cycle, attach/detach rules."""

from __future__ import annotations

import logging
import os
import threading
import uuid

import pytest
from cs import CloudStackApiException

from tests.volumes.conftest import qemu_info, raw_content, raw_image

pytestmark = pytest.mark.usefixtures("loopback_allowed")


def api_error(call, **params) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        call(**params)
    return err.value.error


def root_of(cs, vm_id: str) -> dict:
    return cs.listVolumes(virtualmachineid=vm_id, type="ROOT")["volume"][0]


@pytest.mark.parametrize("pool_format, template_format", [("RAW", "RAW"), ("QCOW2", "RAW"), ("QCOW2", "QCOW2"),
                                                          ("RAW", "QCOW2")])
def test_deploy_clones_the_template_cached_once_on_the_pool(fast_admin, pool_zone, ready_template, images, tmp_path,
                                                            pool_format, template_format):
    pz = pool_zone(pool_format)
    content = raw_image() if template_format == "RAW" else images["qcow2"]
    template = ready_template(pz.zone_id, content, template_format)
    first = fast_admin.deployVirtualMachine(templateid=template["id"], zoneid=pz.zone_id, name=f"vm-{uuid.uuid4().hex[:6]}",
                                            serviceofferingid=str(uuid.uuid4()))["virtualmachine"]
    assert first["state"] == "Running" and first["hypervisor"] == "Simulator"
    assert first["templateid"] == template["id"] and first["zoneid"] == pz.zone_id
    root = root_of(fast_admin, first["id"])
    assert root["state"] == "Ready" and root["deviceid"] == 0 and root["size"] == template["size"]
    cache_dir = pz.paths[pool_format] / "template-cache"
    cached, = cache_dir.iterdir()
    assert cached.name == template["id"]
    cached_inode, cached_mtime = cached.stat().st_ino, cached.stat().st_mtime_ns

    second = fast_admin.deployVirtualMachine(templateid=template["id"], zoneid=pz.zone_id)["virtualmachine"]
    assert [p.name for p in cache_dir.iterdir()] == [template["id"]]  # copied to the pool once
    assert (cached.stat().st_ino, cached.stat().st_mtime_ns) == (cached_inode, cached_mtime)

    expected = content if template_format == "RAW" else bytes(template["size"])  # the qcow2 image is empty
    for vm in (first, second):
        file = pz.pool_file(pool_format, root_of(fast_admin, vm["id"])["path"])
        assert raw_content(file, pool_format, tmp_path) == expected
        if pool_format == "QCOW2":  # nothing copied: the cached copy is the backing file
            info = qemu_info(file)
            assert info["backing-filename"] == os.path.relpath(cached, file.parent)
        elif template_format == "RAW":
            assert file.stat().st_blocks * 512 < len(content)  # the hole stayed a hole
    for vm in (first, second):
        fast_admin.destroyVirtualMachine(id=vm["id"], expunge=True)


def test_instance_life_cycle_and_attach_rules(fast_admin, fast_user, pool_zone, ready_template):
    pz = pool_zone("RAW")
    template = ready_template(pz.zone_id, raw_image(), "RAW", ispublic=True)
    vm = fast_user.deployVirtualMachine(templateid=template["id"], zoneid=pz.zone_id, name="life",
                                        startvm=False)["virtualmachine"]
    assert vm["state"] == "Stopped" and vm["account"] != "admin"
    assert fast_user.startVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Running"
    assert api_error(fast_user.startVirtualMachine, id=vm["id"])["errorcode"] == 431
    assert fast_user.stopVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Stopped"
    assert fast_user.stopVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Stopped"  # idempotent
    listed = fast_user.listVirtualMachines(id=vm["id"])["virtualmachine"][0]
    assert listed["name"] == "life" and listed["templatename"] == template["name"] and listed["zoneid"] == pz.zone_id
    fast_user.startVirtualMachine(id=vm["id"])

    data = fast_user.createVolume(name="data", zoneid=pz.zone_id, size=1)["volume"]
    attached = fast_user.attachVolume(id=data["id"], virtualmachineid=vm["id"])["volume"]
    assert attached["virtualmachineid"] == vm["id"] and attached["deviceid"] == 1 and attached["vmstate"] == "Running"
    err = api_error(fast_user.deleteVolume, id=data["id"])
    assert err["errorcode"] == 431 and "not attached" in err["errortext"]
    assert api_error(fast_user.attachVolume, id=data["id"], virtualmachineid=vm["id"])["errorcode"] == 431
    assert api_error(fast_user.detachVolume, id=root_of(fast_user, vm["id"])["id"])["errorcode"] == 431
    admins_vm = fast_admin.deployVirtualMachine(templateid=template["id"], zoneid=pz.zone_id)["virtualmachine"]
    assert api_error(fast_user.stopVirtualMachine, id=admins_vm["id"])["errorcode"] == 531
    assert api_error(fast_user.attachVolume, id=data["id"], virtualmachineid=admins_vm["id"])["errorcode"] == 531
    assert fast_user.listVirtualMachines(zoneid=pz.zone_id)["count"] == 1

    detached = fast_user.detachVolume(id=data["id"])["volume"]
    assert "virtualmachineid" not in detached and "deviceid" not in detached
    fast_user.deleteVolume(id=data["id"])

    # destroy without expunge keeps the ROOT volume (state Destroy) until an expunge
    root = root_of(fast_user, vm["id"])
    fast_user.destroyVirtualMachine(id=vm["id"])
    assert fast_user.listVirtualMachines(id=vm["id"]) == {}  # users don't see destroyed instances
    assert fast_admin.listVirtualMachines(id=vm["id"])["virtualmachine"][0]["state"] == "Destroyed"
    assert fast_admin.listVolumes(id=root["id"])["volume"][0]["state"] == "Destroy"
    root_file = pz.pool_file("RAW", fast_admin.listVolumes(id=root["id"])["volume"][0]["path"])
    assert root_file.exists()
    fast_admin.destroyVirtualMachine(id=vm["id"], expunge=True)
    assert not root_file.exists() and fast_admin.listVolumes(id=root["id"]) == {}
    assert fast_admin.listVirtualMachines(id=vm["id"]) == {}
    fast_admin.destroyVirtualMachine(id=admins_vm["id"], expunge=True)


def test_deploy_refusals(fast_admin, fast_user, pool_zone, ready_template, images):
    pz = pool_zone("RAW")
    private = ready_template(pz.zone_id, raw_image(), "RAW")
    err = api_error(fast_user.deployVirtualMachine, templateid=private["id"], zoneid=pz.zone_id)
    assert err["errorcode"] == 431 and "templateid" in err["errortext"]
    other = pool_zone("RAW")
    err = api_error(fast_admin.deployVirtualMachine, templateid=private["id"], zoneid=other.zone_id)
    assert err["errorcode"] == 431 and "not been completely downloaded" in err["errortext"]
    err = api_error(fast_admin.deployVirtualMachine, templateid=private["id"], zoneid=pz.zone_id, rootdisksize=0)
    assert err["errorcode"] == 431 and "rootdisksize" in err["errortext"]
    assert fast_admin.listVirtualMachines(zoneid=pz.zone_id) == {}
    big = fast_admin.deployVirtualMachine(templateid=private["id"], zoneid=pz.zone_id, rootdisksize=1)["virtualmachine"]
    assert root_of(fast_admin, big["id"])["size"] == 1 << 30
    fast_admin.destroyVirtualMachine(id=big["id"], expunge=True)


def test_concurrent_first_uses_copy_the_template_once(fast_admin, pool_zone, ready_template, runtime):
    from sqlalchemy import select

    from secstor.db.models import StoragePool, VMTemplate
    from secstor.services.volumes import ensure_template_cached

    pz = pool_zone("RAW")
    template = ready_template(pz.zone_id, raw_image(), "RAW")
    with runtime.session() as s:
        template_id = s.scalar(select(VMTemplate.id).where(VMTemplate.uuid == template["id"]))
        pool_id = s.scalar(select(StoragePool.id).where(StoragePool.uuid == pz.pools["RAW"]["id"]))
    results, errors = [], []
    barrier = threading.Barrier(3)

    def use():
        barrier.wait()
        try:
            results.append(ensure_template_cached(runtime, template_id, pool_id, logging.getLogger("test")))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(r.copied for r in results) == [False, False, True]
    assert len({r.path for r in results}) == 1
    assert (pz.paths["RAW"] / results[0].path).read_bytes() == raw_image()
