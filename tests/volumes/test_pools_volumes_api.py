"""Primary storage pools and volumes through the real API, with the files checked on disk."""

from __future__ import annotations

import os
import uuid

import pytest
from cs import CloudStackApiException

from tests.volumes.conftest import GIB, qemu_info


def api_error(call, **params) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        call(**params)
    return err.value.error


def test_pool_crud_and_bad_input(fast_admin, fast_user, make_zone, tmp_path):
    zone = make_zone(stores=0)
    path = tmp_path / "pool-a"
    name = f"pool-{uuid.uuid4().hex[:8]}"
    pool = fast_admin.createStoragePool(name=name, zoneid=zone.id, url=f"file://{path}", scope="zone")["storagepool"]
    assert path.is_dir() and not list(path.iterdir())  # probed, and the probe file cleaned up
    assert pool["name"] == name and pool["zoneid"] == zone.id and pool["path"] == str(path)
    assert pool["type"] == "Filesystem" and pool["state"] == "Up" and pool["scope"] == "ZONE"
    assert pool["disksizetotal"] > 0 and pool["disksizeallocated"] == 0 and pool["volumeformat"] == "RAW"

    listed = fast_admin.listStoragePools(zoneid=zone.id)
    assert listed["count"] == 1 and listed["storagepool"][0]["id"] == pool["id"]
    assert fast_admin.listStoragePools(keyword=name[5:])["storagepool"][0]["id"] == pool["id"]
    assert api_error(fast_user.listStoragePools)["errorcode"] == 432  # admins only

    def refused(param, **params):
        err = api_error(fast_admin.createStoragePool, **{"name": f"x-{uuid.uuid4().hex[:6]}", "zoneid": zone.id,
                                                         "url": f"file://{tmp_path}/other", **params})
        assert err["errorcode"] == 431, err
        return err["errortext"]

    assert "file:///path" in refused("url", url="nfs://host/export")
    assert "writable" in refused("url", url="file:///proc/secstor-pool")
    assert "already exists" in refused("name", name=name)
    assert "already in use" in refused("url", url=f"file://{path}")
    assert "volumeformat" in refused("volumeformat", volumeformat="VMDK")
    assert "zone" in refused("scope", scope="cluster")
    assert fast_admin.listStoragePools(zoneid=zone.id)["count"] == 1  # nothing was created

    updated = fast_admin.updateStoragePool(id=pool["id"], name=name + "-b", capacitybytes=5 * GIB,
                                           enabled=False)["storagepool"]
    assert updated["name"] == name + "-b" and updated["disksizetotal"] == 5 * GIB and updated["state"] == "Disabled"
    # a disabled pool takes no new volume
    assert api_error(fast_admin.createVolume, name="v", zoneid=zone.id, size=1)["errorcode"] == 533
    fast_admin.updateStoragePool(id=pool["id"], enabled=True)
    # nor one bigger than its capacity
    assert api_error(fast_admin.createVolume, name="v", zoneid=zone.id, size=6)["errorcode"] == 533

    volume = fast_admin.createVolume(name="held", zoneid=zone.id, size=1)["volume"]
    assert fast_admin.listStoragePools(id=pool["id"])["storagepool"][0]["disksizeallocated"] == GIB
    err = api_error(fast_admin.deleteStoragePool, id=pool["id"])
    assert err["errorcode"] == 431 and "non-destroyed vols" in err["errortext"]
    fast_admin.deleteVolume(id=volume["id"])
    assert fast_admin.deleteStoragePool(id=pool["id"])["success"] is True
    assert fast_admin.listStoragePools(zoneid=zone.id) == {}


