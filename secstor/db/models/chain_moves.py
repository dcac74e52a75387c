"""A volume's snapshot chain on its way from one image store to another (the chain has no
per-store row of its own: every Snapshot.store_id of the volume names the store holding it)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from secstor.db.base import Base, BigId, UtcDateTime


class SnapshotChainMove(Base):
    """One move of the chunk-store prefix of ``volume_id`` by migration job ``job_id``. Its
    existence is the claim (one move per volume at a time, and new backups of the volume wait
    for it); ``state`` Copying until every Snapshot.store_id is switched, then Switched until
    the source prefix is deleted and the row with it."""

    __tablename__ = "snapshot_chain_moves"
    volume_id: Mapped[int] = mapped_column(BigId, ForeignKey("volumes.id"), primary_key=True, autoincrement=False)
    src_store_id: Mapped[int] = mapped_column(BigId, ForeignKey("image_stores.id"), index=True)
    dst_store_id: Mapped[int] = mapped_column(BigId, ForeignKey("image_stores.id"), index=True)
    job_id: Mapped[int] = mapped_column(BigId, index=True)
    state: Mapped[str] = mapped_column(String(16))  # Copying | Switched
    created: Mapped[datetime] = mapped_column(UtcDateTime)
