"""Job handler of copyTemplate / copyIso: store-to-store copies into other zones."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secstor.api.results import ObjectResult
from secstor.db.models import VMTemplate
from secstor.jobs.handlers import JobContext, job_handler, on_job_failed
from secstor.services import template_copy
from secstor.services import templates as svc

if TYPE_CHECKING:
    from secstor.runtime import Runtime


@job_handler(template_copy.COPY_HANDLER)
def copy_template(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    """Result: the template as listed in the first destination zone (as CloudStack answers)."""
    copied = template_copy.copy_template(
        jctx.runtime, jctx.job_id, params["template_id"], params.get("source_zone_id"), params["dest_zone_ids"],
        jctx.progress, jctx.log)
    with jctx.session() as s:
        template = s.get(VMTemplate, copied.id)
        by_zone = {r.get("zoneid"): r for r in svc.responses_of(s, template, is_admin=params["caller_is_admin"])}
    return ObjectResult("iso" if template.is_iso else "template", by_zone.get(params["dest_zone_uuids"][0], {}))


@on_job_failed(template_copy.COPY_HANDLER)
def copy_job_failed(runtime: "Runtime", job_id: int, params: dict[str, Any], reason: str) -> None:
    template_copy.copy_failed_for_good(runtime, job_id, reason)
