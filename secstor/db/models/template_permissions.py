"""Launch permissions: a private template or ISO shared with other accounts (CloudStack's
launch_permission)."""

from __future__ import annotations

from sqlalchemy import ForeignKey, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from secstor.db.base import Base, BigId


class LaunchPermission(Base):
    __tablename__ = "launch_permissions"
    __table_args__ = (UniqueConstraint("template_id", "account_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    template_id: Mapped[int] = mapped_column(BigId, ForeignKey("vm_templates.id"), index=True)
    # Indexed on its own too: the shared filters look templates up by the caller's account.
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("accounts.id"), index=True)
