"""Snapshot chains between image stores: all snapshots of a volume move together (manifests and
chunks), stay restorable, and a snapshot taken while its chain moves lands where the chain goes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from secstor.db.models import ImageStore, Snapshot, SnapshotChainMove, Volume
from secstor.services.snapshots import chunk_prefix
from tests.migration.conftest import finished
from tests.snapshots.conftest import api_error, content, write_pattern
from tests.templates.conftest import make_zone, wait_for  # noqa: F401
from tests.volumes.conftest import fast_admin  # noqa: F401


def files_under(path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*") if p.is_file()} \
        if path.exists() else {}


@pytest.fixture
def chain_zone(fast_admin, make_zone, tmp_path):
    """A zone with two Local image stores and a RAW pool; a 1 GiB volume on it."""
    zone = make_zone(stores=2)
    pool_path = tmp_path / f"pool-{uuid.uuid4().hex[:6]}"
    fast_admin.createStoragePool(name=f"p-{pool_path.name}", zoneid=zone.id, url=f"file://{pool_path}",
                                 scope="zone", volumeformat="RAW")
    volume = fast_admin.createVolume(name="chained", zoneid=zone.id, size=1)["volume"]
    return zone, volume, pool_path / volume["path"]


def chain_of(runtime, volume_uuid: str) -> tuple[int, int, dict[str, int | None]]:
    """(account id, volume id, snapshot uuid -> store id) of the volume's live snapshots."""
    with runtime.session() as s:
        volume = s.scalars(select(Volume).where(Volume.uuid == volume_uuid)).one()
        stores = {sn.uuid: sn.store_id for sn in s.scalars(select(Snapshot).where(
            Snapshot.volume_id == volume.id, Snapshot.removed.is_(None)))}
        return volume.account_id, volume.id, stores


def chain_moving(runtime, volume_id: int) -> bool:
    with runtime.session() as s:
        return s.get(SnapshotChainMove, volume_id) is not None


def store_ids(runtime, zone) -> dict[str, int]:
    with runtime.session() as s:
        return {st.uuid: st.id for st in s.scalars(select(ImageStore).where(
            ImageStore.uuid.in_([x["id"] for x in zone.stores])))}


def source_and_destination(runtime, zone, volume_uuid):
    ids = store_ids(runtime, zone)
    _, _, stores = chain_of(runtime, volume_uuid)
    src_index = next(i for i, st in enumerate(zone.stores) if ids[st["id"]] in stores.values())
    return src_index, 1 - src_index


def test_a_chain_moves_as_one_unit_and_stays_restorable(fast_admin, chain_zone, runtime):
    zone, volume, file = chain_zone
    contents, snaps = [], []
    for seed in (1, 2, 3):
        contents.append(write_pattern(file, seed))
        snaps.append(fast_admin.createSnapshot(volumeid=volume["id"])["snapshot"])
    src, dst = source_and_destination(runtime, zone, volume["id"])
    account_id, volume_id, _ = chain_of(runtime, volume["id"])
    prefix = chunk_prefix(account_id, volume_id)
    before = files_under(zone.paths[src] / prefix)
    assert len([f for f in before if f.startswith("manifests/")]) == 3

    plan = fast_admin.migrateResourceToAnotherSecondaryStorage(
        srcpool=zone.stores[src]["id"], destpool=zone.stores[dst]["id"], snapshots=[snaps[1]["id"]],
        dryrun=True)["imagestore"]
    move, = plan["moves"]  # naming one snapshot moves its whole chain, sized as it is on disk
    assert move["kind"] == "snapshot" and move["id"] == volume["id"] and move["bytes"] == sum(before.values())

    result = fast_admin.migrateResourceToAnotherSecondaryStorage(
        srcpool=zone.stores[src]["id"], destpool=zone.stores[dst]["id"], snapshots=[snaps[1]["id"]])["imagestore"]
    assert result["success"] is True and result["message"].endswith("successful migrations: 1"), result
    assert set(chain_of(runtime, volume["id"])[2].values()) == {store_ids(runtime, zone)[zone.stores[dst]["id"]]}
    assert files_under(zone.paths[dst] / prefix) == before  # every manifest and chunk, byte for byte sized
    assert not (zone.paths[src] / prefix).exists()
    for snap, expected in zip(snaps, contents):
        made = fast_admin.createVolume(snapshotid=snap["id"], name="back")["volume"]
        assert content(file.parent / made["path"]) == expected

    # the next snapshot joins the chain on its new store, incrementally
    write_pattern(file, 4)
    fourth = fast_admin.createSnapshot(volumeid=volume["id"])["snapshot"]
    assert set(chain_of(runtime, volume["id"])[2].values()) == {store_ids(runtime, zone)[zone.stores[dst]["id"]]}
    assert fourth["physicalsize"] < 1 << 20
    listed = fast_admin.listImageStoreObjects(id=zone.stores[dst]["id"], path=f"snapshots/{account_id}")
    entry, = listed["datastoreobject"]
    assert entry["name"] == str(volume_id) and entry["volumeid"] == volume["id"] and entry["isdirectory"] is True
    manifests = fast_admin.listImageStoreObjects(id=zone.stores[dst]["id"], path=f"{prefix}/manifests")
    assert {m["snapshotid"] for m in manifests["datastoreobject"]} == {s["id"] for s in snaps} | {fourth["id"]}


