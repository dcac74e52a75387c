"""Volumes on image stores (CloudStack's volume_store_ref): an uploaded volume's image waiting
to be attached, and the copy of a primary volume made for an extract URL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from secstor.db.base import Base, BigId, UtcDateTime


class VolumeStoreRef(Base):
    __tablename__ = "volume_store_refs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    volume_id: Mapped[int] = mapped_column(BigId, ForeignKey("volumes.id"), index=True)
    store_id: Mapped[int] = mapped_column(BigId, ForeignKey("image_stores.id"), index=True)
    zone_id: Mapped[int] = mapped_column(BigId, ForeignKey("zones.id"))
    purpose: Mapped[str] = mapped_column(String(16))  # upload | extract
    state: Mapped[str] = mapped_column(String(16))  # ObjectInStoreState
    download_state: Mapped[str] = mapped_column(String(32))  # DownloadState
    download_pct: Mapped[int] = mapped_column(Integer, default=0)
    url: Mapped[str | None] = mapped_column(String(2048))  # uploadVolume's source
    checksum: Mapped[str | None] = mapped_column(String(255))  # declared, else computed {SHA-512}
    sha256: Mapped[str | None] = mapped_column(String(64))
    install_path: Mapped[str | None] = mapped_column(String(1024))
    size: Mapped[int | None] = mapped_column(BigInteger)  # virtual size
    physical_size: Mapped[int | None] = mapped_column(BigInteger)
    # An extract copy's URL deadline: the copy is removed after it.
    expires: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    error_text: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(BigId)
    created: Mapped[datetime] = mapped_column(UtcDateTime)
    updated: Mapped[datetime | None] = mapped_column(UtcDateTime)
