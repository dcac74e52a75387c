"""The job engine: jobs are rows; workers claim them with a lease and heartbeat.

Every change of a job's state is a compare-and-set UPDATE, so that concurrent workers (threads
or processes, on any host) can never both own a job:

- ``claim`` takes the oldest pending job, or a running job whose lease expired (its worker
  died). On PostgreSQL and MariaDB the candidate is picked with ``FOR UPDATE SKIP LOCKED`` so
  workers do not queue up behind one row; on SQLite the UPDATE's condition alone decides.
- ``attempts`` is incremented by every claim and acts as the lease's fencing token: a worker
  may renew, complete, fail or requeue a job only while ``lease_owner`` and ``attempts`` are
  still the ones it claimed with.

Functions take the time as ``now`` so that tests can drive leases and back-off without sleeping.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, event, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from secstor.db.engine import is_sqlite
from secstor.db.models import AsyncJob
from secstor.domain.states import JOB, JOBSTATUS, JobEvent, JobState

# The queues every worker serves by default, and the setting that caps how many jobs of each
# one a worker runs at once (read live, so operators can change it without restarting).
QUEUE_SLOT_SETTINGS = {
    "default": "secstorage.worker.job.slots",
    "copy": "secstorage.max.migrate.sessions",
}

INTERNAL_ERROR = "Internal error executing job"
CANCELLED_TEXT = "The job was cancelled"
FAILED_RESULT_CODE = 530
FINISHED_STATES = frozenset({JobState.succeeded.value, JobState.failed.value, JobState.cancelled.value})

# Candidates one claim call looks at before giving up for this round (others were faster).
_CLAIM_TRIES = 5


# Wake-ups of the workers running in this process (the embedded worker of `serve`): a job
# committed here starts at once instead of at the next poll. Other processes still poll.
_local_wakers: list[Callable[[], None]] = []


def add_local_waker(wake: Callable[[], None]) -> None:
    _local_wakers.append(wake)


def remove_local_waker(wake: Callable[[], None]) -> None:
    if wake in _local_wakers:
        _local_wakers.remove(wake)


def _wake_local_workers(session: Session) -> None:
    session.info.pop("secstor_wake_hooked", None)
    for wake in list(_local_wakers):
        wake()


def enqueue(session: Session, *, cmd: str, handler: str, params: dict[str, Any], account_id: int | None,
            user_id: int | None, instance_type: str | None = None, instance_id: str | None = None,
            queue: str = "default", now: datetime, max_attempts: int = 5) -> AsyncJob:
    """Add a pending job in the caller's transaction: it exists only if the caller commits."""
    job = AsyncJob(cmd=cmd, handler=handler, params_json=json.dumps(params, default=str), account_id=account_id,
                   user_id=user_id, instance_type=instance_type, instance_id=instance_id, queue=queue,
                   state="pending", jobstatus=0, created=now, max_attempts=max_attempts)
    session.add(job)
    session.flush()
    if _local_wakers and not session.info.get("secstor_wake_hooked"):
        session.info["secstor_wake_hooked"] = True
        event.listen(session, "after_commit", _wake_local_workers, once=True)
    return job


@dataclass(frozen=True)
class Lease:
    """A worker's claim on one job: valid while the row still names this owner and attempt."""

    job_id: int
    owner: str
    attempt: int

    @classmethod
    def of(cls, job: AsyncJob) -> "Lease":
        assert job.lease_owner is not None
        return cls(job.id, job.lease_owner, job.attempts)


def backoff_seconds(attempt: int) -> float:
    """Wait before retrying after the given (1-based) attempt failed transiently: 5 s, 10 s,
    20 s ... capped at 5 minutes."""
    return float(min(5 * 2 ** max(attempt - 1, 0), 300))


def _claimable(now: datetime):
    return or_(
        and_(AsyncJob.state == JobState.pending.value,
             or_(AsyncJob.not_before.is_(None), AsyncJob.not_before <= now)),
        and_(AsyncJob.state == JobState.running.value,
             or_(AsyncJob.lease_expires.is_(None), AsyncJob.lease_expires < now)),
    )


def _owned(lease: Lease):
    return and_(AsyncJob.id == lease.job_id, AsyncJob.state == JobState.running.value,
                AsyncJob.lease_owner == lease.owner, AsyncJob.attempts == lease.attempt)


