"""migrateSecondaryStorageData, migrateResourceToAnotherSecondaryStorage and listImageStoreObjects
through the real API (the session server's embedded worker runs the jobs)."""

from __future__ import annotations

import re

import pytest
from cs import CloudStackApiException

from secstor.domain.states import ObjectInStoreState
from tests.migration.conftest import MIB, copies, finished, read_back, ready_only_on, store_id


def api_error(call, **params) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        call(**params)
    return err.value.error


def migrate(cs, src: dict, dests: list[dict], policy: str | None = None, **extra) -> dict:
    job = cs.migrateSecondaryStorageData(srcpool=src["id"], destpools=[d["id"] for d in dests], migrationtype=policy,
                                         **extra)
    done = finished(cs, job["jobid"])
    assert done["jobstatus"] == 1, done
    return done


def test_marvin_04_a_read_only_destination_leaves_no_valid_destination(admin_cs, zone):
    z = zone(None, None)
    admin_cs.updateImageStore(id=z.stores[0]["id"], readonly=True)
    for policy in ("complete", "balance"):
        error = api_error(admin_cs.migrateSecondaryStorageData, srcpool=z.stores[1]["id"],
                          destpools=z.stores[0]["id"], migrationtype=policy)
        assert error["errorcode"] == 431
        assert re.search(r"No destination valid store\(s\) available to migrate.", error["errortext"])


def test_bad_requests_are_refused_before_any_job(admin_cs, zone):
    z = zone(None, None)
    bad_policy = api_error(admin_cs.migrateSecondaryStorageData, srcpool=z.stores[0]["id"],
                           destpools=z.stores[1]["id"], migrationtype="sideways")
    assert (bad_policy["errorcode"], bad_policy["errortext"]) == (530, "Not a valid migration policy")
    missing = api_error(admin_cs.migrateSecondaryStorageData, srcpool="4f1c6e4e-0000-4000-8000-000000000000",
                        destpools=z.stores[1]["id"])
    assert missing["errorcode"] == 431 and "srcpool" in missing["errortext"]
    itself = api_error(admin_cs.migrateSecondaryStorageData, srcpool=z.stores[0]["id"], destpools=z.stores[0]["id"])
    assert "No destination valid store(s)" in itself["errortext"]
    other_zone = zone(None)
    elsewhere = api_error(admin_cs.migrateSecondaryStorageData, srcpool=z.stores[0]["id"],
                          destpools=other_zone.stores[0]["id"])
    assert "No destination valid store(s)" in elsewhere["errortext"]
    unknown = api_error(admin_cs.migrateResourceToAnotherSecondaryStorage, srcpool=z.stores[0]["id"],
                        destpool=z.stores[1]["id"], templates="4f1c6e4e-0000-4000-8000-000000000001")
    assert unknown["errorcode"] == 431 and "Unable to find a Ready template with id" in unknown["errortext"]
    assert not admin_cs.listImageStores(id=z.stores[0]["id"])["imagestore"][0]["readonly"]


def test_marvin_05_complete_to_a_fuller_store_returns_the_source_freer_message(admin_cs, zone, seed, runtime):
    z = zone(8 * MIB, 8 * MIB)
    seed(z.stores[0]["id"], 1 * MIB)
    kept = seed(z.stores[1]["id"], 3 * MIB)
    result = migrate(admin_cs, z.stores[0], [z.stores[1]], "complete")["jobresult"]["imagestore"]
    assert re.search("has equal or more free space than destination", result["message"])
    assert result["message"].startswith(f"Files not completely migrated from {z.stores[0]['name']}. ")
    assert result["success"] is False and result["migrationtype"] == "COMPLETE"
    assert ready_only_on(runtime, kept, z.stores[1]["id"])


def test_complete_moves_every_template_verified_and_leaves_the_source_read_only(admin_cs, zone, seed, runtime):
    z = zone(64 * MIB, 64 * MIB, 64 * MIB)
    templates = [seed(z.stores[0]["id"], size) for size in (3 * MIB, 2 * MIB, 1 * MIB, 200 * 1024)]
    job = migrate(admin_cs, z.stores[0], z.stores[1:], "Complete")
    result = job["jobresult"]["imagestore"]
    assert result == {"message": "Migration completed. successful migrations: 4", "migrationtype": "COMPLETE",
                      "success": True}
    total = sum(t.size for t in templates)
    assert job["jobprocstatus"] == 100
    assert job["progress"] == {"objectsdone": 4, "objectstotal": 4, "bytesdone": total, "bytestotal": total}
    dest_ids = {store_id(runtime, s["id"]): s["id"] for s in z.stores[1:]}
    for t in templates:
        (where, state), = copies(runtime, t.id).items()
        assert where in dest_ids and state == ObjectInStoreState.Ready.value
        assert read_back(runtime, dest_ids[where], t.id) == t.sha256
    assert admin_cs.listImageStores(id=z.stores[0]["id"])["imagestore"][0]["readonly"] is True
    assert [p for p in z.paths[0].rglob("*") if p.is_file() and ".secstor-" not in str(p)] == []
    # both destinations took some: the freest store changes as they fill
    assert all(any(z.paths[i].rglob("*.raw")) for i in (1, 2))
    # the source is empty now: nothing left to migrate
    again = migrate(admin_cs, z.stores[0], z.stores[1:])["jobresult"]["imagestore"]
    assert again == {"message": f"No files in Image store {z.stores[0]['name']} to migrate",
                     "migrationtype": "COMPLETE", "success": True}  # named as users know it, not by internal id