@pytest.mark.parametrize("fmt", ["RAW", "QCOW2"])
def test_volume_create_resize_delete_on_disk(fast_admin, pool_zone, fmt):
    pz = pool_zone(fmt)
    answer = fast_admin.createVolume(name="data", zoneid=pz.zone_id, size=1, fetch_result=False)
    assert set(answer) == {"id", "jobid"}  # async create: the id at once
    volume = _wait_ready(fast_admin, answer["id"])
    assert volume["state"] == "Ready" and volume["type"] == "DATADISK" and volume["size"] == GIB
    assert volume["storageid"] == pz.pools[fmt]["id"] and volume["provisioningtype"] == "thin"
    file = pz.pool_file(fmt, volume["path"])
    if fmt == "RAW":
        assert file.stat().st_size == GIB and file.stat().st_blocks == 0  # sparse: nothing allocated
    else:
        assert qemu_info(file)["virtual-size"] == GIB and file.stat().st_size < 1 << 20

    grown = fast_admin.resizeVolume(id=volume["id"], size=2)["volume"]
    assert grown["size"] == 2 * GIB and grown["state"] == "Ready"
    assert (file.stat().st_size if fmt == "RAW" else qemu_info(file)["virtual-size"]) == 2 * GIB
    err = api_error(fast_admin.resizeVolume, id=volume["id"], size=1)
    assert err["errorcode"] == 431 and "shrinkok" in err["errortext"]
    shrunk = fast_admin.resizeVolume(id=volume["id"], size=1, shrinkok=True)["volume"]
    assert shrunk["size"] == GIB
    assert (file.stat().st_size if fmt == "RAW" else qemu_info(file)["virtual-size"]) == GIB

    assert fast_admin.deleteVolume(id=volume["id"])["success"] is True
    assert not file.exists() and fast_admin.listVolumes(id=volume["id"]) == {}
    assert api_error(fast_admin.deleteVolume, id=volume["id"])["errorcode"] == 431


def _wait_ready(cs, volume_id):
    from tests.volumes.conftest import wait_for

    return wait_for(lambda: next((v for v in cs.listVolumes(id=volume_id).get("volume", [])
                                  if v["state"] == "Ready"), None))


def test_create_volume_bad_input_changes_nothing(fast_admin, pool_zone):
    pz = pool_zone("RAW")
    cases = [({"size": 1, "snapshotid": str(uuid.uuid4())}, "snapshotid"), ({}, "size"), ({"size": 0}, "size"),
             ({"size": 1, "diskofferingid": str(uuid.uuid4())}, "diskofferingid")]
    for params, named in cases:
        err = api_error(fast_admin.createVolume, name="bad", zoneid=pz.zone_id, **params)
        assert err["errorcode"] == 431 and named in err["errortext"], (params, err)
    assert api_error(fast_admin.createVolume, name="bad", zoneid=str(uuid.uuid4()), size=1)["errorcode"] == 431
    assert fast_admin.listVolumes(zoneid=pz.zone_id) == {}
    assert not [f for f in pz.paths["RAW"].iterdir()]


def test_users_see_and_touch_only_their_own_volumes(fast_admin, fast_user, server, admin_cs, pool_zone):
    from tests.support.api import create_api_user

    pz = pool_zone("RAW")
    mine = fast_user.createVolume(name="mine", zoneid=pz.zone_id, size=1)["volume"]
    assert "path" not in mine and "storageid" not in mine  # pool details are for admins
    admins = fast_admin.createVolume(name="admins", zoneid=pz.zone_id, size=1)["volume"]
    seen = fast_user.listVolumes(zoneid=pz.zone_id)
    assert [v["id"] for v in seen["volume"]] == [mine["id"]] and "path" not in seen["volume"][0]
    assert {v["id"] for v in fast_admin.listVolumes(zoneid=pz.zone_id)["volume"]} == {mine["id"], admins["id"]}
    other = create_api_user(server, admin_cs)
    other_cs = server.cs(key=other.apikey, secret=other.secretkey, poll_interval=0.1, fetch_result=True)
    assert other_cs.listVolumes(zoneid=pz.zone_id) == {}
    assert api_error(other_cs.deleteVolume, id=mine["id"])["errorcode"] == 531
    assert api_error(fast_user.resizeVolume, id=admins["id"], size=2)["errorcode"] == 531
    fast_user.deleteVolume(id=mine["id"])
    fast_admin.deleteVolume(id=admins["id"])


def test_resizing_an_uploaded_volume_is_refused(fast_admin, pool_zone, runtime):
    from secstor.db.models import Volume

    pz = pool_zone("RAW")
    volume = fast_admin.createVolume(name="up", zoneid=pz.zone_id, size=1)["volume"]
    with runtime.session() as s:  # as an upload leaves it (uploads are another feature's)
        s.query(Volume).filter(Volume.uuid == volume["id"]).one().state = "Uploaded"
    err = api_error(fast_admin.resizeVolume, id=volume["id"], size=2)
    assert err["errorcode"] == 431
    assert err["errortext"] == "Volume should be in ready or allocated state before attempting a resize"
    assert os.path.getsize(pz.pool_file("RAW", fast_admin.listVolumes(id=volume["id"])["volume"][0]["path"])) == GIB
    fast_admin.deleteVolume(id=volume["id"])
