"""Disk offerings through the real API: they size new and resized volumes, as in CloudStack."""

from __future__ import annotations

import uuid

import pytest
from cs import CloudStackApiException

from tests.volumes.conftest import GIB
from tests.volumes.test_pools_volumes_api import _wait_ready, api_error


@pytest.fixture
def offerings(fast_admin):
    made = {
        "fixed": fast_admin.createDiskOffering(name=f"fixed-{uuid.uuid4().hex[:6]}", disksize=2)["diskoffering"],
        "custom": fast_admin.createDiskOffering(name=f"custom-{uuid.uuid4().hex[:6]}", customized=True)["diskoffering"],
    }
    yield made
    for offering in made.values():
        try:
            fast_admin.deleteDiskOffering(id=offering["id"])
        except CloudStackApiException:
            pass  # the test deleted it already


def test_offerings_size_volumes(fast_admin, fast_user, pool_zone, offerings):
    fixed, custom = offerings["fixed"], offerings["custom"]
    assert fixed["disksize"] == 2 and fixed["iscustomized"] is False
    assert custom["disksize"] == 0 and custom["iscustomized"] is True
    listed = fast_user.listDiskOfferings(id=fixed["id"])  # users see offerings, to pick one
    assert listed["count"] == 1 and listed["diskoffering"][0]["name"] == fixed["name"]

    pz = pool_zone("RAW")
    vol = fast_admin.createVolume(name="by-offering", zoneid=pz.zone_id, diskofferingid=fixed["id"],
                                  fetch_result=False)
    volume = _wait_ready(fast_admin, vol["id"])
    assert volume["size"] == 2 * GIB
    assert pz.pool_file("RAW", volume["path"]).stat().st_size == 2 * GIB

    vol = fast_admin.createVolume(name="custom", zoneid=pz.zone_id, diskofferingid=custom["id"], size=3,
                                  fetch_result=False)
    assert _wait_ready(fast_admin, vol["id"])["size"] == 3 * GIB

    grown = fast_admin.resizeVolume(id=volume["id"], diskofferingid=custom["id"], size=4)["volume"]
    assert grown["size"] == 4 * GIB


def test_offering_rules_are_431_naming_the_parameter(fast_admin, fast_user, pool_zone, offerings):
    pz = pool_zone("RAW")
    before = fast_admin.listVolumes(zoneid=pz.zone_id).get("count", 0)
    err = api_error(fast_admin.createVolume, zoneid=pz.zone_id, diskofferingid=offerings["fixed"]["id"], size=1)
    assert err["errorcode"] == 431 and "size" in err["errortext"]
    err = api_error(fast_admin.createVolume, zoneid=pz.zone_id, diskofferingid=offerings["custom"]["id"])
    assert err["errorcode"] == 431 and "size" in err["errortext"]
    err = api_error(fast_admin.createVolume, zoneid=pz.zone_id, diskofferingid=str(uuid.uuid4()))
    assert err["errorcode"] == 431 and "diskofferingid" in err["errortext"]
    assert fast_admin.listVolumes(zoneid=pz.zone_id).get("count", 0) == before  # nothing created

    assert api_error(fast_admin.createDiskOffering, name="no-size")["errorcode"] == 431
    err = api_error(fast_admin.createDiskOffering, name="both", disksize=1, customized=True)
    assert err["errorcode"] == 431 and "disksize" in err["errortext"]
    assert api_error(fast_user.createDiskOffering, name="user", disksize=1)["errorcode"] == 432

    assert fast_admin.deleteDiskOffering(id=offerings["fixed"]["id"])["success"] is True
    assert fast_admin.listDiskOfferings(id=offerings["fixed"]["id"]) == {}
