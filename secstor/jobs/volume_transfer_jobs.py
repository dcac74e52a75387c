"""Job handlers of volumes moved through image stores: uploadVolume's download, extractVolume."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secstor.api.results import ObjectResult, SuccessResult
from secstor.db.models import Volume
from secstor.jobs.handlers import JobContext, job_handler, on_job_failed
from secstor.services import volume_transfers as vt
from secstor.services import volumes as vols

if TYPE_CHECKING:
    from secstor.runtime import Runtime


@job_handler(vt.UPLOAD_HANDLER)
def upload_volume(jctx: JobContext, params: dict[str, Any]) -> ObjectResult | SuccessResult:
    volume_id = vt.download_volume(jctx.runtime, params["ref_id"], lambda pct: jctx.progress(uploadpercent=pct),
                                   jctx.log)
    if volume_id is None:
        return SuccessResult("the volume was deleted before it was uploaded")
    with jctx.session() as s:
        volume = s.get(Volume, volume_id)
        return ObjectResult("volume", vols.volume_responses(s, [volume], admin=params["caller_is_admin"])[0])


@on_job_failed(vt.UPLOAD_HANDLER)
def upload_volume_failed(runtime: "Runtime", job_id: int, params: dict[str, Any], reason: str) -> None:
    vt.download_failed_for_good(runtime, params["ref_id"], reason)


@job_handler(vt.EXTRACT_HANDLER)
def extract_volume(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    return ObjectResult("volume", vt.extract(jctx.runtime, params["volume_id"], params["base_url"], jctx.log))
