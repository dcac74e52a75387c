"""Removals a staging store still owes: it was unreachable when its copy was deleted."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from secstor.db.base import Base, BigId, UtcDateTime


class PendingStoreDeletion(Base):
    """A directory to remove from a store once it answers again (retried by a periodic task)."""

    __tablename__ = "pending_store_deletions"
    __table_args__ = (UniqueConstraint("store_id", "prefix"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    store_id: Mapped[int] = mapped_column(BigId, ForeignKey("image_stores.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(1024))  # a directory, ending in "/"
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UtcDateTime)
    updated: Mapped[datetime | None] = mapped_column(UtcDateTime)
