"""Snapshots across zones through the region-wide store: backed up into it when taken, used in
another zone (copySnapshot, createVolume, createTemplate there), a zone-store chain moved into
it by copySnapshot, and deleted everywhere (manifest at once, chunks by GC)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from cs import CloudStackApiException
from sqlalchemy import select

from secstor.db.models import Volume
from secstor.services.snapshots import remove_owed_manifests
from tests.snapshots.conftest import api_error, content, write_pattern

SIZE = 8 << 20


@pytest.fixture(scope="module")
def cs(server):
    return server.cs(poll_interval=0.1, job_timeout=60, fetch_result=True)


@pytest.fixture(scope="module")
def pools(cs, region, tmp_path_factory) -> list[Path]:
    """One RAW primary pool in each region zone."""
    paths = []
    for zone in region.zones:
        path = tmp_path_factory.mktemp("pool")
        cs.createStoragePool(name=f"p-{uuid.uuid4().hex[:8]}", zoneid=zone["id"], url=f"file://{path}", scope="zone",
                             volumeformat="RAW")
        paths.append(path)
    return paths


def volume_with_pattern(cs, runtime, zone: dict, pool: Path) -> tuple[dict, str]:
    """A Ready volume cut down to 8 MiB (createVolume's smallest is 1 GiB, and a template made
    from it would hash every byte) with a pattern written in it; its content digest."""
    volume = cs.createVolume(name=f"v-{uuid.uuid4().hex[:6]}", zoneid=zone["id"], size=1)["volume"]
    with runtime.session() as s:
        s.scalars(select(Volume).where(Volume.uuid == volume["id"])).one().size = SIZE
    os.truncate(pool / volume["path"], SIZE)
    return volume, write_pattern(pool / volume["path"], 7)


def zone_store_snapshot(cs, runtime, zone: dict, pool: Path, root: Path) -> tuple[dict, dict, str]:
    """A Local image store of the zone at ``root`` and a snapshot backed up into it (the region
    store not preferred meanwhile): (store, snapshot, content digest of its volume)."""
    store = cs.addImageStore(provider="Local", url=f"file://{root}", name=f"z-{uuid.uuid4().hex[:6]}",
                             zoneid=zone["id"])["imagestore"]
    cs.updateConfiguration(name="snapshot.backup.to.region.store", value="false")
    try:
        volume, original = volume_with_pattern(cs, runtime, zone, pool)
        snap = cs.createSnapshot(volumeid=volume["id"])["snapshot"]
    finally:
        cs.updateConfiguration(name="snapshot.backup.to.region.store", value="true")
    assert snap["datastoreid"] == store["id"]
    return store, snap, original


def collect_garbage_now(cs, store_id: str) -> dict:
    cs.updateConfiguration(name="snapshot.gc.grace", value="0")
    try:
        return cs.runSnapshotGarbageCollection(storeid=store_id)["snapshotgarbagecollection"]
    finally:
        cs.updateConfiguration(name="snapshot.gc.grace", value="86700")


def manifest_keys(region, snapshot_id: str) -> list[str]:
    return [k for k in region.objects() if k.endswith(f"/manifests/{snapshot_id}.json.zst")]


def listed_snapshots(cs, region, chain_prefix: str) -> list[str]:
    """The snapshots listImageStoreObjects names in the chain's manifests directory of the region store."""
    try:
        found = cs.listImageStoreObjects(id=region.store["id"], path=f"{chain_prefix}/manifests")
    except CloudStackApiException as exc:  # the directory is gone
        assert exc.error["errorcode"] == 431 and "doesn't exist" in exc.error["errortext"]
        return []
    return [o.get("snapshotid") for o in found.get("datastoreobject", [])]


def delete_everywhere(cs, region, snapshot_id: str, chain_prefix: str) -> None:
    """deleteSnapshot, then a GC without grace: nothing of the chain is left in the bucket."""
    assert snapshot_id in listed_snapshots(cs, region, chain_prefix)
    cs.deleteSnapshot(id=snapshot_id)
    assert cs.listSnapshots(id=snapshot_id).get("snapshot", []) == []
    assert manifest_keys(region, snapshot_id) == []
    assert snapshot_id not in listed_snapshots(cs, region, chain_prefix)
    assert collect_garbage_now(cs, region.store["id"])["chunksremoved"] > 0
    assert [k for k in region.objects() if k.startswith(chain_prefix + "/")] == []


