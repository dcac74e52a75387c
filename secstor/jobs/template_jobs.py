"""Job handlers of templates and ISOs: the download of one copy, the deletion of copies."""

from __future__ import annotations

from typing import Any

from secstor.api.results import ObjectResult, SuccessResult
from secstor.jobs.handlers import JobContext, job_handler
from secstor.services import templates as svc


@job_handler(svc.DOWNLOAD_HANDLER)
def download_template_copy(jctx: JobContext, params: dict[str, Any]) -> ObjectResult | SuccessResult:
    template = svc.download_copy(jctx.runtime, params["ref_id"], lambda pct: jctx.progress(downloadpercent=pct),
                                 jctx.log)
    if template is None:
        return SuccessResult("the template copy was deleted before it was downloaded")
    with jctx.session() as s:
        body = svc.responses_of(s, s.get(type(template), template.id), is_admin=True)
    object_name = "iso" if template.is_iso else "template"
    return ObjectResult(object_name, body[0] if body else {})


@job_handler(svc.DELETE_HANDLER)
def delete_template(jctx: JobContext, params: dict[str, Any]) -> SuccessResult:
    svc.delete(jctx.runtime, params["template_id"], params.get("zone_id"), jctx.log)
    return SuccessResult()
