"""Parameter parsing: typed values, and a 431 naming the parameter for anything unparseable."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from secstor.api.params import Param, PType, map_to_dict, parse_params
from secstor.domain.errors import InvalidParameter

pytestmark = pytest.mark.nodb


def parse(declared: list[Param], **raw: str) -> dict:
    return parse_params("testCmd", declared, raw)


def rejected(declared: list[Param], **raw: str) -> InvalidParameter:
    with pytest.raises(InvalidParameter) as err:
        parse(declared, **raw)
    assert err.value.errorcode == 431
    return err.value


def test_strings_are_kept_verbatim_and_unknown_parameters_ignored():
    assert parse([Param("name")], name=" a b*~é/+ ", other="x") == {"name": " a b*~é/+ "}


def test_empty_values_count_as_absent():
    assert parse([Param("name"), Param("id", PType.UUID)], name="", id="") == {}


def test_a_missing_required_parameter_is_named_like_cloudstack():
    err = rejected([Param("templatefilter", required=True)])
    assert err.param == "templatefilter"
    assert err.message == "Unable to execute API command testcmd due to missing parameter templatefilter"


def test_strings_longer_than_their_length_are_refused():
    assert parse([Param("name", length=5)], name="abcde") == {"name": "abcde"}
    err = rejected([Param("name", length=5)], name="abcdef")
    assert err.param == "name" and "longer than 5" in err.message


def test_uuids_are_normalised_and_garbage_is_refused():
    raw = "6F9619FF-8B86-D011-B42D-00C04FC964FF"
    assert parse([Param("id", PType.UUID)], id=raw) == {"id": raw.lower()}
    err = rejected([Param("zoneid", PType.UUID)], zoneid="1")
    assert err.param == "zoneid" and "Invalid parameter zoneid value=1" in err.message


@pytest.mark.parametrize("ptype", [PType.INTEGER, PType.LONG, PType.SHORT])
def test_integers(ptype):
    assert parse([Param("n", ptype)], n=" 42 ") == {"n": 42}
    assert parse([Param("n", ptype)], n="-1") == {"n": -1}
    err = rejected([Param("n", ptype)], n="4.2")
    assert err.param == "n" and f"incorrect {ptype.value} value format" in err.message


@pytest.mark.parametrize("raw, value", [("true", True), ("TRUE", True), ("False", False), ("false", False)])
def test_booleans_ignore_case(raw, value):
    assert parse([Param("readonly", PType.BOOLEAN)], readonly=raw) == {"readonly": value}


@pytest.mark.parametrize("raw", ["yes", "1", "t"])
def test_booleans_are_only_true_or_false(raw):
    assert rejected([Param("readonly", PType.BOOLEAN)], readonly=raw).param == "readonly"


def test_lists_split_on_commas_and_check_each_item():
    ids = ["6f9619ff-8b86-d011-b42d-00c04fc964ff", "7f9619ff-8b86-d011-b42d-00c04fc964ff"]
    declared = [Param("destpools", PType.LIST, item_type=PType.UUID)]
    assert parse(declared, destpools=",".join(ids) + ",") == {"destpools": ids}
    assert rejected(declared, destpools=f"{ids[0]},nope").param == "destpools"
    assert parse([Param("names", PType.LIST)], names="a,b") == {"names": ["a", "b"]}


def test_maps_collect_indexed_entries_in_index_order():
    declared = [Param("details", PType.MAP)]
    raw = {"details[1].key": "b", "details[1].value": "2", "details[0].key": "a", "details[0].value": "1",
           "details[2].flag": "on"}
    parsed = parse_params("testCmd", declared, raw)
    assert parsed == {"details": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}, {"flag": "on"}]}
    assert map_to_dict(parsed["details"]) == {"a": "1", "b": "2", "flag": "on"}
    assert map_to_dict(None) == {}


def test_a_missing_required_map_is_named():
    assert rejected([Param("details", PType.MAP, required=True)], other="x").param == "details"


@pytest.mark.parametrize("raw, expected", [
    ("2025-06-01T10:00:00+0000", datetime(2025, 6, 1, 10, 0, tzinfo=timezone.utc)),
    ("2025-06-01 10:00:00", datetime(2025, 6, 1, 10, 0)),
    ("2025-06-01", datetime(2025, 6, 1)),
])
def test_dates_in_cloudstacks_formats(raw, expected):
    assert parse([Param("startdate", PType.DATE)], startdate=raw) == {"startdate": expected}


def test_bad_dates_are_refused():
    assert rejected([Param("startdate", PType.DATE)], startdate="01/06/2025").param == "startdate"
