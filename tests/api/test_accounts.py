"""Accounts, users, keys, login sessions and role enforcement through the real API."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from cs import CloudStackApiException

from secstor.api.registry import ADMIN, ALL_ROLES, USER
from tests.support.api import check_envelope, create_api_user, raw_call, served_commands

AUTH_TEXT = "unable to verify user credentials and/or request signature"
LOGIN_FAILED = re.compile(r"^Failed to authenticate user (\S+) in domain \d+; please provide valid credentials$")


def api_error(call, *args, **kwargs) -> tuple[int, dict]:
    with pytest.raises(CloudStackApiException) as err:
        call(*args, **kwargs)
    return err.value.response.status_code, err.value.error


def short_name() -> str:
    return f"acct-{uuid.uuid4().hex[:10]}"


def all_keys(obj) -> set[str]:
    """Every key anywhere in a JSON document."""
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in all_keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in all_keys(v)}
    return set()


# ---- createAccount ---------------------------------------------------------------------------

def test_create_account_answers_cloudstacks_account_with_its_user(admin_cs):
    name = short_name()
    account = admin_cs.createAccount(username=name, password="pw", email=f"{name}@example.org",
                                     firstname="Ada", lastname="Lovelace")["account"]
    assert account["name"] == name  # account defaults to the username
    assert (account["accounttype"], account["roletype"], account["state"]) == (0, "User", "enabled")
    assert account["domain"] == "ROOT" and account["domainid"]
    [user] = account["user"]
    assert (user["username"], user["firstname"], user["lastname"], user["email"]) == (
        name, "Ada", "Lovelace", f"{name}@example.org")
    assert (user["account"], user["accountid"], user["accounttype"]) == (name, account["id"], 0)
    assert "apikey" not in user  # no keys until registerUserKeys
    assert not {"secretkey", "password"} & all_keys(account)


@pytest.mark.parametrize("role_params", [{"accounttype": 1}, {"roletype": "Admin"}, {"roletype": "admin"}])
def test_create_admin_account_by_accounttype_or_roletype(admin_cs, role_params):
    account = admin_cs.createAccount(username=short_name(), password="pw", **role_params)["account"]
    assert (account["accounttype"], account["roletype"]) == (1, "Admin")


def test_account_name_can_differ_from_username(admin_cs):
    username, name = short_name(), short_name()
    account = admin_cs.createAccount(username=username, password="pw", account=name)["account"]
    assert account["name"] == name and account["user"][0]["username"] == username


@pytest.mark.parametrize("params, param_named", [
    ({"accounttype": 2}, "accounttype"),
    ({"roletype": "Superuser"}, "roletype"),
    ({"accounttype": 0, "roletype": "Admin"}, "roletype"),
    ({"domainid": str(uuid.uuid4())}, "domainid"),
])
def test_bad_create_account_input_is_431_and_creates_nothing(admin_cs, params, param_named):
    name = short_name()
    status, error = api_error(admin_cs.createAccount, username=name, password="pw", **params)
    assert status == 431
    assert param_named in error["errortext"]
    assert admin_cs.listAccounts(name=name) == {}


def test_missing_password_is_431(admin_cs):
    status, error = api_error(admin_cs.createAccount, username=short_name())
    assert status == 431
    assert error["errortext"] == "Unable to execute API command createaccount due to missing parameter password"


def test_duplicate_username_or_account_is_431(admin_cs):
    name = short_name()
    admin_cs.createAccount(username=name, password="pw")
    status, error = api_error(admin_cs.createAccount, username=name, password="pw", account=short_name())
    assert status == 431 and name in error["errortext"]
    status, error = api_error(admin_cs.createAccount, username=short_name(), password="pw", account=name)
    assert status == 431 and "already exists" in error["errortext"]


def test_create_account_in_the_root_domain_by_id(admin_cs):
    root_id = admin_cs.listAccounts(name="admin")["account"][0]["domainid"]
    account = admin_cs.createAccount(username=short_name(), password="pw", domainid=root_id)["account"]
    assert account["domainid"] == root_id


# ---- listAccounts / listUsers --------------------------------------------------------------------

def test_admin_lists_accounts_with_filters_and_paging(admin_cs):
    prefix = short_name()
    made = [admin_cs.createAccount(username=f"{prefix}-{i}", password="pw", accounttype=i % 2)["account"]
            for i in range(3)]
    assert admin_cs.listAccounts(id=made[1]["id"])["account"][0]["name"] == f"{prefix}-1"
    assert admin_cs.listAccounts(name=f"{prefix}-2")["account"][0]["id"] == made[2]["id"]
    by_keyword = admin_cs.listAccounts(keyword=prefix)
    assert by_keyword["count"] == 3
    admins = admin_cs.listAccounts(keyword=prefix, accounttype=1)["account"]
    assert [a["name"] for a in admins] == [f"{prefix}-1"]
    assert admin_cs.listAccounts(keyword=prefix, state="disabled") == {}
    assert admin_cs.listAccounts(keyword="%") == {}  # a literal, not a LIKE wildcard
    page = admin_cs.listAccounts(keyword=prefix, page=2, pagesize=2)
    assert page["count"] == 3 and [a["id"] for a in page["account"]] == [made[2]["id"]]


def test_a_user_lists_only_its_own_account_and_itself(regular_user, admin_cs):
    mine = regular_user.cs.listAccounts()
    assert mine["count"] == 1 and mine["account"][0]["id"] == regular_user.account["id"]
    admin_account = admin_cs.listAccounts(name="admin")["account"][0]
    assert regular_user.cs.listAccounts(id=admin_account["id"]) == {}
    users = regular_user.cs.listUsers()
    assert users["count"] == 1 and users["user"][0]["id"] == regular_user.user["id"]
    assert users["user"][0]["apikey"] == regular_user.apikey


def test_admin_lists_all_users_and_no_secret_is_ever_listed(admin_cs, regular_user):
    users = admin_cs.listUsers(fetch_list=True)
    names = {u["username"] for u in users}
    assert {"admin", regular_user.user["username"]} <= names
    assert "secretkey" not in all_keys(users)
    assert "secretkey" not in all_keys(admin_cs.listAccounts(fetch_list=True))
    found = admin_cs.listUsers(username=regular_user.user["username"])["user"]
    assert [u["id"] for u in found] == [regular_user.user["id"]]


# ---- keys ------------------------------------------------------------------------------------------

def test_register_user_keys_returns_the_secret_once_and_stores_it_encrypted(server, admin_cs, runtime):
    from sqlalchemy import select

    from secstor.db.models import User

    member = create_api_user(server, admin_cs)
    assert member.cs.listZones(name="zone1")["count"] == 1  # the new keys work
    with runtime.session() as s:
        row = s.scalars(select(User).where(User.uuid == member.user["id"])).one()
        assert row.api_key == member.apikey
        assert member.secretkey not in row.secret_key_enc
        assert runtime.secrets.decrypt(row.secret_key_enc) == member.secretkey
    assert admin_cs.listUsers(id=member.user["id"])["user"][0]["apikey"] == member.apikey


def test_new_keys_replace_the_old_ones_at_once(server, admin_cs):
    member = create_api_user(server, admin_cs)
    fresh = member.cs.registerUserKeys(id=member.user["id"])["userkeys"]  # a User may renew its own
    assert fresh["apikey"] != member.apikey
    status, error = api_error(member.cs.listZones)
    assert (status, error["errortext"]) == (401, AUTH_TEXT)
    assert server.cs(key=fresh["apikey"], secret=fresh["secretkey"]).listZones(name="zone1")["count"] == 1


def test_a_user_cannot_register_keys_for_someone_else(regular_user, admin_cs, server):
    other = create_api_user(server, admin_cs)
    status, _error = api_error(regular_user.cs.registerUserKeys, id=other.user["id"])
    assert status == 531
    assert other.cs.listZones(name="zone1")["count"] == 1  # the other user's keys still work


def test_get_user_keys_does_not_exist(admin_cs, regular_user):
    status, _error = api_error(admin_cs.getUserKeys, id=regular_user.user["id"])
    assert status == 432


# ---- updateUser ------------------------------------------------------------------------------------

def login(server, username: str, password: str, *, method: str = "POST") -> httpx.Response:
    form = {"command": "login", "username": username, "password": password, "response": "json"}
    if method == "POST":
        return httpx.post(server.api_url, data=form)
    return httpx.get(server.api_url, params=form)


def test_the_first_admin_sets_its_own_password_and_can_then_log_in(server, admin_cs):
    """The admin made on first start has API keys but no password: nobody can log in as it
    until it sets one with its keys."""
    admin_user = admin_cs.listUsers(username="admin")["user"][0]
    password = uuid.uuid4().hex
    assert login(server, "admin", password).status_code == 531
    admin_cs.updateUser(id=admin_user["id"], password=password)
    assert login(server, "admin", password).status_code == 200


def test_an_admin_updates_any_user(admin_cs, regular_user):
    user = admin_cs.updateUser(id=regular_user.user["id"], firstname="Grace", email="grace@example.org")["user"]
    assert (user["firstname"], user["email"]) == ("Grace", "grace@example.org")


def test_a_user_changes_its_own_password_only_with_the_current_one(server, admin_cs):
    member = create_api_user(server, admin_cs)
    user_id = member.user["id"]
    status, error = api_error(member.cs.updateUser, id=user_id, password="new-pw")
    assert status == 431 and "currentpassword" in error["errortext"]
    status, error = api_error(member.cs.updateUser, id=user_id, password="new-pw", currentpassword="wrong")
    assert status == 431 and "currentpassword" in error["errortext"]
    assert login(server, member.user["username"], member.password).status_code == 200  # unchanged
    member.cs.updateUser(id=user_id, password="new-pw", currentpassword=member.password)
    assert login(server, member.user["username"], "new-pw").status_code == 200
    assert login(server, member.user["username"], member.password).status_code == 531


def test_a_user_cannot_update_someone_else(regular_user, admin_cs):
    admin_user = admin_cs.listUsers(username="admin")["user"][0]
    status, _error = api_error(regular_user.cs.updateUser, id=admin_user["id"], email="evil@example.org")
    assert status == 531
    assert admin_cs.listUsers(id=admin_user["id"])["user"][0].get("email") != "evil@example.org"


# ---- deleteAccount ------------------------------------------------------------------------------------

def test_deleting_an_account_revokes_its_keys_and_keeps_its_name_reserved(server, admin_cs):
    member = create_api_user(server, admin_cs)
    assert admin_cs.deleteAccount(id=member.account["id"]) == {"success": True}
    assert admin_cs.listAccounts(id=member.account["id"]) == {}
    assert admin_cs.listUsers(id=member.user["id"]) == {}
    status, _error = api_error(member.cs.listZones)
    assert status == 401
    assert login(server, member.user["username"], member.password).status_code == 531
    status, error = api_error(admin_cs.createAccount, username=short_name(), password="pw",
                              account=member.account["name"])
    assert status == 431 and member.account["name"] in error["errortext"]


def test_an_admin_cannot_delete_its_own_account(server, admin_cs):
    other_admin = create_api_user(server, admin_cs, accounttype=1)
    status, error = api_error(other_admin.cs.deleteAccount, id=other_admin.account["id"])
    assert status == 431 and "own account" in error["errortext"]
    assert admin_cs.listAccounts(id=other_admin.account["id"])["count"] == 1


def test_deleting_an_unknown_account_is_431(admin_cs):
    status, error = api_error(admin_cs.deleteAccount, id=str(uuid.uuid4()))
    assert status == 431 and "id" in error["errortext"]


# ---- login and sessions ---------------------------------------------------------------------------------

def test_login_answers_cloudstacks_loginresponse_and_sets_the_cookies(server, regular_user):
    response = login(server, regular_user.user["username"], regular_user.password)
    assert response.status_code == 200
    body = check_envelope(response)
    assert body["username"] == regular_user.user["username"]
    assert body["userid"] == regular_user.user["id"]
    assert body["account"] == regular_user.account["name"]
    assert body["domainid"] == regular_user.account["domainid"]
    assert (body["type"], body["registered"], body["timeout"]) == ("0", "false", 1800)
    assert response.cookies["sessionkey"] == body["sessionkey"]
    set_cookies = {h.split("=", 1)[0]: h.lower() for h in response.headers.get_list("set-cookie")}
    assert "httponly" in set_cookies["JSESSIONID"]
    assert "httponly" not in set_cookies["sessionkey"]  # the web UI reads it


def test_a_login_session_replaces_signing_until_logout(server, regular_user):
    with httpx.Client() as browser:
        response = browser.post(server.api_url, data={"command": "login", "username": regular_user.user["username"],
                                                       "password": regular_user.password, "response": "json"})
        key = response.json()["loginresponse"]["sessionkey"]
        listed = browser.get(server.api_url, params={"command": "listAccounts", "sessionkey": key,
                                                      "response": "json"})
        assert listed.status_code == 200
        assert [a["id"] for a in listed.json()["listaccountsresponse"]["account"]] == [regular_user.account["id"]]
        posted = browser.post(server.api_url, data={"command": "listZones", "sessionkey": key, "name": "zone1"})
        assert posted.json()["listzonesresponse"]["count"] == 1

        # The key alone, without the JSESSIONID cookie, is not enough.
        bare = httpx.get(server.api_url, params={"command": "listAccounts", "sessionkey": key})
        assert bare.status_code == 401
        assert bare.json()["listaccountsresponse"]["errortext"] == AUTH_TEXT
        forged = httpx.get(server.api_url, params={"command": "listAccounts", "sessionkey": key},
                           cookies={"JSESSIONID": "forged", "sessionkey": key})
        assert forged.status_code == 401

        out = browser.post(server.api_url, data={"command": "logout", "sessionkey": key, "response": "json"})
        assert out.status_code == 200
        assert out.json() == {"logoutresponse": {"description": "success"}}
    # Logging out ends the session on the server, not just in this browser's cookie jar.
    again = httpx.get(server.api_url, params={"command": "listAccounts", "sessionkey": key},
                      cookies={"JSESSIONID": response.cookies["JSESSIONID"]})
    assert again.status_code == 401


def test_login_by_get_with_the_root_domain(server, regular_user):
    form = {"command": "login", "username": regular_user.user["username"], "password": regular_user.password,
            "domain": "/", "response": "json"}
    assert httpx.get(server.api_url, params=form).status_code == 200
    form["domainId"] = regular_user.account["domainid"]
    assert httpx.get(server.api_url, params=form).status_code == 200


@pytest.mark.parametrize("username, password, domain", [
    ("known", "wrong-password", "/"),
    ("no-such-user", "whatever", "/"),
    ("known", "right", "/no-such-domain/"),
])
def test_failed_login_is_531_with_cloudstacks_text(server, regular_user, username, password, domain):
    username = regular_user.user["username"] if username == "known" else username
    password = regular_user.password if password == "right" else password
    response = httpx.post(server.api_url, data={"command": "login", "username": username, "password": password,
                                                 "domain": domain, "response": "json"})
    body = check_envelope(response)
    assert response.status_code == 531
    assert LOGIN_FAILED.match(body["errortext"]).group(1) == username
    assert "set-cookie" not in response.headers


def test_sessions_expire_after_the_timeout_without_use_and_slide_with_use(runtime, regular_user):
    """In-process, on the shared database, with a clock the test moves."""
    from secstor.api.protocol import handle_api_call
    from secstor.runtime import Runtime

    moment = [datetime.now(timezone.utc)]
    rt = Runtime(runtime.config, engine=runtime.engine, secrets=runtime.secrets, clock=lambda: moment[0])
    reply = handle_api_call(rt, {"command": "login", "username": regular_user.user["username"],
                                 "password": regular_user.password})
    key = reply.body["loginresponse"]["sessionkey"]
    timeout = reply.body["loginresponse"]["timeout"]
    cookies = {"JSESSIONID": reply.set_cookies["JSESSIONID"]}

    def status_after(seconds: int) -> int:
        moment[0] += timedelta(seconds=seconds)
        return handle_api_call(rt, {"command": "listZones", "sessionkey": key}, cookies=cookies).status

    assert status_after(timeout - 60) == 200
    assert status_after(timeout - 60) == 200  # past the first deadline: the use above extended it
    assert status_after(timeout + 1) == 401


# ---- roles on every command --------------------------------------------------------------------------

def test_every_admin_only_command_is_unknown_to_a_user(server, regular_user):
    """CloudStack's API checker hides what a role may not call: 432, before any parameter check."""
    admin_only = [c for c in served_commands().values() if USER not in c.roles and c.needs_auth]
    assert admin_only
    for cmd in admin_only:
        response = raw_call(server, cmd.name, key=regular_user.apikey, secret=regular_user.secretkey)
        assert response.status_code == 432, cmd.name
        check_envelope(response)
        assert response.json()["errorresponse"]["errorcode"] == 432, cmd.name