def test_balance_moves_until_the_imbalance_is_under_the_threshold(admin_cs, zone, seed, runtime):
    z = zone(4 * MIB + 64 * 1024, 4 * MIB + 64 * 1024)
    templates = [seed(z.stores[0]["id"], MIB) for _ in range(3)]
    plan = migrate(admin_cs, z.stores[0], [z.stores[1]], "balance", dryrun=True)["jobresult"]["imagestore"]
    assert plan["imbalancebefore"] > 0.3 >= plan["imbalanceafter"]
    assert [(m["from"], m["to"], m["bytes"]) for m in plan["moves"]] == [(z.stores[0]["id"], z.stores[1]["id"], MIB)]
    result = migrate(admin_cs, z.stores[0], [z.stores[1]], "BALANCE")["jobresult"]["imagestore"]
    assert result == {"message": "Migration completed. successful migrations: 1", "migrationtype": "BALANCE",
                      "success": True}
    on_dest = [t for t in templates if ready_only_on(runtime, t, z.stores[1]["id"])]
    assert len(on_dest) == 1 and on_dest[0].uuid == plan["moves"][0]["id"]
    assert read_back(runtime, z.stores[1]["id"], on_dest[0].id) == on_dest[0].sha256
    # balanced now: a second run has nothing to do
    again = migrate(admin_cs, z.stores[0], [z.stores[1]], "balance")["jobresult"]["imagestore"]
    assert again == {"message": "Migration not required as system seems balanced", "migrationtype": "BALANCE",
                     "success": True}
    assert not admin_cs.listImageStores(id=z.stores[0]["id"])["imagestore"][0]["readonly"]


def test_a_dry_run_returns_the_plan_and_moves_nothing(admin_cs, zone, seed, runtime):
    z = zone(32 * MIB, 32 * MIB)
    big, small = seed(z.stores[0]["id"], 2 * MIB), seed(z.stores[0]["id"], MIB)
    plan = migrate(admin_cs, z.stores[0], [z.stores[1]], dryrun=True)["jobresult"]["imagestore"]
    assert plan["dryrun"] is True and plan["migrationtype"] == "COMPLETE" and plan["success"] is True
    assert [(m["id"], m["name"], m["kind"], m["to"], m["bytes"]) for m in plan["moves"]] == [
        (big.uuid, big.name, "template", z.stores[1]["id"], 2 * MIB),
        (small.uuid, small.name, "template", z.stores[1]["id"], MIB)]
    assert plan["bytestotal"] == 3 * MIB and plan["objectstotal"] == 2
    assert plan["estimatedseconds"] == pytest.approx(3 * MIB / plan["throughputbytespersecond"], abs=1e-3)
    assert plan["imbalancebefore"] > plan["imbalanceafter"]
    for t in (big, small):
        assert ready_only_on(runtime, t, z.stores[0]["id"])
    assert admin_cs.listImageStores(id=z.stores[0]["id"])["imagestore"][0]["readonly"] is False
    targeted = admin_cs.migrateResourceToAnotherSecondaryStorage(srcpool=z.stores[0]["id"], destpool=z.stores[1]["id"],
                                                                 templates=small.uuid, dryrun=True)
    plan = finished(admin_cs, targeted["jobid"])["jobresult"]["imagestore"]
    assert [m["id"] for m in plan["moves"]] == [small.uuid]
    assert ready_only_on(runtime, small, z.stores[0]["id"])


def test_image_store_object_migration_flow(admin_cs, zone, seed, runtime):
    z = zone(None, None)
    t = seed(z.stores[0]["id"], 100 * 1024)
    tmpl_dir = admin_cs.listImageStoreObjects(id=z.stores[0]["id"], path="template/tmpl")["datastoreobject"]
    account_dir, = [d for d in tmpl_dir if d["isdirectory"]]
    by_template = admin_cs.listImageStoreObjects(id=z.stores[0]["id"], path=f"template/tmpl/{account_dir['name']}")
    mine, = [d for d in by_template["datastoreobject"] if d.get("templateid") == t.uuid]
    assert (mine["isdirectory"], mine["templatename"], mine["format"]) == (True, t.name, "RAW")
    path = f"template/tmpl/{account_dir['name']}/{mine['name']}"
    objects = admin_cs.listImageStoreObjects(id=z.stores[0]["id"], path=path)
    assert objects["count"] >= 2 and "template.properties" in {o["name"] for o in objects["datastoreobject"]}
    image, = [o for o in objects["datastoreobject"] if o["name"].endswith(".raw")]
    assert image["size"] == t.size and image["templateid"] == t.uuid and "lastupdated" in image
    assert admin_cs.listImageStoreObjects(id=z.stores[0]["id"], path=path, page=1, pagesize=1)["count"] == 2

    job = admin_cs.migrateResourceToAnotherSecondaryStorage(srcpool=z.stores[0]["id"], destpool=z.stores[1]["id"],
                                                            templates=[t.uuid])
    result = finished(admin_cs, job["jobid"])["jobresult"]["imagestore"]
    assert result["success"] is True and result["message"].endswith("successful migrations: 1")

    gone = api_error(admin_cs.listImageStoreObjects, id=z.stores[0]["id"], path=path)
    assert gone["errorcode"] == 431 and f"{path} doesn't exist in store" in gone["errortext"]
    assert admin_cs.listImageStoreObjects(id=z.stores[1]["id"], path=path)["count"] >= 2
    assert read_back(runtime, z.stores[1]["id"], t.id) == t.sha256
    listed, = admin_cs.listTemplates(templatefilter="all", id=t.uuid)["template"]
    assert listed["isready"] is True
    assert [d["datastoreId"] for d in listed["downloaddetails"]] == [z.stores[1]["id"]]
