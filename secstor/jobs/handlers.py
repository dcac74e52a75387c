"""The job handler registry and the context a handler runs in.

A handler is ``fn(jctx: JobContext, params: dict) -> Result``; its result becomes the job's
``jobresult``. It is registered with ``@job_handler("name")`` in a module listed in
``HANDLER_MODULES`` (or, for tests and plug-ins, in ``$SECSTOR_EXTRA_JOB_MODULES``, a
comma-separated list of importable module names). A job whose worker dies is run again from
the start by another worker, so a handler must be idempotent, and a long one keeps a
checkpoint (``save_checkpoint``) to resume where the last attempt stopped.

How a handler ends decides the job's fate:

- returns a Result: succeeded, jobresult = the result's body;
- raises a SecstorError: failed, ``{"errorcode": e.errorcode, "errortext": e.message}``;
- raises RetryableJobError: back to the queue after a back-off, until ``max_attempts``;
- raises anything else: failed, 530 "Internal error executing job" (traceback in the log).

A handler whose work leaves a visible state behind (a template copy "downloading") registers
``@on_job_failed("name")``: it is called once the job has failed for good, however that came
about (the handler raised, its attempts ran out, or its worker died on the last attempt), so
that state can follow the job instead of staying "in progress" forever.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from secstor.db.models import AsyncJob
from secstor.jobs import engine

if TYPE_CHECKING:
    from secstor.api.results import Result
    from secstor.runtime import Runtime

log = logging.getLogger("secstor.jobs")

# Modules whose import registers the built-in job handlers.
HANDLER_MODULES: list[str] = ["secstor.jobs.template_jobs", "secstor.jobs.template_copy_jobs",
                              "secstor.jobs.volume_jobs", "secstor.jobs.migration_jobs",
                              "secstor.jobs.snapshot_jobs", "secstor.jobs.volume_transfer_jobs",
                              "secstor.jobs.region_jobs",
                              "secstor.jobs.account_jobs", "secstor.jobs.snapshot_region_jobs"]
EXTRA_MODULES_ENV = "SECSTOR_EXTRA_JOB_MODULES"

# Progress is written at most this often; checkpoints are written at once (they must be durable).
PROGRESS_WRITE_SECONDS = 1.0
# How stale the cancellation flag a handler sees may be.
CANCEL_CHECK_SECONDS = 1.0

HandlerFn = Callable[["JobContext", dict[str, Any]], "Result"]
HANDLERS: dict[str, HandlerFn] = {}
# (runtime, job id, params, errortext) -> None
FailureHook = Callable[["Runtime", int, dict[str, Any], str], None]
FAILURE_HOOKS: dict[str, FailureHook] = {}


class RetryableJobError(Exception):
    """A transient failure (store unreachable, database busy ...): run the job again later.

    ``delay`` overrides the engine's exponential back-off (seconds)."""

    def __init__(self, message: str, *, delay: float | None = None):
        super().__init__(message)
        self.message = message
        self.delay = delay


class JobCancelled(Exception):
    """Raised by ``raise_if_cancelled`` once someone asked to cancel the job."""


class LeaseLost(Exception):
    """This worker no longer owns the job (its lease expired and another worker took it over):
    the handler must stop at once and write nothing more."""


def job_handler(name: str) -> Callable[[HandlerFn], HandlerFn]:
    """Register ``fn`` as the handler of jobs whose ``handler`` column is ``name`` (decorator)."""

    def wrap(fn: HandlerFn) -> HandlerFn:
        if name in HANDLERS:
            raise ValueError(f"job handler {name} registered twice")
        HANDLERS[name] = fn
        return fn

    return wrap


def on_job_failed(name: str) -> Callable[[FailureHook], FailureHook]:
    """Register ``fn`` to run when a job of handler ``name`` has failed for good (decorator)."""

    def wrap(fn: FailureHook) -> FailureHook:
        if name in FAILURE_HOOKS:
            raise ValueError(f"failure hook of job handler {name} registered twice")
        FAILURE_HOOKS[name] = fn
        return fn

    return wrap


def run_failure_hook(runtime: "Runtime", job_id: int, handler: str, params_json: str, errortext: str) -> None:
    """Run the failure hook of ``handler``, if it has one. Never raises: the job's outcome is
    already recorded, and a hook that fails is logged, not allowed to kill the worker."""
    hook = FAILURE_HOOKS.get(handler)
    if hook is None:
        return
    try:
        hook(runtime, job_id, json.loads(params_json), errortext)
    except Exception:
        log.exception("failure hook of job %s (handler %s) failed", job_id, handler)


