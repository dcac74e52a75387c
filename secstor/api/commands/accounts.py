"""Accounts, users, API keys and browser login: createAccount, listAccounts, deleteAccount,
listUsers, updateUser, registerUserKeys, login, logout.

secstor has one domain (ROOT) and two roles: Admin (CloudStack's root admin, account type 1)
and User (type 0). A secret key is shown once, by registerUserKeys; CloudStack's getUserKeys
is deliberately not provided, so a secret never leaves the server a second time.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import or_, select

from secstor.api.context import CallContext
from secstor.api.format import cs_date, drop_none
from secstor.api.params import Param, PType
from secstor.api.registry import ADMIN_ONLY, ALL_ROLES, api_command
from secstor.api.results import ListResult, ObjectResult, RawResult, SuccessResult
from secstor.db.models import Account, Domain, User
from secstor.domain.errors import InvalidParameter, PermissionDenied
from secstor.security.passwords import check_password
from secstor.services import account_cleanup
from secstor.services import accounts as svc

log = logging.getLogger("secstor.accounts")

ACCOUNT_TYPES = {"User": 0, "Admin": 1}
ROLE_BY_ACCOUNT_TYPE = {v: k for k, v in ACCOUNT_TYPES.items()}
# The names of CloudStack's default roles of these types.
ROLE_NAMES = {"Admin": "Root Admin", "User": "User"}


def user_response(user: User) -> dict[str, Any]:
    """CloudStack's UserResponse. The API key is shown; the secret key never is."""
    account = user.account
    return drop_none({
        "id": user.uuid,
        "username": user.username,
        "firstname": user.firstname,
        "lastname": user.lastname,
        "email": user.email,
        "created": cs_date(user.created),
        "state": user.state,
        "account": account.name,
        "accountid": account.uuid,
        "accounttype": ACCOUNT_TYPES[account.role],
        "roletype": account.role,
        "rolename": ROLE_NAMES[account.role],
        "domainid": account.domain.uuid,
        "domain": account.domain.name,
        "apikey": user.api_key,
        "usersource": "native",
    })


def account_response(account: Account) -> dict[str, Any]:
    """CloudStack's AccountResponse, with its live users."""
    return drop_none({
        "id": account.uuid,
        "name": account.name,
        "accounttype": ACCOUNT_TYPES[account.role],
        "roletype": account.role,
        "rolename": ROLE_NAMES[account.role],
        "domainid": account.domain.uuid,
        "domain": account.domain.name,
        "email": account.email,
        "state": account.state,
        "created": cs_date(account.created),
        "user": [user_response(u) for u in sorted(account.users, key=lambda u: u.id) if u.removed is None],
    })


def _role_from_params(p: dict[str, Any]) -> str:
    """accounttype (CloudStack's 0/1) or roletype (Admin/User); User when neither is given."""
    role_by_type = None
    if "accounttype" in p:
        role_by_type = ROLE_BY_ACCOUNT_TYPE.get(p["accounttype"])
        if role_by_type is None:
            raise InvalidParameter(f"Invalid accounttype {p['accounttype']}: secstor has account types "
                                   "0 (User) and 1 (Admin)", "accounttype")
    role_by_name = None
    if "roletype" in p:
        role_by_name = {r.lower(): r for r in ACCOUNT_TYPES}.get(p["roletype"].strip().lower())
        if role_by_name is None:
            raise InvalidParameter(f"Invalid roletype {p['roletype']}: Admin or User expected", "roletype")
    if role_by_type and role_by_name and role_by_type != role_by_name:
        raise InvalidParameter(f"accounttype {p['accounttype']} does not match roletype {p['roletype']}",
                               "roletype")
    return role_by_type or role_by_name or "User"


def _check_root_domain(ctx: CallContext, domain_uuid: str | None) -> None:
    if domain_uuid is None:
        return
    root = svc.root_domain(ctx.db, ctx.runtime)
    if domain_uuid != root.uuid:
        raise InvalidParameter(f"Invalid domainid {domain_uuid}: secstor has only the ROOT domain", "domainid")


