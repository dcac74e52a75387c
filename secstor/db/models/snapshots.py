"""Volume snapshots and the policies that take them on a schedule (CloudStack's snapshots and
snapshot_policy tables)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from secstor.db.base import Base, BigId, Identified, UtcDateTime


class Snapshot(Identified, Base):
    """One point-in-time copy of a volume. Backed up, it is the manifest ``manifest_key``'s
    snapshot in the chunk store of ``store_id``: every snapshot of a volume lives in one image
    store (the deduplication domain), so a new one goes where the volume's others are."""

    __tablename__ = "snapshots"
    name: Mapped[str] = mapped_column(String(255), index=True)
    volume_id: Mapped[int] = mapped_column(BigId, ForeignKey("volumes.id"), index=True)
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("accounts.id"), index=True)
    zone_id: Mapped[int] = mapped_column(BigId, ForeignKey("zones.id"), index=True)
    snapshot_type: Mapped[str] = mapped_column(String(16))  # MANUAL | RECURRING
    interval_type: Mapped[str] = mapped_column(String(16))  # MANUAL | HOURLY | DAILY | WEEKLY | MONTHLY
    policy_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("snapshot_policies.id"), index=True)
    state: Mapped[str] = mapped_column(String(32))  # domain.states.SnapshotState (SNAPSHOT machine)
    location_type: Mapped[str] = mapped_column(String(16))  # primary | secondary
    physical_size: Mapped[int] = mapped_column(BigInteger, default=0)  # bytes this snapshot added
    virtual_size: Mapped[int] = mapped_column(BigInteger, default=0)
    store_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("image_stores.id"), index=True)
    manifest_key: Mapped[str | None] = mapped_column(String(1024))
    pool_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("storage_pools.id"), index=True)
    primary_path: Mapped[str | None] = mapped_column(String(1024))  # relative to the pool, while kept there
    error_text: Mapped[str | None] = mapped_column(Text)
    updated: Mapped[datetime | None] = mapped_column(UtcDateTime)
    removed: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)


class SnapshotPolicy(Identified, Base):
    """Take a RECURRING snapshot of a volume every ``interval_type`` at ``schedule`` in
    ``timezone``, keeping the newest ``max_snaps``. ``next_run_at`` (UTC) is also the claim: the
    scheduler that moves it forward with a compare-and-set is the one that takes the snapshot."""

    __tablename__ = "snapshot_policies"
    volume_id: Mapped[int] = mapped_column(BigId, ForeignKey("volumes.id"), index=True)
    interval_type: Mapped[str] = mapped_column(String(16))  # HOURLY | DAILY | WEEKLY | MONTHLY
    schedule: Mapped[str] = mapped_column(String(32))
    timezone: Mapped[str] = mapped_column(String(64))
    max_snaps: Mapped[int] = mapped_column(Integer)
    next_run_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    removed: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
