"""One API call from raw parameters to a CloudStack envelope: authenticate, check the role,
parse parameters, run the handler, and map every error to CloudStack's codes.

Framework-free on purpose (plain dicts in, status + dict out) so it is easy to test and to
reuse from the upload and extract endpoints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from secstor.api.context import CallContext, Caller
from secstor.api.params import parse_params
from secstor.api.registry import REGISTRY, Command, load_commands
from secstor.api.results import result_body
from secstor.db.engine import READ_ONLY
from secstor.db.models import ApiSession, User
from secstor.domain.errors import InvalidParameter, SecstorError
from secstor.runtime import Runtime
from secstor.services.accounts import session_cookie_matches
from secstor.security import signing

log = logging.getLogger("secstor.api")

AUTH_FAILED = "unable to verify user credentials and/or request signature"
UNKNOWN_COMMAND = "The given command does not exist or it is not available for user"


@dataclass
class ApiReply:
    status: int
    body: dict[str, Any]
    set_cookies: dict[str, str] = field(default_factory=dict)
    clear_cookies: list[str] = field(default_factory=list)


def error_body(key: str, code: int, text: str, cserrorcode: int | None = None) -> dict[str, Any]:
    inner: dict[str, Any] = {"uuidList": [], "errorcode": code}
    if cserrorcode is not None:
        inner["cserrorcode"] = cserrorcode
    inner["errortext"] = text
    return {key: inner}


class AuthError(Exception):
    pass


def caller_for_user(user: User) -> Caller:
    acct = user.account
    return Caller(
        user_id=user.id, user_uuid=user.uuid, username=user.username, account_id=acct.id, account_uuid=acct.uuid,
        account_name=acct.name, role=acct.role, domain_id=acct.domain_id, domain_uuid=acct.domain.uuid,
        domain_name=acct.domain.name,
    )


def _live_user(session, user: User | None) -> User:
    if user is None or user.removed is not None or user.state != "enabled":
        raise AuthError
    if user.account.removed is not None or user.account.state != "enabled":
        raise AuthError
    return user


def authenticate(runtime: Runtime, session, raw: dict[str, str], lowered: dict[str, str],
                 cookies: dict[str, str], headers: dict[str, str]) -> Caller:
    """Signed request (apiKey + signature) or a login session (sessionkey + its cookie)."""
    now = runtime.now()
    api_key = lowered.get("apikey")
    if api_key:
        signature = lowered.get("signature")
        if not signature:
            raise AuthError
        version = lowered.get("signatureversion")
        expires = lowered.get("expires")
        if version == "3" or expires:
            if version != "3" or not expires:
                raise AuthError
            try:
                when = signing.parse_expires(expires)
            except ValueError:
                raise AuthError from None
            if when <= now:
                raise AuthError
            if when > now + timedelta(seconds=int(runtime.settings.get("api.signature.max.expiry"))):
                raise AuthError
        elif runtime.settings.get("api.signature.require.expires"):
            raise AuthError
        user = session.scalars(select(User).where(User.api_key == api_key)).first()
        user = _live_user(session, user)
        secret = runtime.secrets.decrypt(user.secret_key_enc) if user.secret_key_enc else None
        if not secret:
            raise AuthError
        signed = {k: v for k, v in raw.items() if k.lower() != "signature"}
        if signing.verify(signed, secret, signature):
            return caller_for_user(user)
        # Marvin sorts lower-cased keys; accept that canonical form too.
        if signing.verify({k.lower(): v for k, v in signed.items()}, secret, signature):
            return caller_for_user(user)
        raise AuthError

    session_key = lowered.get("sessionkey") or headers.get("sessionkey")
    if session_key:
        # As in CloudStack, the key comes as a parameter (or header) and must belong to the
        # session named by the httponly JSESSIONID cookie: a cross-site page can make the browser
        # send the cookie but cannot read the key, and a leaked key is useless without the cookie.
        row = session.scalars(select(ApiSession).where(ApiSession.session_key == session_key)).first()
        if row is None or row.expires <= now or not session_cookie_matches(row, cookies.get("JSESSIONID")):
            raise AuthError
        user = _live_user(session, session.get(User, row.user_id))
        # Sliding expiry: every use extends the session.
        row.expires = now + timedelta(seconds=int(runtime.settings.get("api.session.timeout")))
        return replace(caller_for_user(user), session_id=row.id)
    raise AuthError


def _begin_snapshot_read(session) -> None:
    """Run a list command in a read-only transaction that sees one snapshot of the database.

    Lists read in several queries (objects, then their copies, zones ...); under PostgreSQL's
    READ COMMITTED each query could see a different moment. On SQLite the transaction is
    deferred, so lists never wait for, nor block, a writer. Authentication wrote (session
    expiry) in the transaction before; it is committed first.
    """
    session.commit()
    if session.get_bind().dialect.name == "sqlite":
        session.connection(execution_options={READ_ONLY: True})
    else:
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def handle_api_call(runtime: Runtime, raw: dict[str, str], *, cookies: dict[str, str] | None = None,
                    headers: dict[str, str] | None = None, client: str = "-") -> ApiReply:
    load_commands()
    cookies = cookies or {}
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    lowered = {k.lower(): v for k, v in raw.items()}
    name = lowered.get("command", "")
    cmd: Command | None = REGISTRY.get(name.lower())
    if cmd is None:
        return ApiReply(432, error_body("errorresponse", 432, UNKNOWN_COMMAND, 9999))
    if lowered.get("response", "json").lower() != "json":
        return ApiReply(431, error_body(cmd.key, 431, "Only response=json is supported", 4350))

    try:
        with runtime.session() as session:
            caller: Caller | None = None
            if cmd.needs_auth:
                try:
                    caller = authenticate(runtime, session, raw, lowered, cookies, headers)
                except AuthError:
                    log.info("auth failed command=%s client=%s", cmd.name, client)
                    return ApiReply(401, error_body(cmd.key, 401, AUTH_FAILED))
                if caller.role not in cmd.roles:
                    # CloudStack's API checker hides commands a role may not call.
                    return ApiReply(432, error_body("errorresponse", 432, UNKNOWN_COMMAND, 9999))
            params = parse_params(cmd.name, cmd.params, lowered)
            if caller is not None and not caller.is_admin:
                # Admin-only parameters are ignored for other roles, as CloudStack does.
                for p in cmd.params:
                    if p.admin_only:
                        params.pop(p.name, None)
            if cmd.is_list:
                _begin_snapshot_read(session)
            ctx = CallContext(runtime, session, caller, cmd)
            result = cmd.handler(ctx, params)
            body = result_body(result)
            reply = ApiReply(200, {cmd.key: body})
            extra = getattr(ctx, "reply_cookies", None)
            if extra:
                reply.set_cookies.update(extra)
            if getattr(ctx, "reply_clear_cookies", None):
                reply.clear_cookies.extend(ctx.reply_clear_cookies)
            log.debug("api command=%s user=%s ok", cmd.name, caller.username if caller else "-")
            return reply
    except SecstorError as exc:
        log.info("api command=%s failed code=%s: %s", cmd.name, exc.errorcode, exc.message)
        return ApiReply(exc.errorcode, error_body(cmd.key, exc.errorcode, exc.message, exc.cserrorcode))
    except Exception:  # never a traceback to the client
        log.exception("api command=%s internal error", cmd.name)
        return ApiReply(530, error_body(cmd.key, 530, f"Internal error executing command {cmd.name}", 4250))


__all__ = ["ApiReply", "handle_api_call", "error_body", "InvalidParameter"]
