"""Zones, image stores (secondary storage) and primary storage pools."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from secstor.db.base import Base, BigId, Identified, UtcDateTime
from sqlalchemy import BigInteger


class Zone(Identified, Base):
    __tablename__ = "zones"
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(String(1024))
    allocation_state: Mapped[str] = mapped_column(String(16), default="Enabled")
    removed: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ImageStore(Identified, Base):
    __tablename__ = "image_stores"
    name: Mapped[str] = mapped_column(String(255), unique=True)
    zone_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("zones.id"), index=True)
    provider: Mapped[str] = mapped_column(String(32))  # Local | NFS | S3
    protocol: Mapped[str] = mapped_column(String(32))  # file | nfs | http | https (S3, as CloudStack)
    url: Mapped[str] = mapped_column(String(2048))
    scope: Mapped[str] = mapped_column(String(16), default="ZONE")  # ZONE | REGION
    role: Mapped[str] = mapped_column(String(16), default="Image")  # Image | ImageCache
    readonly: Mapped[bool] = mapped_column(Boolean, default=False)
    # Operator cap (CloudStack's capacitybytes); when set it is the store's total.
    capacity_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # Last capacity scan: total and used bytes, and when.
    total_bytes: Mapped[int | None] = mapped_column(BigInteger)
    used_bytes: Mapped[int | None] = mapped_column(BigInteger)
    capacity_scanned_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Non-secret driver details as JSON (endpoint, bucket, timeouts ...).
    details_json: Mapped[str] = mapped_column(Text, default="{}")
    # Secret details (S3 access and secret keys), JSON encrypted with the key file.
    secrets_enc: Mapped[str | None] = mapped_column(Text)
    removed: Mapped[datetime | None] = mapped_column(UtcDateTime)

    zone: Mapped[Zone | None] = relationship(lazy="joined")


class StoragePool(Identified, Base):
    """Primary storage: where volumes live while in use."""

    __tablename__ = "storage_pools"
    name: Mapped[str] = mapped_column(String(255), unique=True)
    zone_id: Mapped[int] = mapped_column(BigId, ForeignKey("zones.id"), index=True)
    provider: Mapped[str] = mapped_column(String(32), default="Local")
    url: Mapped[str] = mapped_column(String(2048))
    path: Mapped[str] = mapped_column(String(2048))
    scope: Mapped[str] = mapped_column(String(16), default="ZONE")
    state: Mapped[str] = mapped_column(String(16), default="Up")
    volume_format: Mapped[str] = mapped_column(String(16), default="RAW")
    capacity_bytes: Mapped[int | None] = mapped_column(BigInteger)
    total_bytes: Mapped[int | None] = mapped_column(BigInteger)
    used_bytes: Mapped[int | None] = mapped_column(BigInteger)
    removed: Mapped[datetime | None] = mapped_column(UtcDateTime)

    zone: Mapped[Zone] = relationship(lazy="joined")
