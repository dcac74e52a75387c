"""Job handlers of volumes and instances: a volume's file (blank or cloned from a template),
resize, deploy, and the instance actions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secstor.api.results import ObjectResult, SuccessResult
from secstor.db.models import VirtualMachine, Volume
from secstor.jobs.handlers import JobContext, job_handler, on_job_failed
from secstor.services import instances as inst
from secstor.services import volumes as vols

if TYPE_CHECKING:
    from secstor.runtime import Runtime


def _volume_result(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    with jctx.session() as s:
        volume = s.get(Volume, params["volume_id"])
        return ObjectResult("volume", vols.volume_responses(s, [volume], admin=params["caller_is_admin"])[0])


def _vm_result(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    with jctx.session() as s:
        vm = s.get(VirtualMachine, params["vm_id"])
        return ObjectResult("virtualmachine", inst.vm_responses(s, [vm], admin=params["caller_is_admin"])[0])


@job_handler(vols.CREATE_HANDLER)
def create_volume(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    vols.create_content(jctx.runtime, params["volume_id"], jctx.log)
    return _volume_result(jctx, params)


@on_job_failed(vols.CREATE_HANDLER)
def create_volume_failed(runtime: "Runtime", job_id: int, params: dict[str, Any], reason: str) -> None:
    vols.creation_failed(runtime, params["volume_id"], reason)


@job_handler(vols.RESIZE_HANDLER)
def resize_volume(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    vols.resize_content(jctx.runtime, params["volume_id"], params["size"], jctx.log)
    return _volume_result(jctx, params)


@on_job_failed(vols.RESIZE_HANDLER)
def resize_volume_failed(runtime: "Runtime", job_id: int, params: dict[str, Any], reason: str) -> None:
    vols.resize_failed(runtime, params["volume_id"], reason)


@job_handler(inst.DEPLOY_HANDLER)
def deploy_vm(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    inst.deploy(jctx.runtime, params["vm_id"], jctx.log)
    return _vm_result(jctx, params)


@on_job_failed(inst.DEPLOY_HANDLER)
def deploy_vm_failed(runtime: "Runtime", job_id: int, params: dict[str, Any], reason: str) -> None:
    inst.deploy_failed(runtime, params["vm_id"], reason)


@job_handler(inst.ACTION_HANDLER)
def vm_action(jctx: JobContext, params: dict[str, Any]) -> ObjectResult | SuccessResult:
    inst.run_action(jctx.runtime, params, jctx.log)
    if params["action"] in ("attach", "detach"):
        return _volume_result(jctx, params)
    if params["action"] == "destroy" and params.get("expunge"):
        return SuccessResult()
    return _vm_result(jctx, params)


@on_job_failed(inst.ACTION_HANDLER)
def vm_action_failed(runtime: "Runtime", job_id: int, params: dict[str, Any], reason: str) -> None:
    inst.action_failed(runtime, params, reason)
