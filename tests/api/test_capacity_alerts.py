"""Capacity numbers, listCapacity and capacity alerts through the real API (cs client)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from cs import CloudStackApiException

from tests.stores.helpers import tmpfs

NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="mounting tmpfs needs root")


def api_error(call, **params) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        call(**params)
    return err.value.error


def add_local(cs, path: Path, name: str, **params) -> dict:
    return cs.addImageStore(provider="Local", url=f"file://{path}", name=name, **params)["imagestore"]


def store_by_id(cs, store_id: str) -> dict:
    return cs.listImageStores(id=store_id)["imagestore"][0]


def alerts(cs, **params) -> list[dict]:
    return cs.listAlerts(**params).get("alert", [])


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"s" * size)


@NEEDS_ROOT
def test_local_capacity_is_what_statvfs_says(admin_cs, tmp_path, unique_name):
    with tmpfs(tmp_path / "fs", size="8m") as fs:
        store = add_local(admin_cs, fs, unique_name)
        try:
            st = os.statvfs(fs)
            assert store["disksizetotal"] == st.f_blocks * st.f_frsize == 8 << 20
            assert store["disksizeused"] == (st.f_blocks - st.f_bavail) * st.f_frsize
            write(fs / "images" / "one.raw", 1 << 20)
            admin_cs.listCapacity(fetchlatest=True)
            st = os.statvfs(fs)
            assert store_by_id(admin_cs, store["id"])["disksizeused"] == (st.f_blocks - st.f_bavail) * st.f_frsize
            assert store_by_id(admin_cs, store["id"])["disksizeused"] >= store["disksizeused"] + (1 << 20)
        finally:
            admin_cs.deleteImageStore(id=store["id"])


def test_capacitybytes_caps_total_and_counts_only_the_bytes_held(admin_cs, tmp_path, unique_name):
    path = tmp_path / "capped"
    store = add_local(admin_cs, path, unique_name)
    write(path / "template" / "tmpl" / "2" / "201" / "a.qcow2", 1000)
    write(path / "misc" / "b", 234)
    capped = admin_cs.updateImageStore(id=store["id"], capacitybytes=100_000)["imagestore"]
    assert (capped["disksizetotal"], capped["disksizeused"]) == (100_000, 1234)
    assert store_by_id(admin_cs, store["id"]) == capped
    uncapped = admin_cs.updateImageStore(id=store["id"], capacitybytes=0)["imagestore"]
    st = os.statvfs(path)
    assert uncapped["disksizetotal"] == st.f_blocks * st.f_frsize  # the whole file system again
    shutil.rmtree(path / "template")
    admin_cs.deleteImageStore(id=store["id"])


def test_alert_once_per_episode_of_high_usage(admin_cs, tmp_path, unique_name):
    path = tmp_path / "full"
    store = add_local(admin_cs, path, unique_name)
    write(path / "data" / "blob", 100_000)
    try:
        assert alerts(admin_cs, keyword=unique_name) == []
        # 100000/110000 = 90.91% used: above secstorage.capacity.alert.threshold (0.85).
        admin_cs.updateImageStore(id=store["id"], capacitybytes=110_000)
        [alert] = alerts(admin_cs, keyword=unique_name)
        assert (alert["type"], alert["name"]) == (6, "ALERT.STORAGE.SECONDARY")
        assert unique_name in alert["description"] and "90.91% used" in alert["description"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", alert["sent"])
        assert alerts(admin_cs, id=alert["id"]) == [alert]
        assert alert["id"] in [a["id"] for a in alerts(admin_cs, type=6, name="ALERT.STORAGE.SECONDARY")]
        assert alerts(admin_cs, keyword=unique_name, type=12) == []

        admin_cs.listCapacity(fetchlatest=True)  # a second scan: the condition persists
        assert [a["id"] for a in alerts(admin_cs, keyword=unique_name)] == [alert["id"]]

        admin_cs.updateImageStore(id=store["id"], capacitybytes=10_000_000)  # 1% used: resolved
        admin_cs.listCapacity(fetchlatest=True)
        assert len(alerts(admin_cs, keyword=unique_name)) == 1
        admin_cs.updateImageStore(id=store["id"], capacitybytes=110_000)  # a new episode, a new alert
        assert len(alerts(admin_cs, keyword=unique_name)) == 2
    finally:
        admin_cs.deleteImageStore(id=store["id"])


def test_failed_scan_keeps_the_last_values_and_raises_an_alert(admin_cs, tmp_path, unique_name):
    parent = tmp_path / "parent"
    store = add_local(admin_cs, parent / "store", unique_name)
    shutil.rmtree(parent)
    parent.write_text("the store's directory is gone")
    try:
        admin_cs.listCapacity(fetchlatest=True)
        [alert] = alerts(admin_cs, keyword=unique_name)
        assert (alert["type"], alert["name"]) == (12, "ALERT.STORAGE.MISC")
        assert f"Capacity scan of image store {unique_name} failed" in alert["description"]
        after = store_by_id(admin_cs, store["id"])
        assert (after["disksizetotal"], after["disksizeused"]) == (store["disksizetotal"], store["disksizeused"])
        admin_cs.listCapacity(fetchlatest=True)
        assert len(alerts(admin_cs, keyword=unique_name)) == 1  # not repeated while it stays broken
    finally:
        parent.unlink()
        (parent / "store").mkdir(parents=True)
    admin_cs.listCapacity(fetchlatest=True)
    admin_cs.deleteImageStore(id=store["id"])


def test_list_capacity_sums_a_zones_stores_and_the_region_wide_ones(admin_cs, tmp_path, unique_name):
    zone = admin_cs.createZone(name=unique_name)["zone"]
    stores = []
    for i, (cap, held) in enumerate(((1000, 100), (3000, 200))):
        path = tmp_path / f"z{i}"
        stores.append(add_local(admin_cs, path, f"{unique_name}-{i}", zoneid=zone["id"]))
        write(path / "data", held)
        admin_cs.updateImageStore(id=stores[-1]["id"], capacitybytes=cap)
    try:
        region = [s for s in admin_cs.listImageStores()["imagestore"] if s["scope"] == "REGION"]
        total = 4000 + sum(s.get("disksizetotal", 0) for s in region)
        used = 300 + sum(s.get("disksizeused", 0) for s in region)
        [capacity] = admin_cs.listCapacity(zoneid=zone["id"])["capacity"]
        assert capacity == {
            "type": 6, "name": "SECONDARY_STORAGE", "zoneid": zone["id"], "zonename": unique_name,
            "capacitytotal": total, "capacityused": used,
            "percentused": f"{used / total * 100:.2f}".rstrip("0").rstrip("."),  # Java's "##.##"
        }
        assert admin_cs.listCapacity(zoneid=zone["id"], type=6)["capacity"] == [capacity]
        assert admin_cs.listCapacity(zoneid=zone["id"], type=1) == {}
        everything = admin_cs.listCapacity()["capacity"]
        assert capacity in everything and "zone1" in [c["zonename"] for c in everything]
        assert [c["zonename"] for c in everything] == sorted(c["zonename"] for c in everything)
        by_usage = admin_cs.listCapacity(sortby="usage")["capacity"]
        ratios = [c["capacityused"] / c["capacitytotal"] for c in by_usage]
        assert ratios == sorted(ratios, reverse=True)
        error = api_error(admin_cs.listCapacity, sortby="name")
        assert error["errorcode"] == 431 and "sortBy" in error["errortext"]
    finally:
        for s in stores:
            admin_cs.deleteImageStore(id=s["id"])
        admin_cs.deleteZone(id=zone["id"])


def test_archived_and_deleted_alerts(admin_cs, tmp_path, unique_name):
    path = tmp_path / "alerting"
    store = add_local(admin_cs, path, unique_name)
    write(path / "data", 10_000)
    try:
        admin_cs.updateImageStore(id=store["id"], capacitybytes=10_500)
        [alert] = alerts(admin_cs, keyword=unique_name)
        assert admin_cs.archiveAlerts(ids=[alert["id"]]) == {"success": True}
        assert alerts(admin_cs, id=alert["id"]) == []
        admin_cs.listCapacity(fetchlatest=True)
        assert alerts(admin_cs, keyword=unique_name) == [], "archiving does not end the episode"

        admin_cs.updateImageStore(id=store["id"], capacitybytes=1_000_000)
        admin_cs.updateImageStore(id=store["id"], capacitybytes=10_500)
        [second] = alerts(admin_cs, keyword=unique_name)
        assert admin_cs.deleteAlerts(ids=[second["id"]]) == {"success": True}
        assert alerts(admin_cs, keyword=unique_name) == []

        error = api_error(admin_cs.archiveAlerts)
        assert error["errorcode"] == 431 and "either ids, type, startdate or enddate" in error["errortext"]
        error = api_error(admin_cs.deleteAlerts, startdate="2025-01-01")
        assert error["errorcode"] == 431 and "enddate must be specified" in error["errortext"]
        assert api_error(admin_cs.deleteAlerts, ids="not-a-uuid")["errorcode"] == 431
    finally:
        admin_cs.deleteImageStore(id=store["id"])
