"""Domains, accounts, users (API keys) and browser sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from secstor.db.base import Base, BigId, Identified, UtcDateTime


class Domain(Identified, Base):
    __tablename__ = "domains"
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(255), default="/")


class Account(Identified, Base):
    __tablename__ = "accounts"
    name: Mapped[str] = mapped_column(String(255), unique=True)
    # "Admin" (CloudStack's root admin, account type 1) or "User" (type 0).
    role: Mapped[str] = mapped_column(String(16))
    domain_id: Mapped[int] = mapped_column(BigId, ForeignKey("domains.id"))
    state: Mapped[str] = mapped_column(String(16), default="enabled")
    email: Mapped[str | None] = mapped_column(String(255))
    removed: Mapped[datetime | None] = mapped_column(UtcDateTime)

    domain: Mapped[Domain] = relationship(lazy="joined")
    users: Mapped[list["User"]] = relationship(back_populates="account")


class User(Identified, Base):
    __tablename__ = "users"
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("accounts.id"))
    username: Mapped[str] = mapped_column(String(255), unique=True)
    firstname: Mapped[str | None] = mapped_column(String(255))
    lastname: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    api_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    # The secret must be recoverable to verify HMAC signatures, so it is encrypted, not hashed.
    secret_key_enc: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="enabled")
    removed: Mapped[datetime | None] = mapped_column(UtcDateTime)

    account: Mapped[Account] = relationship(back_populates="users", lazy="joined")


class ApiSession(Base):
    """A `login` session: the browser sends the key back as the `sessionkey` parameter, and the
    session must also be named by its httponly JSESSIONID cookie (stored as a SHA-256 digest)."""

    __tablename__ = "api_sessions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    session_key: Mapped[str] = mapped_column(String(64), unique=True)
    cookie_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    created: Mapped[datetime] = mapped_column(UtcDateTime)
    expires: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
