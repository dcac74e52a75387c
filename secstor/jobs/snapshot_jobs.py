"""Job handlers of snapshots: create (copy on primary, backup), delete, revert, a volume or a
template (createTemplate, from a snapshot or a volume) from a snapshot, and the admin GC and
scrub of an image store's snapshot chunks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secstor.api.results import ObjectResult, SuccessResult
from secstor.db.models import Snapshot, Volume
from secstor.jobs.handlers import JobContext, job_handler, on_job_failed
from secstor.services import snapshots as snaps
from secstor.services import template_create
from secstor.services import templates as tsvc
from secstor.services import volumes as vols

if TYPE_CHECKING:
    from secstor.runtime import Runtime


def snapshot_result(jctx: JobContext, snapshot_id: int) -> ObjectResult:
    from secstor.api.commands.snapshots import snapshot_responses

    with jctx.session() as s:
        return ObjectResult("snapshot", snapshot_responses(s, [s.get(Snapshot, snapshot_id)])[0])


def _volume_result(jctx: JobContext, volume_id: int, admin: bool) -> ObjectResult:
    with jctx.session() as s:
        return ObjectResult("volume", vols.volume_responses(s, [s.get(Volume, volume_id)], admin=admin)[0])


@job_handler(snaps.CREATE_HANDLER)
def create_snapshot(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    def progress(stats) -> None:
        jctx.progress(bytesdone=stats.bytes_read, bytestotal=stats.volume_size)

    snapshot_id = params["snapshot_id"]
    snaps.take_snapshot(jctx.runtime, snapshot_id, jctx.log, on_progress=progress)
    with jctx.session() as s:
        policy_id = s.get(Snapshot, snapshot_id).policy_id
    if policy_id is not None:
        snaps.prune_policy(jctx.runtime, policy_id, jctx.log)
    return snapshot_result(jctx, snapshot_id)


@on_job_failed(snaps.CREATE_HANDLER)
def create_snapshot_failed(runtime: "Runtime", job_id: int, params: dict[str, Any], reason: str) -> None:
    snaps.snapshot_failed(runtime, params["snapshot_id"], reason)


@job_handler(snaps.DELETE_HANDLER)
def delete_snapshot(jctx: JobContext, params: dict[str, Any]) -> SuccessResult:
    snaps.delete_snapshot(jctx.runtime, params["snapshot_id"], jctx.log)
    return SuccessResult()


@job_handler(snaps.REVERT_HANDLER)
def revert_snapshot(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    snaps.revert(jctx.runtime, params["snapshot_id"], jctx.log)
    return snapshot_result(jctx, params["snapshot_id"])


@on_job_failed(snaps.REVERT_HANDLER)
def revert_snapshot_failed(runtime: "Runtime", job_id: int, params: dict[str, Any], reason: str) -> None:
    snaps.revert_failed(runtime, params["snapshot_id"], reason)


@job_handler(snaps.VOLUME_HANDLER)
def volume_from_snapshot(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    snaps.create_volume_content(jctx.runtime, params["volume_id"], params["snapshot_id"], jctx.log)
    return _volume_result(jctx, params["volume_id"], params["caller_is_admin"])


@on_job_failed(snaps.VOLUME_HANDLER)
def volume_from_snapshot_failed(runtime: "Runtime", job_id: int, params: dict[str, Any], reason: str) -> None:
    vols.creation_failed(runtime, params["volume_id"], reason)


@job_handler(template_create.CREATE_HANDLER)
def create_template(jctx: JobContext, params: dict[str, Any]) -> ObjectResult | SuccessResult:
    template = template_create.fill_template(
        jctx.runtime, params, lambda pct: jctx.progress(downloadpercent=pct),
        lambda done, total: jctx.progress(bytesdone=done, bytestotal=total), jctx.log)
    if template is None:
        return SuccessResult("the template was deleted before it was made")
    with jctx.session() as s:
        return ObjectResult("template", tsvc.responses_of(s, s.get(type(template), template.id), is_admin=True)[0])


@on_job_failed(template_create.CREATE_HANDLER)
def create_template_failed(runtime: "Runtime", job_id: int, params: dict[str, Any], reason: str) -> None:
    tsvc.download_failed_for_good(runtime, job_id, params["ref_id"], reason)


@job_handler(snaps.GC_HANDLER)
def snapshot_gc(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    totals = snaps.collect_store_garbage(jctx.runtime, params["store_id"])
    return ObjectResult("snapshotgarbagecollection", {"storeid": params["store_uuid"], **totals})


@job_handler(snaps.SCRUB_HANDLER)
def scrub_store(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    report = snaps.scrub_store(jctx.runtime, params["store_id"], repair_damage=params["repair"])
    return ObjectResult("imagestorescrub", {"id": params["store_uuid"], **report})
