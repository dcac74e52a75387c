"""Async jobs: one row per long operation, claimed by workers with a lease."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from secstor.db.base import Base, BigId, Identified, UtcDateTime


class AsyncJob(Identified, Base):
    __tablename__ = "async_jobs"
    # CloudStack's API command name that created the job (e.g. "deleteTemplate"), and the
    # handler that runs it (usually the same name; internal jobs use their own names).
    cmd: Mapped[str] = mapped_column(String(255))
    handler: Mapped[str] = mapped_column(String(255))
    account_id: Mapped[int | None] = mapped_column(BigId, index=True)
    user_id: Mapped[int | None] = mapped_column(BigId)
    params_json: Mapped[str] = mapped_column(Text, default="{}")
    # Queue decides which concurrency limit applies ("default", "copy" ...).
    queue: Mapped[str] = mapped_column(String(32), default="default")
    # pending -> running -> succeeded | failed | cancelled. jobstatus 0 covers pending and running.
    state: Mapped[str] = mapped_column(String(16), default="pending")
    jobstatus: Mapped[int] = mapped_column(Integer, default=0)
    jobprocstatus: Mapped[int] = mapped_column(Integer, default=0)
    result_code: Mapped[int] = mapped_column(Integer, default=0)
    result_type: Mapped[str] = mapped_column(String(16), default="object")
    result_json: Mapped[str | None] = mapped_column(Text)
    instance_type: Mapped[str | None] = mapped_column(String(64))
    instance_id: Mapped[str | None] = mapped_column(String(64))
    # Progress for long jobs: free-form JSON (objects/bytes done and remaining ...).
    progress_json: Mapped[str | None] = mapped_column(Text)
    # Lease: the worker that holds the job and until when. An expired lease is claimable.
    # ``attempts`` doubles as the lease's fencing token: every claim increments it, so a worker
    # whose lease was taken over can never write over the new owner's work.
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires: Mapped[datetime | None] = mapped_column(UtcDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    not_before: Mapped[datetime | None] = mapped_column(UtcDateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Why the previous attempt ended without a result (a retryable error, a worker that died):
    # shown to operators while the job waits for its next attempt.
    last_error: Mapped[str | None] = mapped_column(Text)
    # Durable scratch state a handler keeps to resume after a crash (idempotent restarts).
    checkpoint_json: Mapped[str | None] = mapped_column(Text)
    started: Mapped[datetime | None] = mapped_column(UtcDateTime)
    completed: Mapped[datetime | None] = mapped_column(UtcDateTime)
    bytes_total: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_async_jobs_claim", "state", "queue", "not_before"),)