def _state_values(current: str, event: JobEvent) -> dict[str, Any]:
    state = JOB.next_state(current, event)
    return {"state": state, "jobstatus": JOBSTATUS[state]}


def _error_json(errorcode: int, errortext: str) -> str:
    return json.dumps({"errorcode": errorcode, "errortext": errortext})


def claim(session_factory: sessionmaker[Session], worker_id: str, queues: Collection[str], lease_seconds: float,
          now: datetime, *, handlers: Collection[str] | None = None,
          on_gave_up: Callable[[int, str], None] | None = None) -> AsyncJob | None:
    """Take the oldest claimable job of ``queues`` (whose handler is in ``handlers``, when
    given, so a worker never takes a job it cannot run). Returns the claimed job or None.

    A job taken over from a dead worker that has used up its attempts is failed instead, and
    ``on_gave_up(job id, errortext)`` is called once that failure is committed."""
    if not queues:
        return None
    sqlite = is_sqlite(session_factory.kw["bind"])
    for _ in range(_CLAIM_TRIES):
        with session_factory() as s:
            if not sqlite:
                # READ COMMITTED: MariaDB's default REPEATABLE READ would also lock the gaps
                # and non-matching rows the scan passes, blocking other workers and the API.
                s.connection(execution_options={"isolation_level": "READ COMMITTED"})
            stmt = (select(AsyncJob.id, AsyncJob.state, AsyncJob.attempts, AsyncJob.max_attempts,
                           AsyncJob.lease_owner, AsyncJob.started)
                    .where(AsyncJob.queue.in_(list(queues)), _claimable(now))
                    .order_by(AsyncJob.id).limit(1))
            if handlers is not None:
                stmt = stmt.where(AsyncJob.handler.in_(list(handlers)))
            if not sqlite:
                stmt = stmt.with_for_update(skip_locked=True)
            row = s.execute(stmt).first()
            if row is None:
                return None
            if sqlite:
                # One lock covers the whole SQLite database, and a deferred transaction cannot
                # write on a snapshot another writer has moved past: end this one now. The
                # compare-and-set UPDATE below re-checks everything in its own transaction.
                s.commit()
            cas = update(AsyncJob).where(AsyncJob.id == row.id, AsyncJob.attempts == row.attempts, _claimable(now))
            taking_over = row.state == JobState.running.value
            if taking_over and row.attempts >= row.max_attempts:
                reason = (f"Job failed after {row.attempts} attempts: the worker running it died "
                          f"(last worker {row.lease_owner}, lease expired) and no attempts are left")
                gave_up = s.execute(cas.values(
                    **_state_values(row.state, JobEvent.Failed), result_code=FAILED_RESULT_CODE,
                    result_json=_error_json(FAILED_RESULT_CODE, reason),
                    lease_expires=None, completed=now)).rowcount == 1
                s.commit()
                if gave_up and on_gave_up is not None:
                    on_gave_up(row.id, reason)
                continue
            values = dict(_state_values(row.state, JobEvent.Claimed), attempts=row.attempts + 1, lease_owner=worker_id,
                          lease_expires=now + timedelta(seconds=lease_seconds), heartbeat_at=now, not_before=None,
                          started=row.started or now)
            if taking_over:
                values["last_error"] = f"worker {row.lease_owner} died on attempt {row.attempts} (lease expired)"
            won = s.execute(cas.values(**values)).rowcount == 1
            s.commit()
            if won:
                return s.get(AsyncJob, row.id, populate_existing=True)
    return None


def update_owned(session_factory: sessionmaker[Session], lease: Lease, lease_seconds: float, now: datetime,
                 **values: Any) -> bool:
    """Write ``values`` and renew the lease, if the lease is still ours. False: it was taken over."""
    with session_factory() as s:
        n = s.execute(update(AsyncJob).where(_owned(lease)).values(
            lease_expires=now + timedelta(seconds=lease_seconds), heartbeat_at=now, **values)).rowcount
        s.commit()
    return n == 1


def renew(session_factory: sessionmaker[Session], leases: Collection[Lease], lease_seconds: float,
          now: datetime) -> set[int]:
    """Heartbeat: extend every lease still held. Returns the ids of jobs whose lease was lost."""
    return {lease.job_id for lease in leases if not update_owned(session_factory, lease, lease_seconds, now)}


