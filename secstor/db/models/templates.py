"""Templates and ISOs (one table, as CloudStack's vm_template) and their copies on image stores."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from secstor.db.base import Base, BigId, Identified, UtcDateTime


class VMTemplate(Identified, Base):
    __tablename__ = "vm_templates"
    # listTemplates walks the live templates of one kind in id order, from this index alone
    # (bench/list_templates.py: 100,000 templates).
    __table_args__ = (Index("ix_vm_templates_listing", "is_iso", "removed", "id"),)
    name: Mapped[str] = mapped_column(String(255), index=True)
    displaytext: Mapped[str | None] = mapped_column(String(4096))
    format: Mapped[str] = mapped_column(String(16))  # QCOW2 | RAW | VHD | VHDX | VMDK | OVA | ISO
    hypervisor: Mapped[str | None] = mapped_column(String(32))
    ostypeid: Mapped[str | None] = mapped_column(String(255))
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("accounts.id"), index=True)
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    featured: Mapped[bool] = mapped_column(Boolean, default=False)
    extractable: Mapped[bool] = mapped_column(Boolean, default=False)
    bootable: Mapped[bool] = mapped_column(Boolean, default=True)
    passwordenabled: Mapped[bool] = mapped_column(Boolean, default=False)
    sshkeyenabled: Mapped[bool] = mapped_column(Boolean, default=False)
    isdynamicallyscalable: Mapped[bool] = mapped_column(Boolean, default=False)
    requireshvm: Mapped[bool] = mapped_column(Boolean, default=True)
    bits: Mapped[int] = mapped_column(Integer, default=64)
    template_type: Mapped[str] = mapped_column(String(16), default="USER")  # USER | SYSTEM | BUILTIN | ROUTING
    is_iso: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    url: Mapped[str | None] = mapped_column(String(2048))
    checksum: Mapped[str | None] = mapped_column(String(255))  # as given, canonical {ALG}hex
    checksum_computed: Mapped[str | None] = mapped_column(String(255))  # {SHA-512}hex of the bytes stored
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)  # virtual size
    physical_size: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default="Active")  # Active | Inactive (being deleted)
    cross_zones: Mapped[bool] = mapped_column(Boolean, default=False)
    details_json: Mapped[str | None] = mapped_column(Text)  # updateTemplate's details, a JSON object
    removed: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)


class TemplateStoreRef(Base):
    """One copy of a template on one image store (CloudStack's template_store_ref)."""

    __tablename__ = "template_store_refs"
    # (template_id, zone_id, state): listTemplates finds a template's zones (and whether a copy
    # is Ready) from the index alone, already in the order it lists them.
    __table_args__ = (UniqueConstraint("template_id", "store_id"),
                      Index("ix_template_store_refs_listing", "template_id", "zone_id", "state"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    template_id: Mapped[int] = mapped_column(BigId, ForeignKey("vm_templates.id"))
    store_id: Mapped[int] = mapped_column(BigId, ForeignKey("image_stores.id"), index=True)
    zone_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("zones.id"))
    state: Mapped[str] = mapped_column(String(16))  # ObjectInStoreState
    download_state: Mapped[str] = mapped_column(String(32))  # DownloadState
    download_pct: Mapped[int] = mapped_column(Integer, default=0)
    error_text: Mapped[str | None] = mapped_column(Text)
    install_path: Mapped[str | None] = mapped_column(String(1024))
    size: Mapped[int | None] = mapped_column(BigInteger)
    physical_size: Mapped[int | None] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(255))
    job_id: Mapped[int | None] = mapped_column(BigId)
    created: Mapped[datetime] = mapped_column(UtcDateTime)
    updated: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # When a staging copy (ImageCache store) last served a use: least recently used go first.
    last_used: Mapped[datetime | None] = mapped_column(UtcDateTime)
