"""Settings through listConfigurations, updateConfiguration and resetConfiguration."""

from __future__ import annotations

import httpx
import pytest
from cs import CloudStackApiException

from secstor.domain.settings import all_settings

# A setting nothing in the test session depends on, so changing it briefly is harmless.
HARMLESS = "snapshot.max.monthly"


def api_error(call, **kwargs) -> tuple[int, str]:
    with pytest.raises(CloudStackApiException) as err:
        call(**kwargs)
    return err.value.response.status_code, err.value.error["errortext"]


@pytest.fixture
def restore_harmless(admin_cs):
    yield HARMLESS
    admin_cs.resetConfiguration(name=HARMLESS)


def test_every_registered_setting_is_listed_with_its_default_and_description(admin_cs):
    listed = {c["name"]: c for c in admin_cs.listConfigurations(fetch_list=True, pagesize=7)}
    assert set(listed) == {s.name for s in all_settings()}
    for setting in all_settings():
        row = listed[setting.name]
        assert row["defaultvalue"] == setting.default
        assert row["description"].startswith(setting.description)
        assert row["category"] == setting.category
        assert row["scope"] == "global"
        assert row["isdynamic"] is setting.dynamic
        assert row["component"] == "secstor"
        assert row["type"] in {"Number", "Decimal", "Boolean", "String", "CSV", "Select"}
        if setting.options:
            assert row["type"] == "Select" and row["options"].split(",") == list(setting.options)


def test_filters_by_name_category_and_keyword(admin_cs):
    # CloudStack matches the name anywhere in the setting's name.
    names = {c["name"] for c in admin_cs.listConfigurations(name="snapshot.max.")["configuration"]}
    assert names == {f"snapshot.max.{p}" for p in ("hourly", "daily", "weekly", "monthly")}
    snapshots = admin_cs.listConfigurations(category="Snapshots")["configuration"]
    assert {c["category"] for c in snapshots} == {"Snapshots"}
    assert {s.name for s in all_settings() if s.category == "Snapshots"} == {c["name"] for c in snapshots}
    assert "secondary.storage.capacity.threshold" in {
        c["name"] for c in admin_cs.listConfigurations(keyword="capacity")["configuration"]}
    assert admin_cs.listConfigurations(name="no.such.setting.anywhere") == {}


def test_update_then_reset_a_setting(admin_cs, restore_harmless):
    updated = admin_cs.updateConfiguration(name=HARMLESS, value="3")["configuration"]
    assert (updated["name"], updated["value"], updated["defaultvalue"]) == (HARMLESS, "3", "8")
    assert admin_cs.listConfigurations(name=HARMLESS)["configuration"][0]["value"] == "3"
    reset = admin_cs.resetConfiguration(name=HARMLESS)["configuration"]
    assert reset["value"] == "8"
    assert admin_cs.listConfigurations(name=HARMLESS)["configuration"][0]["value"] == "8"


@pytest.mark.parametrize("name, value, reason", [
    (HARMLESS, "many", "not a valid Integer"),
    (HARMLESS, "-1", "must be >= 0"),
    ("secondary.storage.capacity.threshold", "1.5", "must be <= 1"),
    ("image.store.allocation.algorithm", "roundrobin", "valid values are firstfitleastconsumed, random"),
    ("snapshot.backup.to.secondary", "yes", "not a valid Boolean"),
    ("secstorage.allowed.internal.sites", "10.0.0.0/8,not-a-cidr", "not-a-cidr"),
    (HARMLESS, None, "not a valid Integer"),  # no value at all
])
def test_a_bad_value_is_431_naming_value_with_the_reason_and_changes_nothing(admin_cs, name, value, reason):
    before = admin_cs.listConfigurations(name=name)["configuration"][0]["value"]
    status, text = api_error(admin_cs.updateConfiguration, name=name, value=value)
    assert status == 431
    assert "value" in text and reason in text and name in text
    assert admin_cs.listConfigurations(name=name)["configuration"][0]["value"] == before


@pytest.mark.parametrize("command", ["updateConfiguration", "resetConfiguration"])
def test_an_unknown_setting_is_431_naming_name(admin_cs, command):
    status, text = api_error(getattr(admin_cs, command), name="no.such.setting", value="1")
    assert status == 431
    assert text == "Config parameter with name no.such.setting doesn't exist"


def test_a_change_is_live_without_a_restart(server, admin_cs, regular_user):
    """api.session.timeout is read on every login: the running server uses the new value at once."""
    admin_cs.updateConfiguration(name="api.session.timeout", value="120")
    try:
        response = httpx.post(server.api_url, data={"command": "login", "username": regular_user.user["username"],
                                                     "password": regular_user.password, "response": "json"})
        assert response.json()["loginresponse"]["timeout"] == 120
    finally:
        admin_cs.resetConfiguration(name="api.session.timeout")
