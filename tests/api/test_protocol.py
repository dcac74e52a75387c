"""The wire contract (client-contract.md §2) on a real `secstor serve`, driven with cs==5.2.0
and with raw HTTP signed by cs's own signing code."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from cs import CloudStackApiException

from tests.support.api import check_envelope, cs_signed, raw_call

AUTH_TEXT = "unable to verify user credentials and/or request signature"
# Characters that differ between quoting schemes: space, the kept '*', '~', non-ASCII, '/', '+'.
AWKWARD_VALUE = "a b*~é/+"


def now() -> datetime:
    return datetime.now(timezone.utc)


def assert_auth_failure(response: httpx.Response, command: str) -> None:
    assert response.status_code == 401
    check_envelope(response)
    assert response.json() == {f"{command.lower()}response": {"uuidList": [], "errorcode": 401,
                                                              "errortext": AUTH_TEXT}}


# ---- signing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["get", "post"])
def test_cs_signs_awkward_values_and_camelcase_keys_over_get_and_post(server, unique_name, method):
    client = server.cs(method=method)
    name = f"{unique_name} {AWKWARD_VALUE}"
    zone = client.createZone(name=name, allocationState="Disabled")["zone"]
    assert zone["name"] == name
    assert zone["allocationstate"] == "Disabled"  # the camelCase key was read, not just signed
    assert client.listZones(id=zone["id"], keyword=AWKWARD_VALUE)["zone"][0]["name"] == name
    assert client.deleteZone(id=zone["id"]) == {"success": True}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_raw_signature_version_3_with_expires_is_accepted(server, method):
    response = raw_call(server, "listZones", {"name": "zone1"}, method=method)
    assert response.status_code == 200
    inner = check_envelope(response)
    assert inner["count"] == 1 and inner["zone"][0]["name"] == "zone1"


def test_marvin_style_signature_over_lowercased_sorted_keys_is_accepted(server):
    """Marvin sorts by lower-cased key; with templateId/templatefilter that order differs from cs's."""
    import base64
    import hashlib
    import hmac
    from urllib.parse import quote_plus

    keys = server.admin_keys
    params = {"command": "listZones", "apiKey": keys["apikey"], "response": "json", "name": "zone1",
              "templateId": "x", "templatefilter": "y", "signatureVersion": "3",
              "expires": (now() + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S%z")}
    canonical = "&".join(f"{k}={quote_plus(v, safe='*').replace('+', '%20')}"
                         for k, v in sorted(params.items(), key=lambda kv: kv[0].lower())).lower()
    digest = hmac.new(keys["secretkey"].encode(), canonical.encode(), hashlib.sha1).digest()
    params["signature"] = base64.b64encode(digest).decode()
    response = httpx.get(server.api_url, params=params)
    assert response.status_code == 200
    assert check_envelope(response)["count"] == 1


def test_expired_signature_is_401_with_cloudstacks_exact_envelope(server):
    response = raw_call(server, "listZones", expires=now() - timedelta(seconds=5))
    assert_auth_failure(response, "listZones")


def test_cs_reports_an_expired_signature_as_api_exception_401(server):
    expired = (now() - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S%z")
    with pytest.raises(CloudStackApiException) as err:
        server.cs().listZones(signatureVersion="3", expires=expired)
    assert err.value.response.status_code == 401
    assert err.value.error == {"uuidList": [], "errorcode": 401, "errortext": AUTH_TEXT}


def test_wrong_secret_is_401(server):
    with pytest.raises(CloudStackApiException) as err:
        server.cs(secret="not-the-secret").listZones()
    assert err.value.response.status_code == 401
    assert err.value.error["errortext"] == AUTH_TEXT


def test_unknown_api_key_is_401(server):
    response = raw_call(server, "listZones", key="no-such-key", secret="whatever")
    assert_auth_failure(response, "listZones")


def test_signature_version_3_without_expires_is_401(server):
    keys = server.admin_keys
    params = cs_signed("listZones", {"signatureVersion": "3"}, keys["apikey"], keys["secretkey"], expires=None)
    assert "expires" not in params
    assert_auth_failure(httpx.get(server.api_url, params=params), "listZones")


def test_unsigned_expiry_is_refused_by_default(server):
    """Without signatureVersion/expires a captured request could be replayed forever."""
    response = raw_call(server, "listZones", expires=None)
    assert_auth_failure(response, "listZones")


def test_expires_too_far_in_the_future_is_401(server):
    response = raw_call(server, "listZones", expires=now() + timedelta(hours=2))
    assert_auth_failure(response, "listZones")


def test_malformed_expires_is_401(server):
    response = raw_call(server, "listZones", expires="tomorrow")
    assert_auth_failure(response, "listZones")


def test_parameter_changed_after_signing_is_401(server):
    keys = server.admin_keys
    params = cs_signed("listZones", {"name": "zone1"}, keys["apikey"], keys["secretkey"])
    params["name"] = "zone2"
    assert_auth_failure(httpx.get(server.api_url, params=params), "listZones")


def test_no_credentials_at_all_is_401(server):
    response = httpx.get(server.api_url, params={"command": "listZones", "response": "json"})
    assert_auth_failure(response, "listZones")


# ---- errors ------------------------------------------------------------------------------------

def test_unknown_command_is_432_under_errorresponse(server, admin_cs):
    response = raw_call(server, "noSuchCommand")
    assert response.status_code == 432
    check_envelope(response)
    assert response.json()["errorresponse"]["errorcode"] == 432
    with pytest.raises(CloudStackApiException) as err:
        admin_cs.noSuchCommand()
    assert err.value.response.status_code == 432


def test_missing_required_parameter_is_431_naming_it(admin_cs):
    with pytest.raises(CloudStackApiException) as err:
        admin_cs.createZone()
    assert err.value.response.status_code == 431
    assert err.value.error["errorcode"] == 431
    assert err.value.error["cserrorcode"] == 4350
    assert err.value.error["errortext"] == "Unable to execute API command createzone due to missing parameter name"


def test_malformed_uuid_is_431_naming_the_parameter(server):
    response = raw_call(server, "listZones", {"id": "not-a-uuid"})
    assert response.status_code == 431
    inner = check_envelope(response)
    assert "parameter id " in inner["errortext"] and "not-a-uuid" in inner["errortext"]


def test_malformed_integer_is_431_naming_the_parameter(server):
    response = raw_call(server, "listZones", {"pagesize": "many"})
    assert response.status_code == 431
    assert "parameter pagesize " in check_envelope(response)["errortext"]


def test_bad_input_changes_nothing(admin_cs, unique_name):
    with pytest.raises(CloudStackApiException):
        admin_cs.createZone(name=unique_name, allocationstate="Sideways")
    assert admin_cs.listZones(name=unique_name) == {}


@pytest.fixture
def crashing_command():
    """A command whose handler creates a zone and then fails unexpectedly (in-process)."""
    from secstor.api.registry import ALL_ROLES, REGISTRY, api_command, load_commands
    from secstor.db.models import Zone

    load_commands()
    zone_name = f"crash-{uuid.uuid4().hex[:8]}"

    def crash(ctx, _params):
        ctx.db.add(Zone(name=zone_name, created=ctx.now))
        ctx.db.flush()
        raise RuntimeError("connection to db:5432 failed, password hunter2")

    api_command("testCrashCommand", roles=ALL_ROLES, description="test only")(crash)
    yield zone_name
    REGISTRY.pop("testcrashcommand")


def test_internal_error_is_530_without_details_or_state_change(runtime, crashing_command):
    from secstor.api.protocol import handle_api_call
    from secstor.security.signing import signed_params

    keys = json.loads((runtime.config.home / "admin-keys.json").read_text())
    reply = handle_api_call(runtime, signed_params("testCrashCommand", {}, keys["apikey"], keys["secretkey"]))
    assert reply.status == 530
    assert reply.body == {"testcrashcommandresponse": {
        "uuidList": [], "errorcode": 530, "cserrorcode": 4250,
        "errortext": "Internal error executing command testCrashCommand"}}
    listed = handle_api_call(runtime, signed_params("listZones", {"name": crashing_command}, keys["apikey"],
                                                    keys["secretkey"]))
    assert listed.body == {"listzonesresponse": {}}


# ---- envelopes and lists -----------------------------------------------------------------------

def test_json_content_type_and_one_top_level_key_on_success_and_error(server):
    for command, params in [("listZones", {}), ("listZones", {"id": "bad"}), ("createZone", {}),
                            ("noSuchCommand", {})]:
        check_envelope(raw_call(server, command, params))


def test_empty_list_is_an_empty_object(server, admin_cs, unique_name):
    response = raw_call(server, "listZones", {"name": unique_name})
    assert response.status_code == 200
    assert response.json() == {"listzonesresponse": {}}
    assert admin_cs.listZones(name=unique_name) == {}
    assert admin_cs.listZones(name=unique_name, fetch_list=True) == []


@pytest.fixture(scope="module")
def seven_zones(admin_cs):
    prefix = f"paging-{uuid.uuid4().hex[:8]}"
    ids = [admin_cs.createZone(name=f"{prefix}-{i}")["zone"]["id"] for i in range(7)]
    yield prefix, set(ids)
    for zone_id in ids:
        admin_cs.deleteZone(id=zone_id)


def test_lists_carry_count_and_honour_page_and_pagesize(server, seven_zones):
    prefix, ids = seven_zones
    seen: list[str] = []
    for page, expected in [(1, 3), (2, 3), (3, 1)]:
        response = raw_call(server, "listZones", {"keyword": prefix, "page": page, "pagesize": 3})
        inner = check_envelope(response)
        assert set(inner) == {"count", "zone"}  # cs returns [] when any other key is present
        assert inner["count"] == 7
        assert len(inner["zone"]) == expected
        seen += [z["id"] for z in inner["zone"]]
    assert sorted(seen) == sorted(ids)


def test_a_page_past_the_end_keeps_only_the_count(server, seven_zones):
    prefix, _ids = seven_zones
    response = raw_call(server, "listZones", {"keyword": prefix, "page": 4, "pagesize": 3})
    assert response.json() == {"listzonesresponse": {"count": 7}}


@pytest.mark.parametrize("pagesize", [3, None])
def test_cs_fetch_list_collects_every_item_exactly_once(admin_cs, seven_zones, pagesize):
    prefix, ids = seven_zones
    extra = {"pagesize": pagesize} if pagesize else {}
    zones = admin_cs.listZones(keyword=prefix, fetch_list=True, **extra)
    assert sorted(z["id"] for z in zones) == sorted(ids)


def test_bad_paging_values_are_431(server):
    for params, name in [({"page": 0}, "page"), ({"pagesize": 0}, "pagesize"), ({"pagesize": 100000}, "pagesize")]:
        response = raw_call(server, "listZones", params)
        assert response.status_code == 431, params
        check_envelope(response)
