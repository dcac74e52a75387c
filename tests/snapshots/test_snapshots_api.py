"""Snapshots through the API: content round trips (revert, createVolume), refusals, deleting a
middle snapshot, primary-only snapshots, scrub, GC, and the policy commands."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.snapshots.conftest import MIB, api_error, content, store_root, wait_for, write_pattern

GIB = 1 << 30


def ready_volume(cs, pz, name="data") -> tuple[dict, Path]:
    volume = cs.createVolume(name=name, zoneid=pz.zone_id, size=1)["volume"]
    assert volume["state"] == "Ready"
    return volume, pz.pool_file("RAW", volume["path"])


def snapshot(cs, volume_id, **params) -> dict:
    return cs.createSnapshot(volumeid=volume_id, **params)["snapshot"]


def test_snapshot_revert_and_new_volume_give_back_the_exact_content(fast_admin, pool_zone):
    pz = pool_zone("RAW")
    volume, file = ready_volume(fast_admin, pz)
    answer = fast_admin.createSnapshot(volumeid=volume["id"], fetch_result=False)
    assert set(answer) == {"id", "jobid"}  # async create: the id at once
    first = wait_for(lambda: next((s for s in fast_admin.listSnapshots(id=answer["id"]).get("snapshot", [])
                                   if s["state"] == "BackedUp"), None))
    # an empty (all holes) volume stores nothing but its manifest
    assert first["physicalsize"] < 4096 and first["virtualsize"] == GIB

    original = write_pattern(file, 1)
    snap = snapshot(fast_admin, volume["id"], name="after-write")
    assert snap["state"] == "BackedUp" and snap["snapshottype"] == snap["intervaltype"] == "MANUAL"
    assert snap["locationtype"] == "Secondary" and snap["volumeid"] == volume["id"] and snap["revertable"] is True
    assert snap["name"] == "after-write" and snap["zoneid"] == pz.zone_id and snap["volumename"] == "data"
    assert 0 < snap["physicalsize"] < 1 * MIB  # 3 x 64 KiB written, compressed: far less than the volume
    assert not list((pz.paths["RAW"] / "snapshots").iterdir())  # the copy on primary is gone once backed up

    write_pattern(file, 99)
    assert content(file) != original
    fast_admin.revertSnapshot(id=snap["id"])
    assert content(file) == original
    assert file.stat().st_blocks * 512 < 8 * MIB  # restored sparse, not 1 GiB of zeros

    made = fast_admin.createVolume(snapshotid=snap["id"], name="from-snap")["volume"]
    assert made["state"] == "Ready" and made["size"] == GIB and made["id"] != volume["id"]
    assert content(pz.pool_file("RAW", made["path"])) == original
    listed = fast_admin.listSnapshots(volumeid=volume["id"])
    assert listed["count"] == 2 and [s["state"] for s in listed["snapshot"]] == ["BackedUp", "BackedUp"]


def test_deleting_a_middle_snapshot_leaves_the_others_restorable_and_gc_keeps_their_chunks(fast_admin, pool_zone):
    pz = pool_zone("RAW")
    volume, file = ready_volume(fast_admin, pz)
    contents, snaps = [], []
    for seed in (1, 2, 3):
        contents.append(write_pattern(file, seed))
        snaps.append(snapshot(fast_admin, volume["id"]))
    assert fast_admin.deleteSnapshot(id=snaps[1]["id"])["success"] is True
    assert [s["id"] for s in fast_admin.listSnapshots(volumeid=volume["id"])["snapshot"]] == [snaps[0]["id"], snaps[2]["id"]]

    store = fast_admin.listImageStores(zoneid=pz.zone_id)["imagestore"][0]
    fast_admin.updateConfiguration(name="snapshot.gc.grace", value="0")
    try:
        gc = fast_admin.runSnapshotGarbageCollection(storeid=store["id"])["snapshotgarbagecollection"]
    finally:
        fast_admin.updateConfiguration(name="snapshot.gc.grace", value="86700")
    assert gc["manifests"] == 2 and gc["chunksremoved"] > 0  # the middle snapshot's own chunks
    for index in (0, 2):
        made = fast_admin.createVolume(snapshotid=snaps[index]["id"])["volume"]
        assert content(pz.pool_file("RAW", made["path"])) == contents[index]


@pytest.mark.usefixtures("loopback_allowed")
def test_refusals_change_nothing(fast_admin, fast_user, pool_zone, ready_template):
    from tests.volumes.conftest import raw_image

    pz = pool_zone("RAW")
    volume, _file = ready_volume(fast_admin, pz)
    # a volume that is not Ready
    fast_admin.resizeVolume(id=volume["id"], size=2)
    err = api_error(fast_admin.createSnapshot, volumeid=str(uuid.uuid4()))
    assert err["errorcode"] == 431 and "volumeid" in err["errortext"]
    # another account's volume and snapshots are invisible
    snap = snapshot(fast_admin, volume["id"])
    assert api_error(fast_user.createSnapshot, volumeid=volume["id"])["errorcode"] in (431, 531)
    assert snap["id"] not in [s["id"] for s in fast_user.listSnapshots().get("snapshot", [])]
    assert api_error(fast_user.deleteSnapshot, id=snap["id"])["errorcode"] in (431, 531)

    # revert refused while the volume's instance runs, allowed once it is stopped
    template = ready_template(pz.zone_id, raw_image())
    vm = fast_admin.deployVirtualMachine(templateid=template["id"], zoneid=pz.zone_id)["virtualmachine"]
    assert vm["state"] == "Running"
    root = fast_admin.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"][0]
    root_snap = snapshot(fast_admin, root["id"])
    err = api_error(fast_admin.revertSnapshot, id=root_snap["id"])
    assert err["errorcode"] == 431 and "Running" in err["errortext"]
    assert fast_admin.listVolumes(id=root["id"])["volume"][0]["state"] == "Ready"
    fast_admin.stopVirtualMachine(id=vm["id"])
    root_file = pz.pool_file("RAW", root["path"])
    before = content(root_file)
    write_pattern(root_file, 7)
    fast_admin.revertSnapshot(id=root_snap["id"])
    assert content(root_file) == before


def test_not_ready_volume_is_refused_with_cloudstacks_message(fast_admin, pool_zone, runtime):
    from secstor.db.models import Volume

    pz = pool_zone("RAW")
    volume, _file = ready_volume(fast_admin, pz)
    with runtime.session() as s:  # as while another operation holds the volume
        row = s.query(Volume).filter_by(uuid=volume["id"]).one()
        row.state = "Resizing"
    try:
        err = api_error(fast_admin.createSnapshot, volumeid=volume["id"])
    finally:
        with runtime.session() as s:
            s.query(Volume).filter_by(uuid=volume["id"]).one().state = "Ready"
    assert err["errorcode"] == 431
    assert err["errortext"] == f"VolumeId: {volume['id']} is not in Ready state but Resizing. Cannot take snapshot."
    assert fast_admin.listSnapshots(volumeid=volume["id"]) == {}


def test_primary_only_snapshots_when_backup_to_secondary_is_off(fast_admin, pool_zone):
    pz = pool_zone("RAW")
    volume, file = ready_volume(fast_admin, pz)
    kept = write_pattern(file, 5)
    fast_admin.updateConfiguration(name="snapshot.backup.to.secondary", value="false")
    try:
        snap = snapshot(fast_admin, volume["id"])
    finally:
        fast_admin.updateConfiguration(name="snapshot.backup.to.secondary", value="true")
    assert snap["state"] == "BackedUp" and snap["locationtype"] == "Primary"
    assert not (store_root(fast_admin, pz.zone_id) / "snapshots").exists()
    write_pattern(file, 6)
    fast_admin.revertSnapshot(id=snap["id"])
    assert content(file) == kept
    fast_admin.deleteSnapshot(id=snap["id"])
    assert not list((pz.paths["RAW"] / "snapshots").iterdir())


def test_scrub_detects_a_corrupted_chunk(fast_admin, pool_zone):
    pz = pool_zone("RAW")
    volume, file = ready_volume(fast_admin, pz)
    write_pattern(file, 3)
    snap = snapshot(fast_admin, volume["id"])
    store = fast_admin.listImageStores(zoneid=pz.zone_id)["imagestore"][0]
    clean = fast_admin.scrubImageStore(id=store["id"])["imagestorescrub"]
    assert clean["ok"] is True and clean["chunkschecked"] == 2 and clean["chunksdamaged"] == 0

    chunk = next(p for p in (store_root(fast_admin, pz.zone_id) / "snapshots").rglob("*") if p.parent.parent.name == "chunks")
    blob = bytearray(chunk.read_bytes())
    blob[-1] ^= 0xFF
    chunk.write_bytes(bytes(blob))
    report = fast_admin.scrubImageStore(id=store["id"])["imagestorescrub"]
    assert report["ok"] is False and report["chunksdamaged"] == 1 and report["damagedsnapshots"] == [snap["id"]]


def test_policy_commands_and_bad_input(fast_admin, fast_user, pool_zone):
    pz = pool_zone("RAW")
    volume, _file = ready_volume(fast_admin, pz)
    cases = [({"schedule": "61"}, "schedule"), ({"schedule": "10:25"}, "schedule"),
             ({"intervaltype": "WEEKLY", "schedule": "00:10:8"}, "schedule"),
             ({"timezone": "Mars/Base"}, "timezone"), ({"intervaltype": "YEARLY"}, "intervaltype"),
             ({"maxsnaps": 0}, "maxsnaps")]
    for change, named in cases:
        params = {"volumeid": volume["id"], "intervaltype": "HOURLY", "schedule": "15", "timezone": "UTC",
                  "maxsnaps": 3, **change}
        err = api_error(fast_admin.createSnapshotPolicy, **params)
        assert err["errorcode"] == 431 and named in err["errortext"], (change, err)
    assert fast_admin.listSnapshotPolicies(volumeid=volume["id"]) == {}

    policy = fast_admin.createSnapshotPolicy(volumeid=volume["id"], intervaltype="daily", schedule="30:02",
                                             timezone="Europe/Berlin", maxsnaps=2)["snapshotpolicy"]
    assert policy["intervaltype"] == "DAILY" and policy["schedule"] == "30:02" and policy["maxsnaps"] == 2
    updated = fast_admin.updateSnapshotPolicy(id=policy["id"], maxsnaps=4, schedule="00:03")["snapshotpolicy"]
    assert updated["maxsnaps"] == 4 and updated["schedule"] == "00:03"
    assert fast_admin.listSnapshotPolicies(id=policy["id"])["snapshotpolicy"][0]["maxsnaps"] == 4
    assert fast_user.listSnapshotPolicies(volumeid=volume["id"]) == {}
    assert fast_admin.deleteSnapshotPolicies(ids=policy["id"])["success"] is True
    assert fast_admin.listSnapshotPolicies(volumeid=volume["id"]) == {}
