"""The settings registry: every default is valid, and bad values are a 431 naming `value`."""

from __future__ import annotations

import pytest

from secstor.domain.errors import InvalidParameter
from secstor.domain.settings import Setting, all_settings, get_setting, register

pytestmark = pytest.mark.nodb

SEED_SETTINGS = {  # named in DESIGN.md, with CloudStack's defaults
    "image.store.allocation.algorithm": "firstfitleastconsumed",
    "image.store.imbalance.threshold": "0.3",
    "secondary.storage.capacity.threshold": "0.90",
    "secstorage.max.migrate.sessions": "2",
    "max.ssvm.count": "5",
    "max.data.migration.wait.time": "15",
    "secstorage.allowed.internal.sites": "",
    "snapshot.backup.to.secondary": "true",
    "snapshot.delta.max": "16",
    "snapshot.max.hourly": "8",
    "snapshot.max.daily": "8",
    "snapshot.max.weekly": "8",
    "snapshot.max.monthly": "8",
}


def rejected(name: str, value: str) -> str:
    with pytest.raises(InvalidParameter) as err:
        get_setting(name).parse(value)
    assert err.value.errorcode == 431 and err.value.param == "value"
    assert name in err.value.message and repr(value) in err.value.message
    return err.value.message


def test_the_settings_design_md_names_exist_with_cloudstacks_defaults():
    assert {name: get_setting(name).default for name in SEED_SETTINGS} == SEED_SETTINGS


@pytest.mark.parametrize("setting", all_settings(), ids=lambda s: s.name)
def test_every_setting_is_complete_and_its_default_parses(setting):
    assert setting.description.strip() and setting.category.strip()
    assert setting.type in {"Integer", "Long", "Float", "Boolean", "String", "CSV"}
    setting.parse(setting.default)


def test_values_parse_to_their_types():
    assert get_setting("secstorage.max.migrate.sessions").parse(" 4 ") == 4
    assert get_setting("secondary.storage.capacity.threshold").parse("0.5") == 0.5
    assert get_setting("snapshot.backup.to.secondary").parse("FALSE") is False
    assert get_setting("secstorage.allowed.internal.sites").parse("10.0.0.0/8, 192.168.1.0/24,") == [
        "10.0.0.0/8", "192.168.1.0/24"]
    assert get_setting("image.store.allocation.algorithm").parse("random") == "random"


@pytest.mark.parametrize("name, value, reason", [
    ("secstorage.max.migrate.sessions", "two", "not a valid Integer"),
    ("secstorage.max.migrate.sessions", "0", "must be >= 1"),
    ("secstorage.max.migrate.sessions", "65", "must be <= 64"),
    ("secondary.storage.capacity.threshold", "90%", "not a valid Float"),
    ("snapshot.backup.to.secondary", "1", "not a valid Boolean"),
    ("image.store.allocation.algorithm", "fastest", "valid values are firstfitleastconsumed, random"),
    ("secstorage.allowed.internal.sites", "10.0.0.0/8,localhost", "'localhost' is not a CIDR"),
])
def test_bad_values_are_431_with_the_reason(name, value, reason):
    assert reason in rejected(name, value)


def test_an_unknown_setting_is_431_naming_name():
    with pytest.raises(InvalidParameter) as err:
        get_setting("no.such.setting")
    assert err.value.param == "name"
    assert err.value.message == "Config parameter with name no.such.setting doesn't exist"


def test_registering_refuses_duplicates_and_invalid_defaults():
    with pytest.raises(ValueError):
        register(Setting("snapshot.max.daily", "8", "Integer", "Snapshots", "again"))
    with pytest.raises(InvalidParameter):
        register(Setting("test.bad.default", "x", "Integer", "Test", "its default is no integer"))
    assert "test.bad.default" not in {s.name for s in all_settings()}