def load_handler_modules() -> dict[str, HandlerFn]:
    """Import the built-in handler modules and those named in $SECSTOR_EXTRA_JOB_MODULES
    (which may also register API commands, e.g. tests' job-submitting commands)."""
    extra = [m.strip() for m in os.environ.get(EXTRA_MODULES_ENV, "").split(",") if m.strip()]
    for module in HANDLER_MODULES + extra:
        importlib.import_module(module)
    return HANDLERS


class _JobLogAdapter(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return f"job {self.extra['job']}: {msg}", kwargs


class JobContext:
    """What a handler may use while it runs. Every write is guarded by the lease: once another
    worker has taken the job over, ``progress``/``save_checkpoint``/``raise_if_cancelled`` raise
    LeaseLost instead of touching the row.

    ``progress``, ``save_checkpoint`` and ``cancelled`` use their own short transactions: call
    them outside ``session()`` blocks (on SQLite they would wait for the handler's own one)."""

    def __init__(self, runtime: "Runtime", job: AsyncJob, lease: engine.Lease, lease_seconds: Callable[[], float]):
        self.runtime = runtime
        self.job_id = job.id
        self.job_uuid = job.uuid
        self.cmd = job.cmd
        self.account_id = job.account_id
        self.user_id = job.user_id
        self.attempt = job.attempts
        self.lease = lease
        self.log = _JobLogAdapter(log, {"job": job.uuid})
        self._lease_seconds = lease_seconds
        self._checkpoint = json.loads(job.checkpoint_json) if job.checkpoint_json else None
        self._progress: dict[str, Any] = json.loads(job.progress_json) if job.progress_json else {}
        self._procstatus = job.jobprocstatus
        self._progress_dirty = False
        self._progress_written = 0.0
        self._cancel = bool(job.cancel_requested)
        self._cancel_checked = time.monotonic()
        self._lost = threading.Event()
        self._lock = threading.Lock()

    def session(self) -> AbstractContextManager[Session]:
        """A short unit of work of the handler's own. Never hold one open while moving data."""
        return self.runtime.session()

    # ---- progress --------------------------------------------------------------------------
    def progress(self, procstatus: int | None = None, **fields: Any) -> None:
        """Record progress (shown by queryAsyncJobResult/listAsyncJobs) and renew the lease.
        Cheap to call per chunk: the row is written at most once a second."""
        with self._lock:
            self._progress.update(fields)
            if procstatus is not None:
                self._procstatus = procstatus
            self._progress_dirty = True
            due = time.monotonic() - self._progress_written >= PROGRESS_WRITE_SECONDS
        if due:
            self.flush_progress()

    def flush_progress(self) -> None:
        self._check_lease()
        with self._lock:
            if not self._progress_dirty:
                return
            body, procstatus = json.dumps(self._progress), self._procstatus
            self._progress_dirty = False
            self._progress_written = time.monotonic()
        self._write(progress_json=body, jobprocstatus=procstatus)

    def pending_progress(self) -> dict[str, Any] | None:
        """Progress not yet written (the worker stores it with the job's outcome)."""
        with self._lock:
            if not self._progress_dirty:
                return None
            return {"progress_json": json.dumps(self._progress), "jobprocstatus": self._procstatus}

    # ---- checkpoint ------------------------------------------------------------------------
    @property
    def checkpoint(self) -> Any:
        """What the last ``save_checkpoint`` stored, in this attempt or an earlier one (None at first)."""
        return self._checkpoint

    def save_checkpoint(self, data: Any) -> None:
        """Durably store JSON-able resume state before moving on; a later attempt starts from it."""
        self._check_lease()
        self._write(checkpoint_json=json.dumps(data))
        self._checkpoint = data

    # ---- cancellation ----------------------------------------------------------------------
    def cancelled(self) -> bool:
        """True once cancellation was requested (or the lease was lost): stop at a safe point."""
        if self._lost.is_set():
            return True
        if not self._cancel and time.monotonic() - self._cancel_checked >= CANCEL_CHECK_SECONDS:
            with self.runtime.session_factory() as s:
                self._cancel = bool(s.scalar(select(AsyncJob.cancel_requested).where(AsyncJob.id == self.job_id)))
            self._cancel_checked = time.monotonic()
        return self._cancel

    def raise_if_cancelled(self) -> None:
        if self.cancelled():
            self._check_lease()
            raise JobCancelled(f"job {self.job_uuid} cancelled")

    # ---- lease -----------------------------------------------------------------------------
    def mark_lost(self) -> None:
        self._lost.set()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def _check_lease(self) -> None:
        if self._lost.is_set():
            raise LeaseLost(f"job {self.job_uuid}: lease taken over by another worker")

    def _write(self, **values: Any) -> None:
        ok = engine.update_owned(self.runtime.session_factory, self.lease, self._lease_seconds(), self.runtime.now(),
                                 **values)
        if not ok:
            self.mark_lost()
            self._check_lease()
