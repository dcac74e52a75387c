"""The job engine: jobs are rows; workers claim them with a lease and heartbeat."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from secstor.db.models import AsyncJob


def enqueue(session: Session, *, cmd: str, handler: str, params: dict[str, Any], account_id: int | None,
            user_id: int | None, instance_type: str | None = None, instance_id: str | None = None,
            queue: str = "default", now: datetime, max_attempts: int = 5) -> AsyncJob:
    """Add a pending job in the caller's transaction: it exists only if the caller commits."""
    job = AsyncJob(cmd=cmd, handler=handler, params_json=json.dumps(params, default=str), account_id=account_id,
                   user_id=user_id, instance_type=instance_type, instance_id=instance_id, queue=queue,
                   state="pending", jobstatus=0, created=now, max_attempts=max_attempts)
    session.add(job)
    session.flush()
    return job