def test_stores_settings_and_accounts_admin_are_admin_only():
    commands = served_commands()
    for name in ("listImageStores", "addImageStore", "updateImageStore", "deleteImageStore", "addImageStoreS3",
                 "listConfigurations", "updateConfiguration", "resetConfiguration", "createAccount",
                 "deleteAccount", "createZone", "deleteZone"):
        if name.lower() in commands:  # store commands live in another module of the same release
            assert commands[name.lower()].roles == frozenset({ADMIN}), name


# Values for required parameters of list commands that Users may call: the widest a User may ask
# for ("all" is for admins only, as in CloudStack).
REQUIRED_LIST_ARGS = {"templatefilter": "executable", "isofilter": "executable"}


def test_every_list_command_shows_a_user_only_its_own_objects_and_public_ones(server, regular_user):
    own_account = regular_user.account
    # Templates and ISOs another account shared with this user (launch permission) are
    # legitimately visible; other tests of the session may have shared some.
    shared = set()
    for command, filter_name, obj in (("listTemplates", "templatefilter", "template"), ("listIsos", "isofilter", "iso")):
        answer = raw_call(server, command, {filter_name: "shared"}, key=regular_user.apikey,
                          secret=regular_user.secretkey)
        shared |= {item["id"] for item in check_envelope(answer).get(obj, [])}
    for cmd in served_commands().values():
        if not cmd.is_list or cmd.roles != ALL_ROLES:
            continue
        unknown = [p.name for p in cmd.params if p.required and p.name not in REQUIRED_LIST_ARGS]
        assert not unknown, f"give {cmd.name}'s required {unknown} a value in REQUIRED_LIST_ARGS"
        args = {p.name: REQUIRED_LIST_ARGS[p.name] for p in cmd.params if p.required}
        response = raw_call(server, cmd.name, args, key=regular_user.apikey, secret=regular_user.secretkey)
        assert response.status_code == 200, (cmd.name, response.text)
        inner = check_envelope(response)
        for item in inner.get(cmd.response_object, []):
            if item.get("ispublic") is True or (cmd.response_object in ("template", "iso") and item["id"] in shared):
                continue
            if cmd.response_object == "account":
                assert item["id"] == own_account["id"], cmd.name
            if "accountid" in item:
                assert item["accountid"] == own_account["id"], (cmd.name, item)
            if isinstance(item.get("account"), str):
                assert item["account"] == own_account["name"], (cmd.name, item)
