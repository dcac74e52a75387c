"""Operational tables: setting values, alerts, worker heartbeats."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from secstor.db.base import Base, BigId, Identified, UtcDateTime


class ConfigurationValue(Base):
    """An operator's value for a setting; absent rows mean the registered default."""

    __tablename__ = "configuration_values"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated: Mapped[datetime] = mapped_column(UtcDateTime)


class Alert(Identified, Base):
    __tablename__ = "alerts"
    # CloudStack alert type ids (e.g. 6 = ALERT_TYPE_SECONDARY_STORAGE).
    type: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(1024))
    description: Mapped[str] = mapped_column(Text)
    zone_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("zones.id"))
    image_store_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("image_stores.id"))
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set when the condition clears, so the same condition does not alert twice.
    resolved: Mapped[datetime | None] = mapped_column(UtcDateTime)


class WorkerHeartbeat(Base):
    """Live workers: used by the supervisor, health checks and the queue metrics."""

    __tablename__ = "worker_heartbeats"
    worker_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    running_jobs: Mapped[int] = mapped_column(Integer, default=0)
    bytes_per_second: Mapped[int | None] = mapped_column(BigInteger)
    details_json: Mapped[str | None] = mapped_column(Text)
