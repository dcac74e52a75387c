"""Test-only job handlers, and the admin command `testRunJob` that submits any job by handler.

Loaded in-process by importing this module, and into `secstor worker` / `secstor serve`
subprocesses with SECSTOR_EXTRA_JOB_MODULES=tests.support.jobs_fixtures.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from secstor.api.context import CallContext
from secstor.api.params import Param
from secstor.api.registry import ADMIN_ONLY, api_command
from secstor.api.results import AsyncResult, ObjectResult
from secstor.domain.errors import InvalidParameter
from secstor.jobs.handlers import JobContext, RetryableJobError, job_handler

EXTRA_MODULES = "tests.support.jobs_fixtures"


@api_command(
    "testRunJob",
    params=[
        Param("handler", required=True, description="job handler name (test.*)"),
        Param("params", description="JSON object of handler parameters"),
        Param("queue", description="job queue (default: default)"),
    ],
    roles=ADMIN_ONLY,
    description="Test only: submits a job for a test handler.",
    is_async=True,
    extension=True,
)
def submit_test_job(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    try:
        params = json.loads(p.get("params", "{}"))
    except ValueError:
        raise InvalidParameter("params must be a JSON object", "params") from None
    return AsyncResult(ctx.submit_job(p["handler"], params, queue=p.get("queue", "default")).uuid)


@job_handler("test.echo")
def echo(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    jctx.progress(procstatus=1, step="echoing")
    return ObjectResult("testjob", {"echo": params.get("value"), "attempt": jctx.attempt})


@job_handler("test.fail")
def fail(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    raise InvalidParameter(params["message"], "value")


@job_handler("test.crash")
def crash(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    raise RuntimeError(params["message"])


@job_handler("test.retry")
def retry(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    """Fails transiently until attempt ``succeed_on`` (never, without it)."""
    if jctx.attempt < params.get("succeed_on", 1 << 30):
        raise RetryableJobError(f"transient failure on attempt {jctx.attempt}", delay=params.get("delay"))
    return ObjectResult("testjob", {"attempt": jctx.attempt})


@job_handler("test.until_cancelled")
def until_cancelled(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    """Works in small steps, stopping at the first step after a cancellation request."""
    deadline = time.monotonic() + params.get("seconds", 30)
    step = 0
    while time.monotonic() < deadline:
        jctx.raise_if_cancelled()
        step += 1
        jctx.progress(step=step)
        time.sleep(0.05)
    return ObjectResult("testjob", {"steps": step})


def chunk_bytes(index: int, size: int) -> bytes:
    """The deterministic content of chunk ``index``, so a test can check the whole file."""
    seed = hashlib.sha256(str(index).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


@job_handler("test.chunks")
def chunks(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    """Writes ``chunks`` chunks into ``path``, checkpointing after each one, so a later attempt
    resumes after the last checkpointed chunk (rewriting an unrecorded one is harmless)."""
    path, count, size = Path(params["path"]), params["chunks"], params["chunk_size"]
    start = (jctx.checkpoint or {}).get("next", 0)
    with open(path.with_suffix(".attempts"), "a") as log:
        log.write(f"{jctx.attempt} {start}\n")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+b") as fh:
        for i in range(start, count):
            fh.seek(i * size)
            fh.write(chunk_bytes(i, size))
            fh.flush()
            os.fsync(fh.fileno())
            jctx.save_checkpoint({"next": i + 1})
            jctx.progress(procstatus=100 * (i + 1) // count, chunksdone=i + 1, chunkstotal=count)
            time.sleep(params.get("delay", 0))
    return ObjectResult("testjob", {"path": str(path), "chunks": count, "resumedfrom": start,
                                    "attempt": jctx.attempt})


# Concurrency seen by test.concurrent, per key (in-process workers only).
_running_lock = threading.Lock()
_running: dict[str, dict[str, int]] = {}


def concurrency(key: str) -> dict[str, int]:
    with _running_lock:
        return dict(_running.get(key, {"now": 0, "max": 0, "done": 0}))


@job_handler("test.concurrent")
def concurrent(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    key = params["key"]
    with _running_lock:
        seen = _running.setdefault(key, {"now": 0, "max": 0, "done": 0})
        seen["now"] += 1
        seen["max"] = max(seen["max"], seen["now"])
    try:
        time.sleep(params["seconds"])
    finally:
        with _running_lock:
            seen["now"] -= 1
            seen["done"] += 1
    return ObjectResult("testjob", {"key": key})
