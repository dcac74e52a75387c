"""Accounts, users, API keys, passwords and login sessions."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from secstor.db.models import Account, ApiSession, Domain, User
from secstor.domain.errors import InvalidParameter
from secstor.security.passwords import check_password, hash_password

if TYPE_CHECKING:
    from secstor.runtime import Runtime

ROOT_DOMAIN = "ROOT"
ROLES = ("Admin", "User")


def root_domain(session: Session, runtime: "Runtime") -> Domain:
    domain = session.scalars(select(Domain).where(Domain.name == ROOT_DOMAIN)).first()
    if domain is None:
        domain = Domain(name=ROOT_DOMAIN, path="/", created=runtime.now())
        session.add(domain)
        session.flush()
    return domain


def create_account(session: Session, runtime: "Runtime", *, name: str, role: str, username: str,
                   password: str | None, email: str | None = None, firstname: str | None = None,
                   lastname: str | None = None) -> Account:
    """A new account with its one user. Names of deleted accounts and users stay taken: on-store
    paths and old job records refer to them, so reusing a name would mix two owners' history."""
    if role not in ROLES:
        raise InvalidParameter(f"Invalid account type/role {role}", "accounttype")
    existing = session.scalars(select(Account).where(Account.name == name)).first()
    if existing is not None:
        if existing.removed is not None:
            raise InvalidParameter(f"The account name {name} belonged to a deleted account and cannot be reused",
                                   "account")
        raise InvalidParameter(f"The specified account: {name} already exists", "account")
    if session.scalars(select(User).where(User.username == username)).first():
        raise InvalidParameter(f"The user {username} already exists", "username")
    account = Account(name=name, role=role, domain_id=root_domain(session, runtime).id, email=email,
                      created=runtime.now())
    session.add(account)
    session.flush()
    user = User(account_id=account.id, username=username, email=email, firstname=firstname, lastname=lastname,
                password_hash=hash_password(password) if password else None, created=runtime.now())
    session.add(user)
    session.flush()
    return account


def generate_keys(runtime: "Runtime", user: User) -> tuple[str, str]:
    """New API key pair for a user; the secret is returned once and stored encrypted.
    The previous pair stops working at once."""
    api_key = secrets.token_urlsafe(64)
    secret = secrets.token_urlsafe(64)
    user.api_key = api_key
    user.secret_key_enc = runtime.secrets.encrypt(secret)
    return api_key, secret


def set_password(user: User, password: str) -> None:
    user.password_hash = hash_password(password)


@functools.cache
def _dummy_hash() -> str:
    """A valid hash to check against when the user does not exist, so that a wrong username
    costs the same time as a wrong password and usernames cannot be probed by timing."""
    return hash_password(secrets.token_urlsafe(16))


def authenticate_password(session: Session, username: str, password: str) -> User | None:
    """The live, enabled user with this username and password, or None."""
    user = session.scalars(select(User).where(User.username == username, User.removed.is_(None))).first()
    if user is None or user.password_hash is None:
        check_password(password, _dummy_hash())
        return None
    if not check_password(password, user.password_hash):
        return None
    if user.state != "enabled" or user.account.removed is not None or user.account.state != "enabled":
        return None
    return user


def remove_account(session: Session, runtime: "Runtime", account: Account) -> None:
    """Mark an account and its users removed; their keys and sessions stop working at once."""
    now = runtime.now()
    account.removed = now
    for user in account.users:
        user.removed = now
        user.api_key = None
        user.secret_key_enc = None
        end_user_sessions(session, user.id)


# ---- login sessions ------------------------------------------------------------------------

def _cookie_digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def open_session(session: Session, runtime: "Runtime", user: User) -> tuple[str, str]:
    """Start a login session: returns (session key, JSESSIONID cookie value).

    Only a digest of the cookie is stored, so reading the table is not enough to take over a
    session. Expired sessions are purged here, which keeps the table small without a timer.
    """
    now = runtime.now()
    session.execute(delete(ApiSession).where(ApiSession.expires <= now))
    session_key = secrets.token_urlsafe(24)
    cookie = secrets.token_urlsafe(24)
    timeout = int(runtime.settings.get("api.session.timeout"))
    session.add(ApiSession(session_key=session_key, cookie_hash=_cookie_digest(cookie), user_id=user.id,
                           created=now, expires=now + timedelta(seconds=timeout)))
    session.flush()
    return session_key, cookie


def session_cookie_matches(row: ApiSession, cookie: str | None) -> bool:
    return bool(cookie) and hmac.compare_digest(row.cookie_hash, _cookie_digest(cookie))


def end_session(session: Session, session_id: int) -> None:
    session.execute(delete(ApiSession).where(ApiSession.id == session_id))


def end_user_sessions(session: Session, user_id: int) -> None:
    session.execute(delete(ApiSession).where(ApiSession.user_id == user_id))
