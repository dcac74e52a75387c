"""Job handlers of templates and ISOs: the download or store-to-store copy of one copy, the deletion of copies,
extract URLs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secstor.api.results import ObjectResult, SuccessResult
from secstor.jobs.handlers import JobContext, job_handler, on_job_failed
from secstor.services import template_sync as sync
from secstor.services import templates as svc
from secstor.services import transfers

if TYPE_CHECKING:
    from secstor.runtime import Runtime


@job_handler(svc.DOWNLOAD_HANDLER)
def download_template_copy(jctx: JobContext, params: dict[str, Any]) -> ObjectResult | SuccessResult:
    template = svc.download_copy(jctx.runtime, params["ref_id"], lambda pct: jctx.progress(downloadpercent=pct),
                                 jctx.log)
    return _copy_result(jctx, template)


def _copy_result(jctx: JobContext, template) -> ObjectResult | SuccessResult:
    if template is None:
        return SuccessResult("the template copy was deleted before it was downloaded")
    with jctx.session() as s:
        body = svc.responses_of(s, s.get(type(template), template.id), is_admin=True)
    object_name = "iso" if template.is_iso else "template"
    return ObjectResult(object_name, body[0] if body else {})


@job_handler(sync.REPLICATE_HANDLER)
def replicate_template_copy(jctx: JobContext, params: dict[str, Any]) -> ObjectResult | SuccessResult:
    template = sync.replicate_copy(jctx.runtime, params["ref_id"], params["source_ref_id"],
                                   lambda pct: jctx.progress(downloadpercent=pct), jctx.log)
    return _copy_result(jctx, template)


@on_job_failed(svc.DOWNLOAD_HANDLER)
@on_job_failed(sync.REPLICATE_HANDLER)
def download_job_failed(runtime: "Runtime", job_id: int, params: dict[str, Any], reason: str) -> None:
    svc.download_failed_for_good(runtime, job_id, params["ref_id"], reason)


@job_handler(svc.DELETE_HANDLER)
def delete_template(jctx: JobContext, params: dict[str, Any]) -> SuccessResult:
    svc.delete(jctx.runtime, params["template_id"], params.get("zone_id"), jctx.log)
    return SuccessResult()


@job_handler(transfers.EXTRACT_HANDLER)
def extract_template(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    body = transfers.extract(jctx.runtime, params["template_id"], params.get("zone_id"), params["base_url"])
    return ObjectResult(params["object_name"], body)
