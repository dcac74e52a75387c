"""A worker: claims jobs from the database, runs each in its own thread, keeps their leases alive.

Workers hold no state another process cannot take over: a job's progress, checkpoint and
lease live in its row. If a worker dies, its leases expire and any other worker (in another
`secstor worker` process or embedded in `secstor serve`) claims the jobs again.

Concurrency is limited per worker and per queue (``slots``): by default the "default" queue by
the setting ``secstorage.worker.job.slots`` and the "copy" queue by
``secstorage.max.migrate.sessions``, both read live. A slot value is either a fixed number or
the name of the setting to read.

The lease lasts ``job.lease.seconds`` (setting), unless ``$SECSTOR_JOB_LEASE_SECONDS`` overrides
it for this process (tests use a few seconds so that a killed worker's job is taken over
quickly). Leases are renewed every third of their length.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from secstor.api.results import result_body
from secstor.db.models import AsyncJob, WorkerHeartbeat
from secstor.domain.errors import SecstorError
from secstor.jobs import engine
from secstor.jobs.handlers import (
    HANDLERS, JobCancelled, JobContext, LeaseLost, RetryableJobError, load_handler_modules, run_failure_hook,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from secstor.runtime import Runtime

log = logging.getLogger("secstor.worker")

LEASE_ENV = "SECSTOR_JOB_LEASE_SECONDS"
POLL_SECONDS = 0.2
MAX_IDLE_POLL_SECONDS = 0.5
DEFAULT_GRACE_SECONDS = 30.0
# Heartbeat rows of workers gone this long are deleted (killed workers leave theirs behind).
FORGET_WORKER_AFTER = timedelta(hours=1)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def parse_slots(text: str) -> dict[str, int]:
    """``"default=4,copy=2"`` -> ``{"default": 4, "copy": 2}``."""
    slots: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        queue, sep, number = part.partition("=")
        if not sep or not queue.strip() or not number.strip().isdigit() or int(number) < 1:
            raise ValueError(f"invalid slot {part!r}: expected QUEUE=N with N >= 1, e.g. default=4,copy=2")
        slots[queue.strip()] = int(number)
    if not slots:
        raise ValueError("no slots given: expected QUEUE=N[,QUEUE=N...]")
    return slots


class Worker:
    def __init__(self, runtime: "Runtime", worker_id: str, slots: Mapping[str, int | str] | None = None, *,
                 poll_interval: float = POLL_SECONDS):
        self.runtime = runtime
        self.worker_id = worker_id
        self.slots: dict[str, int | str] = dict(slots if slots is not None else engine.QUEUE_SLOT_SETTINGS)
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._jobs: dict[int, tuple[JobContext, str, threading.Thread]] = {}
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._heartbeat_stop = threading.Event()
        self._claim_thread = threading.Thread(target=self._claim_loop, name=f"worker-{worker_id}-claim", daemon=True)
        self._heartbeat_thread = threading.Thread(target=self._heartbeat_loop, name=f"worker-{worker_id}-heartbeat",
                                                  daemon=True)
        self._started = runtime.now()

    # ---- limits ----------------------------------------------------------------------------
    def lease_seconds(self) -> float:
        override = os.environ.get(LEASE_ENV)
        return float(override) if override else float(self.runtime.settings.get("job.lease.seconds"))

    def limit(self, queue: str) -> int:
        slot = self.slots[queue]
        return slot if isinstance(slot, int) else int(self.runtime.settings.get(slot))

    def running(self) -> dict[str, int]:
        counts = {q: 0 for q in self.slots}
        with self._lock:
            for _ctx, queue, _thread in self._jobs.values():
                counts[queue] += 1
        return counts

    def _free_queues(self) -> list[str]:
        return [q for q, n in self.running().items() if n < self.limit(q)]

    # ---- life cycle ------------------------------------------------------------------------
    def start(self) -> "Worker":
        load_handler_modules()
        engine.add_local_waker(self._wake.set)
        self._heartbeat_thread.start()
        self._claim_thread.start()
        queues = ", ".join(f"{q}={self.limit(q)}" + ("" if isinstance(slot, int) else f" ({slot})")
                           for q, slot in self.slots.items())
        log.info("worker %s started (queues %s; lease %gs)", self.worker_id, queues, self.lease_seconds())
        return self

    def request_stop(self) -> None:
        """Stop claiming; running jobs go on."""
        self._stopping.set()
        engine.remove_local_waker(self._wake.set)
        self._wake.set()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for running jobs, then stop heartbeating. Jobs still running are
        abandoned to their leases: they expire and another worker takes the jobs over. True if
        every job finished."""
        deadline = time.monotonic() + timeout
        self._claim_thread.join(max(0.0, deadline - time.monotonic()))
        while True:
            with self._lock:
                threads = [t for _c, _q, t in self._jobs.values()]
            if not threads or time.monotonic() >= deadline:
                break
            threads[0].join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = [ctx for ctx, _q, _t in self._jobs.values()]
        for ctx in left:
            ctx.mark_lost()  # their handlers stop at their next progress call and renew nothing
        self._heartbeat_stop.set()
        self._heartbeat_thread.join(10)
        if left:
            log.warning("worker %s stopped with jobs still running (%s); their leases will expire and another "
                        "worker will take them over", self.worker_id, ", ".join(ctx.job_uuid for ctx in left))
        self._forget_self()
        log.info("worker %s stopped", self.worker_id)
        return not left

    def stop(self, grace: float = DEFAULT_GRACE_SECONDS) -> bool:
        self.request_stop()
        return self.join(grace)

    # ---- claiming --------------------------------------------------------------------------
    def _claim_loop(self) -> None:
        idle = self.poll_interval
        while not self._stopping.is_set():
            job = None
            try:
                free = self._free_queues()
                if free and HANDLERS:
                    job = engine.claim(self.runtime.session_factory, self.worker_id, free, self.lease_seconds(),
                                       self.runtime.now(), handlers=list(HANDLERS), on_gave_up=self._gave_up)
            except Exception:
                log.exception("worker %s: claiming a job failed; will retry", self.worker_id)
            if job is not None:
                self._start_job(job)
                idle = self.poll_interval
                continue
            self._wake.wait(idle)
            self._wake.clear()
            idle = min(idle * 1.5, MAX_IDLE_POLL_SECONDS)

    def _start_job(self, job: AsyncJob) -> None:
        ctx = JobContext(self.runtime, job, engine.Lease.of(job), self.lease_seconds)
        t = threading.Thread(target=self._run, args=(job, ctx), name=f"job-{job.uuid[:8]}", daemon=True)
        with self._lock:
            self._jobs[job.id] = (ctx, job.queue, t)
        t.start()

    def _gave_up(self, job_id: int, reason: str) -> None:
        """A dead worker's job ran out of attempts: let its handler's state follow it."""
        log.warning("worker %s: job %s failed: %s", self.worker_id, job_id, reason)
        with self.runtime.session_factory() as s:
            job = s.get(AsyncJob, job_id)
            handler, params_json = job.handler, job.params_json
        run_failure_hook(self.runtime, job_id, handler, params_json, reason)

    # ---- running ---------------------------------------------------------------------------
    def _run(self, job: AsyncJob, ctx: JobContext) -> None:
        sf, lease = self.runtime.session_factory, ctx.lease
        log.info("worker %s claimed job %s (%s) attempt %d/%d", self.worker_id, job.uuid, job.cmd, job.attempts,
                 job.max_attempts)
        if job.attempts > 1 and job.last_error:
            log.info("job %s: resuming after: %s", job.uuid, job.last_error)
        outcome, written = "", False
        failure: str | None = None  # the errortext of a job that failed for good
        try:
            try:
                result = HANDLERS[job.handler](ctx, json.loads(job.params_json))
                body = result_body(result)
            except LeaseLost:
                outcome = "abandoned (lease lost)"
            except JobCancelled:
                outcome = "cancelled"
                written = engine.cancel_running(sf, lease, self.runtime.now(), **(ctx.pending_progress() or {}))
            except RetryableJobError as exc:
                if job.attempts >= job.max_attempts:
                    outcome = f"failed: {exc.message} (no attempts left)"
                    failure = f"{exc.message} (gave up after {job.attempts} attempts)"
                    written = engine.fail(sf, lease, engine.FAILED_RESULT_CODE, failure, self.runtime.now(),
                                          **(ctx.pending_progress() or {}))
                else:
                    delay = exc.delay if exc.delay is not None else engine.backoff_seconds(job.attempts)
                    outcome = f"requeued in {delay:g}s: {exc.message}"
                    written = engine.requeue(sf, lease, delay, exc.message, self.runtime.now(),
                                             **(ctx.pending_progress() or {}))
            except SecstorError as exc:
                outcome, failure = f"failed: {exc.errorcode} {exc.message}", exc.message
                written = engine.fail(sf, lease, exc.errorcode, exc.message, self.runtime.now(),
                                      **(ctx.pending_progress() or {}))
            except Exception:
                log.exception("job %s (%s) crashed in its handler", job.uuid, job.cmd)
                outcome, failure = "failed: internal error", engine.INTERNAL_ERROR
                written = engine.fail(sf, lease, engine.FAILED_RESULT_CODE, engine.INTERNAL_ERROR, self.runtime.now(),
                                      **(ctx.pending_progress() or {}))
            else:
                outcome = "succeeded"
                written = engine.complete(sf, lease, body, self.runtime.now(), **(ctx.pending_progress() or {}))
            if written and failure is not None:
                run_failure_hook(self.runtime, job.id, job.handler, job.params_json, failure)
            if written:
                log.info("worker %s: job %s (%s) %s", self.worker_id, job.uuid, job.cmd, outcome)
            else:
                log.warning("worker %s: job %s (%s) %s, but its lease was taken over by another worker; "
                            "outcome discarded", self.worker_id, job.uuid, job.cmd, outcome)
        except Exception:
            # Recording the outcome failed (database unreachable): the lease expires and another
            # worker runs the job again, which handlers are written to survive.
            log.exception("worker %s: could not record the outcome of job %s", self.worker_id, job.uuid)
        finally:
            with self._lock:
                self._jobs.pop(job.id, None)
            self._wake.set()

    # ---- heartbeat -------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        while True:
            try:
                self._beat()
            except Exception:
                log.exception("worker %s: heartbeat failed; will retry", self.worker_id)
            if self._heartbeat_stop.wait(max(0.2, self.lease_seconds() / 3)):
                return

    def _beat(self) -> None:
        with self._lock:
            held = {job_id: ctx for job_id, (ctx, _q, _t) in self._jobs.items()}
        now, lease_seconds = self.runtime.now(), self.lease_seconds()
        leases = [ctx.lease for ctx in held.values()]
        for job_id in engine.renew(self.runtime.session_factory, leases, lease_seconds, now):
            ctx = held[job_id]
            if not ctx.lost:
                log.warning("worker %s lost the lease on job %s to another worker; stopping it", self.worker_id,
                            ctx.job_uuid)
            ctx.mark_lost()
        details = {"slots": {q: self.limit(q) for q in self.slots}, "running": self.running(),
                   "lease_seconds": lease_seconds, "stopping": self._stopping.is_set()}
        with self.runtime.session() as s:
            row = s.get(WorkerHeartbeat, self.worker_id)
            if row is None:
                row = WorkerHeartbeat(worker_id=self.worker_id, hostname=socket.gethostname(), pid=os.getpid(),
                                      started=self._started)
                s.add(row)
            row.last_seen = now
            row.running_jobs = len(held)
            row.details_json = json.dumps(details)
            s.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.last_seen < now - FORGET_WORKER_AFTER))

    def _forget_self(self) -> None:
        try:
            with self.runtime.session() as s:
                s.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == self.worker_id))
        except Exception:
            log.exception("worker %s: could not remove its heartbeat row", self.worker_id)


def live_workers(session: "Session", now) -> list[WorkerHeartbeat]:
    """Workers that beat within their own lease length (a dead one stops beating)."""
    rows = session.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.worker_id)).all()
    live = []
    for row in rows:
        lease = json.loads(row.details_json or "{}").get("lease_seconds", 60)
        if (now - row.last_seen).total_seconds() <= lease:
            live.append(row)
    return live


def embedded_workers(runtime: "Runtime", count: int) -> list[Worker]:
    """The workers `secstor serve` runs in its own process (``Config.embedded_workers``)."""
    base = runtime.config.worker_id or default_worker_id()
    return [Worker(runtime, base if count == 1 else f"{base}-{i + 1}") for i in range(count)]
