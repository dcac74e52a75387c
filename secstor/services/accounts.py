"""Accounts, users and API keys."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from secstor.db.models import Account, Domain, User
from secstor.domain.errors import InvalidParameter
from secstor.security.passwords import hash_password

if TYPE_CHECKING:
    from secstor.runtime import Runtime

ROOT_DOMAIN = "ROOT"


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
    if role not in ("Admin", "User"):
        raise InvalidParameter(f"Invalid account type/role {role}", "accounttype")
    if session.scalars(select(Account).where(Account.name == name, Account.removed.is_(None))).first():
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
    """New API key pair for a user; the secret is returned once and stored encrypted."""
    api_key = secrets.token_urlsafe(64)
    secret = secrets.token_urlsafe(64)
    user.api_key = api_key
    user.secret_key_enc = runtime.secrets.encrypt(secret)
    return api_key, secret