def test_snapshot_backed_up_to_the_region_store_makes_a_volume_in_another_zone(cs, runtime, region, pools):
    zone1, zone2 = region.zones
    volume, original = volume_with_pattern(cs, runtime, zone1, pools[0])
    snap = cs.createSnapshot(volumeid=volume["id"])["snapshot"]
    assert snap["state"] == "BackedUp" and snap["zoneid"] == zone1["id"]
    assert snap["datastoreid"] == region.store["id"] and snap["datastoretype"] == "Image"
    (manifest,) = manifest_keys(region, snap["id"])
    chain_prefix = manifest.split("/manifests/")[0]

    # Available in every zone the region store serves, shown in the zone asked for.
    (in_zone2,) = cs.listSnapshots(id=snap["id"], zoneid=zone2["id"])["snapshot"]
    assert in_zone2["zoneid"] == zone2["id"] and in_zone2["zonename"] == zone2["name"]
    per_zone = cs.listSnapshots(id=snap["id"], showunique=False)["snapshot"]
    assert {zone1["id"], zone2["id"]} <= {s["zoneid"] for s in per_zone}
    assert cs.listSnapshots(id=snap["id"], showunique=False, zoneid=zone2["id"])["count"] == 1
    assert cs.listSnapshots(id=snap["id"], showunique=False, locationtype="primary").get("snapshot", []) == []

    assert "different source and destination" in api_error(cs.copySnapshot, id=snap["id"],
                                                           destzoneid=zone1["id"])["errortext"]
    copied = cs.copySnapshot(id=snap["id"], destzoneids=zone2["id"])["snapshot"]
    assert copied["id"] == snap["id"] and copied["datastoreid"] == region.store["id"]

    made = cs.createVolume(snapshotid=snap["id"], zoneid=zone2["id"], name="from-region")["volume"]
    assert made["state"] == "Ready" and made["zoneid"] == zone2["id"] and made["size"] == SIZE
    assert content(pools[1] / made["path"]) == original  # byte-identical, holes included
    assert not list(region.staging_paths[1].rglob(f"*{snap['id']}*"))  # read from the region store directly

    delete_everywhere(cs, region, snap["id"], chain_prefix)


def test_copy_snapshot_moves_a_zone_store_chain_into_the_region_store(cs, runtime, region, pools, tmp_path):
    zone1, zone2 = region.zones
    zone_store, snap, original = zone_store_snapshot(cs, runtime, zone1, pools[0], tmp_path / "zone1-store")
    template_store = None
    try:
        assert manifest_keys(region, snap["id"]) == []
        assert cs.listSnapshots(id=snap["id"], zoneid=zone2["id"]).get("snapshot", []) == []
        error = api_error(cs.createVolume, snapshotid=snap["id"], zoneid=zone2["id"])
        assert error["errorcode"] == 431 and "not available in zone" in error["errortext"]

        copied = cs.copySnapshot(id=snap["id"], destzoneid=zone2["id"])["snapshot"]
        assert copied["datastoreid"] == region.store["id"]
        (manifest,) = manifest_keys(region, snap["id"])
        chain_prefix = manifest.split("/manifests/")[0]
        assert not (tmp_path / "zone1-store" / chain_prefix).exists()  # moved, not duplicated
        assert cs.listSnapshots(id=snap["id"], zoneid=zone2["id"])["snapshot"][0]["zoneid"] == zone2["id"]

        made = cs.createVolume(snapshotid=snap["id"], zoneid=zone2["id"])["volume"]
        assert content(pools[1] / made["path"]) == original
        # A template from it in zone 2 lands on zone 2's own image store with the same bytes.
        template_store = cs.addImageStore(provider="Local", url=f"file://{tmp_path / 'zone2-store'}",
                                          name=f"z2-{uuid.uuid4().hex[:6]}", zoneid=zone2["id"])["imagestore"]
        template = cs.createTemplate(snapshotid=snap["id"], zoneid=zone2["id"], name=f"t-{uuid.uuid4().hex[:6]}",
                                     ostypeid="1")["template"]
        assert template["zoneid"] == zone2["id"] and template["isready"] is True
        (image,) = [p for p in (tmp_path / "zone2-store").rglob("*.raw")]
        assert content(image) == original
        cs.deleteTemplate(id=template["id"])

        delete_everywhere(cs, region, snap["id"], chain_prefix)
    finally:
        for store in (zone_store, template_store):
            if store is not None:
                try:
                    cs.deleteImageStore(id=store["id"])
                except CloudStackApiException:
                    cs.updateImageStore(id=store["id"], readonly=True)  # keep placement away from it


def test_delete_while_the_chain_store_is_away_is_completed_when_it_is_back(cs, runtime, region, pools, tmp_path):
    root = tmp_path / "zone1-store"
    zone_store, snap, _ = zone_store_snapshot(cs, runtime, region.zones[0], pools[0], root)
    (manifest,) = root.rglob(f"{snap['id']}.json.zst")
    away = root.with_name(root.name + ".away")
    root.rename(away)
    root.write_text("away")  # nothing can be read or written there
    try:
        cs.deleteSnapshot(id=snap["id"])
        assert cs.listSnapshots(id=snap["id"]).get("snapshot", []) == []  # gone at once
        remove_owed_manifests(runtime)  # the periodic retry, while the store is still away
    finally:
        root.unlink()
        away.rename(root)
    assert manifest.exists()  # back with the manifest it held when it went away
    remove_owed_manifests(runtime)
    assert not manifest.exists()
    collect_garbage_now(cs, zone_store["id"])
    cs.deleteImageStore(id=zone_store["id"])  # nothing of the chain is left on it