def test_a_chain_not_on_the_source_is_refused_naming_the_parameter(fast_admin, chain_zone, runtime):
    zone, volume, file = chain_zone
    write_pattern(file, 1)
    snap = fast_admin.createSnapshot(volumeid=volume["id"])["snapshot"]
    src, dst = source_and_destination(runtime, zone, volume["id"])
    err = api_error(fast_admin.migrateResourceToAnotherSecondaryStorage, srcpool=zone.stores[dst]["id"],
                    destpool=zone.stores[src]["id"], snapshots=[snap["id"]])
    assert err["errorcode"] == 431 and f"Unable to find a Ready snapshot with id {snap['id']}" in err["errortext"]
    assert set(chain_of(runtime, volume["id"])[2].values()) == {store_ids(runtime, zone)[zone.stores[src]["id"]]}


HOLD_SWITCH = "tests.migration.hold_switch"


def held_switch(tmp_path: Path) -> Path:
    """The file that holds a hold_switch worker's moves before their switch while it exists."""
    hold = tmp_path / "hold-switch"
    hold.touch()
    return hold


def move_chain(cs, queue: str, zone, src: int, dst: int, snapshot: dict) -> str:
    """Submit the move of ``snapshot``'s chain from zone store ``src`` to ``dst`` on ``queue``."""
    return cs.testRunJob(handler="migration.resources", queue=queue, params=json.dumps({
        "srcpool": zone.stores[src]["id"], "destpools": [zone.stores[dst]["id"]],
        "objects": {"snapshots": [snapshot["id"]]}}))["jobid"]


def test_a_snapshot_taken_while_its_chain_moves_waits_and_lands_on_the_destination(
        fast_admin, chain_zone, runtime, api_only, workers, tmp_path):
    zone, volume, file = chain_zone
    first_content = write_pattern(file, 1)
    first = fast_admin.createSnapshot(volumeid=volume["id"])["snapshot"]
    src, dst = source_and_destination(runtime, zone, volume["id"])
    _, volume_id, _ = chain_of(runtime, volume["id"])
    hold = held_switch(tmp_path)
    workers(HOLD_SWITCH, SECSTOR_TEST_HOLD_FILE=str(hold))
    cs = api_only.cs()
    jobid = move_chain(cs, workers.queue, zone, src, dst, first)
    wait_for(lambda: Path(f"{hold}.reached").exists(), timeout=30)  # copied, not yet switched
    assert chain_moving(runtime, volume_id)
    second_content = write_pattern(file, 2)
    second = fast_admin.createSnapshot(volumeid=volume["id"], fetch_result=False)
    hold.unlink()
    result = finished(cs, jobid, timeout=60)["jobresult"]["imagestore"]
    assert result["success"] is True, result
    backed_up = wait_for(lambda: next((s for s in fast_admin.listSnapshots(id=second["id"]).get("snapshot", [])
                                       if s["state"] == "BackedUp"), None), timeout=30)
    assert backed_up["locationtype"] == "Secondary"
    dst_id = store_ids(runtime, zone)[zone.stores[dst]["id"]]
    assert set(chain_of(runtime, volume["id"])[2].values()) == {dst_id}
    assert not (zone.paths[src] / "snapshots").exists() or not any((zone.paths[src] / "snapshots").rglob("*.zst"))
    for snap_id, expected in ((first["id"], first_content), (second["id"], second_content)):
        made = fast_admin.createVolume(snapshotid=snap_id, name="back")["volume"]
        assert content(file.parent / made["path"]) == expected


def manifest_ids(path: Path) -> set[str]:
    return {p.name.split(".", 1)[0] for p in path.iterdir()} if path.exists() else set()


def test_a_snapshot_deleted_while_its_chain_moves_leaves_no_manifest_on_the_destination(
        fast_admin, chain_zone, runtime, api_only, workers, tmp_path):
    zone, volume, file = chain_zone
    write_pattern(file, 1)
    doomed = fast_admin.createSnapshot(volumeid=volume["id"])["snapshot"]
    kept_content = write_pattern(file, 2)
    kept = fast_admin.createSnapshot(volumeid=volume["id"])["snapshot"]
    src, dst = source_and_destination(runtime, zone, volume["id"])
    account_id, volume_id, _ = chain_of(runtime, volume["id"])
    prefix = chunk_prefix(account_id, volume_id)
    hold = held_switch(tmp_path)
    workers(HOLD_SWITCH, SECSTOR_TEST_HOLD_FILE=str(hold))
    cs = api_only.cs()
    jobid = move_chain(cs, workers.queue, zone, src, dst, kept)
    wait_for(lambda: Path(f"{hold}.reached").exists(), timeout=30)
    # copied, not yet switched: the chain is still the source's, so the deletion happens there
    assert manifest_ids(zone.paths[dst] / prefix / "manifests") == {doomed["id"], kept["id"]}
    fast_admin.deleteSnapshot(id=doomed["id"])
    hold.unlink()
    result = finished(cs, jobid, timeout=60)["jobresult"]["imagestore"]
    assert result["success"] is True and result["message"].endswith("successful migrations: 1"), result
    assert manifest_ids(zone.paths[dst] / prefix / "manifests") == {kept["id"]}
    assert not (zone.paths[src] / prefix).exists()
    listed = fast_admin.listImageStoreObjects(id=zone.stores[dst]["id"], path=f"{prefix}/manifests")
    assert [m.get("snapshotid") for m in listed["datastoreobject"]] == [kept["id"]]
    made = fast_admin.createVolume(snapshotid=kept["id"], name="back")["volume"]
    assert content(file.parent / made["path"]) == kept_content
