"""Volumes on primary storage, the instances they are attached to, and templates cached on pools."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from secstor.db.base import Base, BigId, Identified, UtcDateTime


class VirtualMachine(Identified, Base):
    """An instance (CloudStack's vm_instance); its hypervisor decides what start/stop do."""

    __tablename__ = "vm_instances"
    name: Mapped[str] = mapped_column(String(255), index=True)
    display_name: Mapped[str | None] = mapped_column(String(255))
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("accounts.id"), index=True)
    zone_id: Mapped[int] = mapped_column(BigId, ForeignKey("zones.id"), index=True)
    template_id: Mapped[int] = mapped_column(BigId, ForeignKey("vm_templates.id"), index=True)
    hypervisor: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))  # domain.volumes.VmState
    error_text: Mapped[str | None] = mapped_column(Text)
    updated: Mapped[datetime | None] = mapped_column(UtcDateTime)
    removed: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)


class Volume(Identified, Base):
    """A disk: a file ``<pool path>/<path>`` once it is Ready (CloudStack's volumes)."""

    __tablename__ = "volumes"
    name: Mapped[str] = mapped_column(String(255), index=True)
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("accounts.id"), index=True)
    zone_id: Mapped[int] = mapped_column(BigId, ForeignKey("zones.id"), index=True)
    pool_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("storage_pools.id"), index=True)
    vm_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("vm_instances.id"), index=True)
    device_id: Mapped[int | None] = mapped_column(Integer)  # 0 = ROOT, 1.. data disks, while attached
    volume_type: Mapped[str] = mapped_column(String(16))  # ROOT | DATADISK
    state: Mapped[str] = mapped_column(String(32))  # domain.volumes.VolumeState
    size: Mapped[int] = mapped_column(BigInteger)  # virtual size in bytes
    format: Mapped[str] = mapped_column(String(16))  # RAW | QCOW2
    path: Mapped[str | None] = mapped_column(String(1024))  # relative to the pool's path
    template_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("vm_templates.id"), index=True)
    # How the content was made from the template: backing-file | reflink | sparse-copy | convert
    clone_method: Mapped[str | None] = mapped_column(String(16))
    error_text: Mapped[str | None] = mapped_column(Text)
    updated: Mapped[datetime | None] = mapped_column(UtcDateTime)
    removed: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)


class TemplatePoolCache(Base):
    """A template's copy on a primary storage pool, made on first use and cloned by every volume
    made from it. The unique (template, pool) pair is the claim: whoever inserts the row copies."""

    __tablename__ = "template_pool_cache"
    __table_args__ = (UniqueConstraint("template_id", "pool_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    template_id: Mapped[int] = mapped_column(BigId, ForeignKey("vm_templates.id"), index=True)
    pool_id: Mapped[int] = mapped_column(BigId, ForeignKey("storage_pools.id"), index=True)
    state: Mapped[str] = mapped_column(String(16))  # ObjectInStoreState: Creating | Ready | Failed
    path: Mapped[str] = mapped_column(String(1024))  # relative to the pool's path
    format: Mapped[str] = mapped_column(String(16))
    size: Mapped[int | None] = mapped_column(BigInteger)  # virtual size
    physical_size: Mapped[int | None] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(255))  # verified while copying
    # The copier's token and its last sign of life; a claim silent for too long is taken over.
    claim_token: Mapped[str] = mapped_column(String(64))
    claimed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    error_text: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UtcDateTime)
    updated: Mapped[datetime | None] = mapped_column(UtcDateTime)


class DiskOffering(Identified, Base):
    """A named disk size users pick from (CloudStack's disk_offering); customized: the user gives the size."""

    __tablename__ = "disk_offerings"
    name: Mapped[str] = mapped_column(String(255), index=True)
    display_text: Mapped[str] = mapped_column(String(4096))
    disk_size: Mapped[int | None] = mapped_column(BigInteger)  # bytes; None when customized
    customized: Mapped[bool] = mapped_column(Boolean, default=False)
    removed: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
