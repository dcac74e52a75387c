"""Async jobs: queryAsyncJobResult, listAsyncJobs, and the extensions cancelAsyncJob and listJobQueues."""

from __future__ import annotations

import json
from datetime import timezone
from typing import Any

from sqlalchemy import Select, select

from secstor.api.context import CallContext
from secstor.api.format import cs_date, drop_none
from secstor.api.params import Param, PType
from secstor.api.registry import ADMIN_ONLY, ALL_ROLES, api_command
from secstor.api.results import ListResult, ObjectResult, RawResult
from secstor.db.models import Account, AsyncJob, User
from secstor.domain.errors import InvalidParameter, NotFound
from secstor.jobs.engine import FINISHED_STATES, queue_metrics, request_cancel
from secstor.jobs.worker import live_workers


def job_response(job: AsyncJob, owners: dict[str, dict[int, str]]) -> dict[str, Any]:
    """CloudStack's AsyncJobResponse, plus secstor's progress, queue and attempt fields."""
    finished = job.state in FINISHED_STATES
    return drop_none({
        "accountid": owners["account"].get(job.account_id),
        "userid": owners["user"].get(job.user_id),
        "cmd": job.cmd,
        "jobid": job.uuid,
        "jobstatus": job.jobstatus,
        "jobprocstatus": job.jobprocstatus,
        # cs keeps polling until it sees jobresultcode once jobstatus != 0: always present.
        "jobresultcode": job.result_code,
        "jobresulttype": job.result_type,
        "jobresult": json.loads(job.result_json) if finished and job.result_json else None,
        "jobinstancetype": job.instance_type,
        "jobinstanceid": job.instance_id,
        "created": cs_date(job.created),
        "completed": cs_date(job.completed),
        # Extensions.
        "progress": json.loads(job.progress_json) if job.progress_json else None,
        "queue": job.queue,
        "attempts": job.attempts,
        "cancelrequested": True if job.cancel_requested and not finished else None,
        "lasterror": job.last_error,
    })


def _owner_uuids(ctx: CallContext, jobs: list[AsyncJob]) -> dict[str, dict[int, str]]:
    account_ids = {j.account_id for j in jobs if j.account_id is not None}
    user_ids = {j.user_id for j in jobs if j.user_id is not None}
    accounts = ctx.db.execute(select(Account.id, Account.uuid).where(Account.id.in_(account_ids))).tuples().all()
    users = ctx.db.execute(select(User.id, User.uuid).where(User.id.in_(user_ids))).tuples().all()
    return {"account": dict(accounts), "user": dict(users)}


def _visible(ctx: CallContext, stmt: Select) -> Select:
    """A User sees only its own account's jobs."""
    if ctx.caller.is_admin:
        return stmt
    return stmt.where(AsyncJob.account_id == ctx.caller.account_id)


def _get_job(ctx: CallContext, uuid: str) -> AsyncJob:
    job = ctx.db.scalars(_visible(ctx, select(AsyncJob).where(AsyncJob.uuid == uuid))).first()
    if job is None:
        # Another account's job answers exactly like a job that does not exist.
        raise NotFound(f"Unable to find job with specified jobid {uuid}", "jobid")
    return job


@api_command(
    "queryAsyncJobResult",
    params=[Param("jobid", PType.UUID, required=True, description="the ID of the asynchronous job")],
    roles=ALL_ROLES,
    description="Retrieves the current status of asynchronous job.",
)
def query_async_job_result(ctx: CallContext, p: dict[str, Any]) -> RawResult:
    job = _get_job(ctx, p["jobid"])
    # CloudStack puts the AsyncJobResponse fields directly under the response key.
    return RawResult(job_response(job, _owner_uuids(ctx, [job])))


@api_command(
    "listAsyncJobs",
    params=[
        Param("startdate", PType.DATE, description="the start date of the async job (jobs created then or later)"),
        Param("listall", PType.BOOLEAN, description="Admins: true lists every account's jobs, not only their own"),
    ],
    roles=ALL_ROLES,
    description="Lists all pending asynchronous jobs for the account.",
    is_list=True,
    response_object="asyncjobs",
)
def list_async_jobs(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    stmt = select(AsyncJob).order_by(AsyncJob.id)
    if not (ctx.caller.is_admin and p.get("listall")):
        stmt = stmt.where(AsyncJob.account_id == ctx.caller.account_id)
    if "startdate" in p:
        start = p["startdate"]
        stmt = stmt.where(AsyncJob.created >= (start if start.tzinfo else start.replace(tzinfo=timezone.utc)))
    if "keyword" in p:
        stmt = stmt.where(AsyncJob.cmd.contains(p["keyword"]))
    rows, total = ctx.page(p, stmt)
    owners = _owner_uuids(ctx, rows)
    return ListResult("asyncjobs", [job_response(j, owners) for j in rows], total)


@api_command(
    "cancelAsyncJob",
    params=[Param("jobid", PType.UUID, required=True, description="the ID of the asynchronous job")],
    roles=ALL_ROLES,
    description="Cancels an asynchronous job: a pending job at once, a running one at its next safe point "
                "(the job then ends with jobstatus 3).",
    response_object="asyncjobs",
    extension=True,
)
def cancel_async_job(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    job = _get_job(ctx, p["jobid"])
    if job.state in FINISHED_STATES:
        raise InvalidParameter(f"Job {job.uuid} has already finished ({job.state}); it cannot be cancelled", "jobid")
    request_cancel(ctx.db, job, ctx.now)
    return ObjectResult("asyncjobs", job_response(job, _owner_uuids(ctx, [job])))


@api_command(
    "listJobQueues",
    roles=ADMIN_ONLY,
    description="Lists the job queues (pending and running jobs, longest wait) and the live workers, for "
                "monitoring and for scaling `secstor worker` processes.",
    extension=True,
)
def list_job_queues(ctx: CallContext, p: dict[str, Any]) -> RawResult:
    now = ctx.now
    queues = [{"name": name, "depth": m["depth"], "running": m["running"],
               "oldestwaitseconds": m["oldest_wait_seconds"]} for name, m in sorted(queue_metrics(ctx.db, now).items())]
    workers = []
    for w in live_workers(ctx.db, now):
        details = json.loads(w.details_json or "{}")
        workers.append(drop_none({
            "id": w.worker_id, "hostname": w.hostname, "pid": w.pid, "started": cs_date(w.started),
            "lastseen": cs_date(w.last_seen), "runningjobs": w.running_jobs, "slots": details.get("slots"),
            "running": details.get("running"), "stopping": details.get("stopping"),
        }))
    return RawResult({"jobqueue": queues, "worker": workers})
