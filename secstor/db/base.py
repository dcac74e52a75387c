"""Declarative base and column helpers shared by every table."""

from __future__ import annotations

import uuid as uuidlib
from datetime import datetime, timezone

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, String
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so Alembic migrations are the same on every database.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; everyone else gets 64-bit ids.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_uuid() -> str:
    return str(uuidlib.uuid4())


class UtcDateTime(TypeDecorator):
    """Timestamps are stored naive-UTC (MariaDB and SQLite keep no zone) and read back aware."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect):
        # MariaDB's DATETIME drops fractions of a second by default; job leases and back-offs
        # of a few seconds need them.
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Identified:
    """Internal integer id (used in on-store paths, as CloudStack does) plus public UUID."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
