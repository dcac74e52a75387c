"""Job handlers of the synchronisation of zone templates up to the region store: a pass that
queues uploads (run when a store joins the region) and the upload of one template."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secstor.api.results import SuccessResult
from secstor.jobs.handlers import JobContext, RetryableJobError, job_handler, on_job_failed
from secstor.services import region_sync
from secstor.services import templates as svc

if TYPE_CHECKING:
    from secstor.runtime import Runtime


@job_handler(region_sync.SYNC_HANDLER)
def sync_pass(jctx: JobContext, params: dict[str, Any]) -> SuccessResult:
    queued = region_sync.sync_to_region(jctx.runtime)
    return SuccessResult(f"{queued} uploads to the region store queued")


@job_handler(region_sync.UPLOAD_HANDLER)
def upload(jctx: JobContext, params: dict[str, Any]) -> SuccessResult:
    try:
        ready = region_sync.upload_copy(jctx.runtime, params["ref_id"], params["source_ref_id"],
                                        lambda pct: jctx.progress(downloadpercent=pct), jctx.log)
    except RetryableJobError:
        raise  # this upload runs again: it keeps its place in the bound
    except Exception:
        _next_uploads(jctx)
        raise
    _next_uploads(jctx)
    return SuccessResult("uploaded to the region store" if ready else "the template was deleted: nothing uploaded")


def _next_uploads(jctx: JobContext) -> None:
    """Keep the bound's worth of uploads going (failed ones wait for the periodic pass)."""
    try:
        region_sync.sync_to_region(jctx.runtime, retry_failed=False, finishing_job=jctx.job_id)
    except Exception:  # the periodic pass queues them instead
        jctx.log.exception("queueing the next uploads to the region store failed")


@on_job_failed(region_sync.UPLOAD_HANDLER)
def upload_failed(runtime: "Runtime", job_id: int, params: dict[str, Any], reason: str) -> None:
    svc.download_failed_for_good(runtime, job_id, params["ref_id"], reason)
