"""Job handlers of the migration commands: plan once (checkpointed), then move, resumably."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secstor.api.format import drop_none
from secstor.api.results import ObjectResult
from secstor.db.models import ImageStore
from secstor.domain import migration as plan_mod
from secstor.domain.errors import OperationFailed
from secstor.jobs.handlers import JobContext, job_handler, on_job_failed
from secstor.services import migration as mig

if TYPE_CHECKING:
    from secstor.runtime import Runtime

# Plans that end the run before anything moves: their message is the whole answer.
_NOTHING_TO_DO = (plan_mod.SYSTEM_BALANCED,)


def _answer(policy: str | None, body: dict[str, Any]) -> ObjectResult:
    return ObjectResult("imagestore", drop_none({**body, "migrationtype": policy}))


def _stores(jctx: JobContext, params: dict[str, Any]) -> tuple[ImageStore, list[ImageStore]]:
    """Source and valid destinations, validated again now (they may have changed since the call)."""
    with jctx.session() as s:
        src = mig.source_store(s, params["srcpool"])
        dests = mig.valid_destinations(s, src, params["destpools"])
        return src, dests


def _plan(jctx: JobContext, params: dict[str, Any], *, moving: bool) -> mig.MovePlan:
    """A fresh capacity scan, then the plan. ``moving``: Complete checks every object is settled
    and makes the source read-only first (it stays so), as CloudStack does."""
    src, dests = _stores(jctx, params)
    mig.refresh_capacities(jctx.runtime, [src.id, *(d.id for d in dests)])
    policy = params.get("policy")
    with jctx.session() as s:
        src, dests = s.get(ImageStore, src.id), [s.get(ImageStore, d.id) for d in dests]
        only = None
        if params.get("objects") is not None:
            only = mig.targeted_objects(s, src, params["objects"])
        elif policy == "COMPLETE":
            unsettled = [n for kind in mig.KINDS.values() for n in kind.unsettled_on_store(s, src.id)]
            if unsettled and moving:
                raise OperationFailed(mig.NOT_READY)
            if moving and not src.readonly:
                src.readonly = True
                jctx.log.info("image store %s (%s) set read-only: Complete migration drains it", src.name, src.uuid)
        mp = mig.make_plan(s, jctx.runtime, policy, src, dests, only)
        s.expunge_all()
    return mp


def _move(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    policy = params.get("policy")
    checkpoint = jctx.checkpoint
    if checkpoint is None:
        jctx.raise_if_cancelled()  # cancelled before it started: nothing planned, nothing to undo
        with jctx.session() as s:
            busy = mig.earlier_migration_running(s, jctx.job_id)
        if busy:
            return _answer(policy, mig.result_body(policy, mig.IN_PROGRESS, False))
        mp = _plan(jctx, params, moving=True)
        checkpoint = mig.checkpoint_of(mp)
        jctx.save_checkpoint(checkpoint)
        jctx.log.info("migration planned: %d objects, %d bytes to move (imbalance %.4f -> %.4f): %s",
                      len(mp.moves), mp.plan.bytes_moved, mp.plan.imbalance_before, mp.plan.imbalance_after,
                      mp.plan.message)
    if not checkpoint["moves"] and checkpoint["message"] != plan_mod.COMPLETE_MIGRATION_FAILED:
        return _answer(policy, mig.result_body(policy, checkpoint["message"], checkpoint["success"],
                                               checkpoint["notmoved"]))
    return _answer(policy, mig.run_moves(jctx, policy, checkpoint))


@job_handler(mig.DATA_HANDLER)
def migrate_data(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    return _move(jctx, params)


@job_handler(mig.RESOURCES_HANDLER)
def migrate_resources(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    return _move(jctx, params)


@job_handler(mig.PLAN_HANDLER)
def plan_migration(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    """dryrun=true: the plan, with nothing moved and nothing changed (not even read-only)."""
    mp = _plan(jctx, params, moving=False)
    with jctx.session() as s:
        body = mig.plan_response(s, mp)
        if params.get("policy") == "COMPLETE" and params.get("objects") is None:
            src_id = mig.source_store(s, params["srcpool"]).id
            if any(kind.unsettled_on_store(s, src_id) for kind in mig.KINDS.values()):
                body.update(success=False, message=mig.NOT_READY)
    return _answer(params.get("policy"), body)


def _settle(runtime: "Runtime", job_id: int, params: dict[str, Any], reason: str) -> None:
    mig.unwind(runtime, job_id)


on_job_failed(mig.DATA_HANDLER)(_settle)
on_job_failed(mig.RESOURCES_HANDLER)(_settle)