def _nonblank(p: dict[str, Any], name: str) -> str:
    value = p[name].strip()
    if not value:
        raise InvalidParameter(f"{name} cannot be blank", name)
    return value


@api_command(
    "createAccount",
    params=[
        Param("username", required=True, description="Unique username"),
        Param("password", required=True, description="Clear text password (stored as a scrypt hash)"),
        Param("email", description="email"),
        Param("firstname", description="firstname"),
        Param("lastname", description="lastname"),
        Param("account", description="Name of the account; defaults to the username"),
        Param("accounttype", PType.SHORT, description="Type of the account: 0 for User, 1 for Admin"),
        Param("roletype", description="secstor: the role, Admin or User, instead of accounttype"),
        Param("domainid", PType.UUID, description="Creates the account under this domain; only ROOT exists"),
    ],
    roles=ADMIN_ONLY,
    description="Creates an account with one user.",
    response_object="account",
)
def create_account(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    username = _nonblank(p, "username")
    name = _nonblank(p, "account") if "account" in p else username
    role = _role_from_params(p)
    _check_root_domain(ctx, p.get("domainid"))
    account = svc.create_account(ctx.db, ctx.runtime, name=name, role=role, username=username,
                                 password=p["password"], email=p.get("email"), firstname=p.get("firstname"),
                                 lastname=p.get("lastname"))
    ctx.db.refresh(account)
    log.info("account created id=%s name=%s role=%s by user=%s", account.uuid, name, role, ctx.caller.user_uuid)
    return ObjectResult("account", account_response(account))


@api_command(
    "listAccounts",
    params=[
        Param("id", PType.UUID, description="List account by account ID"),
        Param("name", description="List account by account name"),
        Param("accounttype", PType.SHORT, description="List accounts by account type: 0 User, 1 Admin"),
        Param("state", description="List accounts by state: enabled or disabled"),
        Param("domainid", PType.UUID, description="List accounts of this domain (only ROOT exists)"),
    ],
    roles=ALL_ROLES,
    description="Lists accounts; a User sees only its own account.",
    is_list=True,
    response_object="account",
)
def list_accounts(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    _check_root_domain(ctx, p.get("domainid"))
    stmt = select(Account).where(Account.removed.is_(None)).order_by(Account.id)
    if not ctx.caller.is_admin:
        stmt = stmt.where(Account.id == ctx.caller.account_id)
    if "id" in p:
        stmt = stmt.where(Account.uuid == p["id"])
    if "name" in p:
        stmt = stmt.where(Account.name == p["name"])
    if "accounttype" in p:
        stmt = stmt.where(Account.role == ROLE_BY_ACCOUNT_TYPE.get(p["accounttype"], "-"))
    if "state" in p:
        stmt = stmt.where(Account.state == p["state"].lower())
    if "keyword" in p:
        stmt = stmt.where(Account.name.contains(p["keyword"], autoescape=True))
    rows, total = ctx.page(p, stmt)
    return ListResult("account", [account_response(a) for a in rows], total)


@api_command(
    "deleteAccount",
    params=[Param("id", PType.UUID, required=True, description="Account id")],
    roles=ADMIN_ONLY,
    description="Deletes an account and its users; their API keys and sessions stop working at once. "
                "Refused for the caller's own account, so at least one Admin always remains. Answers at once "
                "(async in CloudStack); what the account owned (instances, snapshots, volumes, templates and "
                "ISOs) is removed by a clean-up job that listAsyncJobs shows (cmd deleteAccount). "
                "The account's name stays reserved.",
)
def delete_account(ctx: CallContext, p: dict[str, Any]) -> SuccessResult:
    account = ctx.get_by_uuid(Account, p["id"], "id", what="account")
    # Only an Admin gets here and never for its own account, so an Admin account always remains.
    if account.id == ctx.caller.account_id:
        raise InvalidParameter("You cannot delete your own account", "id")
    svc.remove_account(ctx.db, ctx.runtime, account)
    ctx.submit_job(account_cleanup.CLEANUP_HANDLER, {"account_id": account.id, "account_uuid": account.uuid},
                   instance_type="Account", instance_id=account.uuid)
    log.info("account deleted id=%s name=%s by user=%s", account.uuid, account.name, ctx.caller.user_uuid)
    return SuccessResult()


@api_command(
    "listUsers",
    params=[
        Param("id", PType.UUID, description="List user by ID"),
        Param("username", description="List user by the username"),
        Param("account", description="List users of the account with this name"),
        Param("accounttype", PType.SHORT, description="List users by account type: 0 User, 1 Admin"),
        Param("state", description="List users by state: enabled or disabled"),
        Param("domainid", PType.UUID, description="List users of this domain (only ROOT exists)"),
    ],
    roles=ALL_ROLES,
    description="Lists users; a User sees only itself. Secret keys are never listed.",
    is_list=True,
    response_object="user",
)
def list_users(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    _check_root_domain(ctx, p.get("domainid"))
    stmt = select(User).join(User.account).where(User.removed.is_(None)).order_by(User.id)
    if not ctx.caller.is_admin:
        stmt = stmt.where(User.id == ctx.caller.user_id)
    if "id" in p:
        stmt = stmt.where(User.uuid == p["id"])
    if "username" in p:
        stmt = stmt.where(User.username == p["username"])
    if "account" in p:
        stmt = stmt.where(Account.name == p["account"])
    if "accounttype" in p:
        stmt = stmt.where(Account.role == ROLE_BY_ACCOUNT_TYPE.get(p["accounttype"], "-"))
    if "state" in p:
        stmt = stmt.where(User.state == p["state"].lower())
    if "keyword" in p:
        kw = p["keyword"]
        stmt = stmt.where(or_(*(column.contains(kw, autoescape=True)
                                for column in (User.username, User.firstname, User.lastname, User.email))))
    rows, total = ctx.page(p, stmt)
    return ListResult("user", [user_response(u) for u in rows], total)


def _target_user(ctx: CallContext, user_uuid: str) -> User:
    """The user an id names; a User may only name itself (531, as CloudStack's access check)."""
    user = ctx.get_by_uuid(User, user_uuid, "id", what="user")
    if not ctx.caller.is_admin and user.id != ctx.caller.user_id:
        raise PermissionDenied(f"Account {ctx.caller.account_name} does not have permission to operate on "
                               f"user {user_uuid}")
    return user


@api_command(
    "updateUser",
    params=[
        Param("id", PType.UUID, required=True, description="User uuid"),
        Param("password", description="Clear text password for the user; lets the user log in"),
        Param("currentpassword", description="The current password; required when a User changes its own "
                                             "password"),
        Param("email", description="email"),
        Param("firstname", description="First name"),
        Param("lastname", description="Last name"),
    ],
    roles=ALL_ROLES,
    description="Updates a user: an Admin may update anyone (including setting its own first password), "
                "a User only itself.",
    response_object="user",
)
def update_user(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    user = _target_user(ctx, p["id"])
    if "password" in p:
        if not ctx.caller.is_admin and user.password_hash is not None:
            if "currentpassword" not in p:
                raise InvalidParameter("The current password (currentpassword) is required to change the password",
                                       "currentpassword")
            if not check_password(p["currentpassword"], user.password_hash):
                raise InvalidParameter("The current password (currentpassword) is incorrect", "currentpassword")
        svc.set_password(user, p["password"])
        log.info("password set for user=%s by user=%s", user.uuid, ctx.caller.user_uuid)
    for field in ("email", "firstname", "lastname"):
        if field in p:
            setattr(user, field, p[field])
    return ObjectResult("user", user_response(user))


@api_command(
    "registerUserKeys",
    params=[Param("id", PType.UUID, required=True, description="User id")],
    roles=ALL_ROLES,
    description="Generates a new API key and secret key for a user; the previous pair stops working. This "
                "answer is the only time the secret key is shown (getUserKeys does not exist in secstor).",
    response_object="userkeys",
)
def register_user_keys(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    user = _target_user(ctx, p["id"])
    api_key, secret = svc.generate_keys(ctx.runtime, user)
    log.info("API keys registered for user=%s by user=%s", user.uuid, ctx.caller.user_uuid)
    return ObjectResult("userkeys", {"apikey": api_key, "secretkey": secret})


def _login_domain(ctx: CallContext, p: dict[str, Any]) -> Domain | None:
    """The domain a login names by path (domain) or id (domainId); only ROOT exists."""
    root = svc.root_domain(ctx.db, ctx.runtime)
    path = p.get("domain", "/").strip()
    if path.strip("/").upper() not in ("", "ROOT"):
        return None
    if "domainid" in p and p["domainid"].strip() not in (root.uuid, str(root.id)):
        return None
    return root


@api_command(
    "login",
    params=[
        Param("username", required=True, description="Username"),
        Param("password", required=True, description="Clear text password"),
        Param("domain", description="Path of the domain the user belongs to: / (ROOT, the only one)"),
        Param("domainid", description="Id of the domain the user belongs to (ROOT, the only one)"),
    ],
    roles=ALL_ROLES,
    needs_auth=False,
    description="Logs a user in with a password and starts a session: later calls pass the returned "
                "sessionkey and send the JSESSIONID cookie instead of signing.",
    response_fields=(
        ("username", "Username", "string"), ("userid", "User ID", "string"),
        ("domainid", "Domain ID that the user belongs to", "string"),
        ("timeout", "the time period before the session has expired", "integer"),
        ("account", "the account name the user belongs to", "string"),
        ("firstname", "first name of the user", "string"), ("lastname", "last name of the user", "string"),
        ("type", "the account type (0 User, 1 Admin)", "string"), ("registered", "Is user registered", "string"),
        ("sessionkey", "Session key that can be passed in subsequent Query command calls", "string"),
    ),
)
def login(ctx: CallContext, p: dict[str, Any]) -> RawResult:
    domain = _login_domain(ctx, p)
    user = svc.authenticate_password(ctx.db, p["username"], p["password"]) if domain else None
    if user is None:
        domain_id = domain.id if domain else svc.root_domain(ctx.db, ctx.runtime).id
        raise PermissionDenied(f"Failed to authenticate user {p['username']} in domain {domain_id}; "
                               "please provide valid credentials")
    session_key, cookie = svc.open_session(ctx.db, ctx.runtime, user)
    ctx.reply_cookies = {"sessionkey": session_key, "JSESSIONID": cookie}
    log.info("login user=%s", user.uuid)
    account = user.account
    return RawResult(drop_none({
        "username": user.username,
        "userid": user.uuid,
        "domainid": account.domain.uuid,
        "timeout": int(ctx.runtime.settings.get("api.session.timeout")),
        "account": account.name,
        "firstname": user.firstname,
        "lastname": user.lastname,
        "type": str(ACCOUNT_TYPES[account.role]),
        "registered": "false",
        "sessionkey": session_key,
    }))


@api_command(
    "logout",
    roles=ALL_ROLES,
    description="Ends the caller's login session; its session key stops working at once.",
    response_fields=(("description", "success if the session ended", "string"),),
)
def logout(ctx: CallContext, p: dict[str, Any]) -> RawResult:
    if ctx.caller.session_id is not None:
        svc.end_session(ctx.db, ctx.caller.session_id)
    ctx.reply_clear_cookies = ["sessionkey", "JSESSIONID"]
    return RawResult({"description": "success"})
