"""listApis describes the registry the way cloudmonkey's `sync` expects."""

from __future__ import annotations

import pytest

from secstor.api.registry import USER
from tests.support.api import served_commands


def parse_like_cloudmonkey(body: dict) -> dict[str, dict]:
    """What cloudmonkey's config/cache.go UpdateCache does with listapisresponse: it type-asserts
    these fields, and any other type makes it panic."""
    assert isinstance(body["count"], int)
    apis = {}
    for api in body["api"]:
        assert isinstance(api["name"], str) and isinstance(api["isasync"], bool)
        assert isinstance(api["description"], str)
        for arg in api["params"]:
            assert isinstance(arg["name"], str) and isinstance(arg["type"], str)
            assert isinstance(arg["required"], bool) and isinstance(arg["description"], str)
            assert isinstance(arg.get("related", ""), str)
            assert isinstance(arg["length"], int)
        for field in api["response"]:
            assert {type(field[k]) for k in ("name", "description", "type")} == {str}
        apis[api["name"]] = api
    return apis


def test_an_admin_gets_every_command_in_a_form_cloudmonkey_can_sync(admin_cs):
    body = admin_cs.listApis()
    apis = parse_like_cloudmonkey(body)
    registry = served_commands()
    assert body["count"] == len(registry)
    assert {name.lower() for name in apis} == set(registry)


def test_a_user_gets_exactly_the_commands_its_role_may_call(regular_user):
    apis = parse_like_cloudmonkey(regular_user.cs.listApis())
    assert set(apis) == {c.name for c in served_commands().values() if USER in c.roles}
    assert "createZone" not in apis and "listZones" in apis


@pytest.fixture(scope="module")
def admin_apis(admin_cs) -> dict[str, dict]:
    return parse_like_cloudmonkey(admin_cs.listApis())


def test_parameters_and_kinds_come_from_the_registry(admin_apis):
    for cmd in served_commands().values():
        api = admin_apis[cmd.name]
        assert api["isasync"] is cmd.is_async
        declared = {p.name: (p.type.value, p.required) for p in cmd.params}
        assert {a["name"]: (a["type"], a["required"]) for a in api["params"]} == declared, cmd.name
        if cmd.response_object:
            assert api["type"] == cmd.response_object
        if cmd.is_list:
            assert {"keyword", "page", "pagesize"} <= {a["name"] for a in api["params"]}


def test_extensions_are_marked_in_their_description(admin_apis):
    for cmd in served_commands().values():
        api = admin_apis[cmd.name]
        assert api["description"].startswith("(secstor extension) ") is cmd.extension, cmd.name


def test_response_fields_for_cloudmonkey_filters(admin_apis):
    assert {"sessionkey", "userid", "timeout"} <= {f["name"] for f in admin_apis["login"]["response"]}
    delete_zone = admin_apis["deleteZone"]
    assert {f["name"] for f in delete_zone["response"]} == {"success", "displaytext"}


def test_name_lookup_is_case_insensitive_and_unknown_names_list_nothing(admin_cs, regular_user):
    assert admin_cs.listApis(name="LISTZONES")["api"][0]["name"] == "listZones"
    assert admin_cs.listApis(name="noSuchCommand") == {}
    assert regular_user.cs.listApis(name="createZone") == {}  # exists, but not for this role
