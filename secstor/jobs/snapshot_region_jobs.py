"""Job handler of copySnapshot: make a snapshot usable in other zones (secstor.services.snapshot_region)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from secstor.api.results import ObjectResult
from secstor.jobs.handlers import JobContext, job_handler, on_job_failed
from secstor.jobs.snapshot_jobs import snapshot_result
from secstor.services import snapshot_region as region

if TYPE_CHECKING:
    from secstor.runtime import Runtime


@job_handler(region.COPY_HANDLER)
def copy_snapshot(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    copied, lock = [0], threading.Lock()

    def on_bytes(n: int) -> None:  # called by the mover's parallel file copies
        with lock:
            copied[0] += n
            done = copied[0]
        jctx.progress(bytesdone=done)

    region.copy_snapshot(jctx.runtime, jctx.job_id, params["snapshot_id"], on_bytes, lambda: jctx.lost, jctx.log)
    return snapshot_result(jctx, params["snapshot_id"])


@on_job_failed(region.COPY_HANDLER)
def copy_snapshot_failed(runtime: "Runtime", job_id: int, params: dict[str, Any], reason: str) -> None:
    region.copy_failed(runtime, job_id)
