"""Zones through the real API, with the cs client."""

import pytest
from cs import CloudStackApiException


def test_create_list_delete_zone(admin_cs, unique_name):
    zone = admin_cs.createZone(name=unique_name)["zone"]
    listed = admin_cs.listZones(id=zone["id"])
    assert listed["count"] == 1 and listed["zone"][0]["name"] == unique_name
    assert admin_cs.deleteZone(id=zone["id"]) == {"success": True}
    assert admin_cs.listZones(id=zone["id"]) == {}


def test_duplicate_zone_name_is_431(admin_cs, unique_name):
    admin_cs.createZone(name=unique_name)
    with pytest.raises(CloudStackApiException) as err:
        admin_cs.createZone(name=unique_name)
    assert err.value.error["errorcode"] == 431
    assert unique_name in err.value.error["errortext"]


def test_zone_holding_a_store_cannot_be_deleted(admin_cs):
    zone1 = admin_cs.listZones(name="zone1")["zone"][0]
    with pytest.raises(CloudStackApiException) as err:
        admin_cs.deleteZone(id=zone1["id"])
    assert err.value.error["errorcode"] == 536
    assert "default" in err.value.error["errortext"]
    assert admin_cs.listZones(id=zone1["id"])["count"] == 1