def _finish(session_factory: sessionmaker[Session], lease: Lease, event: JobEvent, now: datetime,
            **values: Any) -> bool:
    with session_factory() as s:
        n = s.execute(update(AsyncJob).where(_owned(lease)).values(
            **_state_values(JobState.running.value, event), lease_expires=None, heartbeat_at=now, **values)).rowcount
        s.commit()
    return n == 1


def complete(session_factory: sessionmaker[Session], lease: Lease, result: dict[str, Any], now: datetime,
             **extra: Any) -> bool:
    """Succeed with ``result`` as jobresult. False (nothing written) if the lease was lost."""
    return _finish(session_factory, lease, JobEvent.Succeeded, now, result_code=0, result_type="object",
                   result_json=json.dumps(result, default=str), completed=now, **extra)


def fail(session_factory: sessionmaker[Session], lease: Lease, errorcode: int, errortext: str, now: datetime,
         **extra: Any) -> bool:
    """Fail with CloudStack's error jobresult; jobresultcode is 530 whatever the errorcode."""
    return _finish(session_factory, lease, JobEvent.Failed, now, result_code=FAILED_RESULT_CODE, result_type="object",
                   result_json=_error_json(errorcode, errortext), completed=now, **extra)


def cancel_running(session_factory: sessionmaker[Session], lease: Lease, now: datetime, **extra: Any) -> bool:
    """The handler stopped because cancellation was requested."""
    return _finish(session_factory, lease, JobEvent.Cancelled, now, result_code=FAILED_RESULT_CODE,
                   result_type="object", result_json=_error_json(FAILED_RESULT_CODE, CANCELLED_TEXT), completed=now,
                   **extra)


def requeue(session_factory: sessionmaker[Session], lease: Lease, delay: float, reason: str, now: datetime,
            **extra: Any) -> bool:
    """Back to pending, claimable again ``delay`` seconds from ``now``; ``reason`` is kept as last_error."""
    return _finish(session_factory, lease, JobEvent.Retry, now, lease_owner=None,
                   not_before=now + timedelta(seconds=delay), last_error=reason, **extra)


def request_cancel(session: Session, job: AsyncJob, now: datetime) -> str:
    """Cancel a pending job at once; ask a running one's handler to stop. Returns the job's state
    afterwards (a finished job is left as it is)."""
    if job.state == JobState.pending.value:
        n = session.execute(update(AsyncJob).where(AsyncJob.id == job.id, AsyncJob.state == JobState.pending.value)
                            .values(**_state_values(job.state, JobEvent.Cancelled), result_code=FAILED_RESULT_CODE,
                                    result_type="object", result_json=_error_json(FAILED_RESULT_CODE, CANCELLED_TEXT),
                                    completed=now)).rowcount
        if n == 1:
            session.refresh(job)
            return job.state
    session.execute(update(AsyncJob).where(AsyncJob.id == job.id, AsyncJob.state == JobState.running.value)
                    .values(cancel_requested=True))
    session.refresh(job)
    return job.state


def queue_metrics(session: Session, now: datetime) -> dict[str, dict[str, float | int]]:
    """Per queue: pending jobs (``depth``), ``running`` jobs, and how long the longest-waiting
    claimable job has waited (``oldest_wait_seconds``). What a supervisor or an external
    orchestrator scales workers on."""
    metrics: dict[str, dict[str, float | int]] = {
        q: {"depth": 0, "running": 0, "oldest_wait_seconds": 0.0} for q in QUEUE_SLOT_SETTINGS}
    rows = session.execute(
        select(AsyncJob.queue, AsyncJob.state, func.count(),
               func.min(func.coalesce(AsyncJob.not_before, AsyncJob.created)))
        .where(AsyncJob.state.in_([JobState.pending.value, JobState.running.value]))
        .group_by(AsyncJob.queue, AsyncJob.state))
    for queue, state, count, waiting_since in rows:
        m = metrics.setdefault(queue, {"depth": 0, "running": 0, "oldest_wait_seconds": 0.0})
        if state == JobState.running.value:
            m["running"] = count
            continue
        m["depth"] = count
        if waiting_since is not None:
            m["oldest_wait_seconds"] = max(0.0, round((now - _as_utc(waiting_since)).total_seconds(), 3))
    return metrics


def _as_utc(moment: datetime) -> datetime:
    """Aggregates (min/coalesce) bypass the UtcDateTime column type and come back naive."""
    if isinstance(moment, str):  # SQLite returns aggregates of datetimes as text
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
