"""Instances: deploy (a ROOT volume cloned from a template), start, stop, destroy, attach, detach.

The API call checks the request and records the transitional state (Starting, Stopping, the
attachment); the job asks the hypervisor and records the outcome; a job that fails for good
puts the previous state back (``action_failed``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from secstor.api.format import cs_date, drop_none
from secstor.db.models import Account, LaunchPermission, StoragePool, VirtualMachine, VMTemplate, Volume, Zone
from secstor.domain.errors import InvalidParameter, OperationFailed
from secstor.domain.volumes import VM, VmEvent, VmState, VolumeState
from secstor.hypervisor import for_name
from secstor.hypervisor.base import DiskSpec, HypervisorError, InstanceSpec
from secstor.services import volume_transfers as vt
from secstor.services import volumes as vols

if TYPE_CHECKING:
    from secstor.api.context import Caller
    from secstor.runtime import Runtime

log = logging.getLogger("secstor.instances")

DEPLOY_HANDLER = "vm.deploy"
ACTION_HANDLER = "vm.action"
ROOT_DEVICE = 0
CDROM_DEVICE = 3  # CloudStack keeps device 3 for the CD-ROM; data disks skip it


def transition(vm: VirtualMachine, event: VmEvent, now) -> None:
    vm.state = VM.next_state(vm.state, event)
    vm.updated = now


def usable_template(session: Session, caller: "Caller", template: VMTemplate) -> bool:
    """Whether the caller may deploy from the template: admins, owners, public templates and
    those shared with the caller's account."""
    if caller.is_admin or template.is_public or template.account_id == caller.account_id:
        return True
    return session.scalars(select(LaunchPermission).where(LaunchPermission.template_id == template.id,
                                                          LaunchPermission.account_id == caller.account_id)
                           ).first() is not None


def root_volume(session: Session, vm: VirtualMachine) -> Volume | None:
    return session.scalars(select(Volume).where(Volume.vm_id == vm.id, Volume.volume_type == "ROOT",
                                                Volume.removed.is_(None))).first()


def attached_volumes(session: Session, vm: VirtualMachine) -> list[Volume]:
    return list(session.scalars(select(Volume).where(Volume.vm_id == vm.id, Volume.removed.is_(None))
                                .order_by(Volume.device_id)))


def next_device_id(session: Session, vm: VirtualMachine) -> int:
    used = {v.device_id for v in attached_volumes(session, vm)}
    device = 1
    while device in used or device == CDROM_DEVICE:
        device += 1
    return device


def _spec(session: Session, vm: VirtualMachine) -> InstanceSpec:
    return InstanceSpec(vm.uuid, vm.name, tuple(_disk(session, v) for v in attached_volumes(session, vm)))


def _disk(session: Session, volume: Volume) -> DiskSpec:
    pool = session.get(StoragePool, volume.pool_id) if volume.pool_id else None
    file = f"{pool.path}/{volume.path}" if pool and volume.path else ""
    return DiskSpec(volume.uuid, file, volume.format, volume.device_id or 0)


def vm_responses(session: Session, vms: list[VirtualMachine], *, admin: bool) -> list[dict[str, Any]]:
    out = []
    for vm in vms:
        account = session.get(Account, vm.account_id)
        zone = session.get(Zone, vm.zone_id)
        template = session.get(VMTemplate, vm.template_id)
        out.append(drop_none({
            "id": vm.uuid,
            "name": vm.name,
            "displayname": vm.display_name or vm.name,
            "state": vm.state,
            "zoneid": zone.uuid,
            "zonename": zone.name,
            "templateid": template.uuid,
            "templatename": template.name,
            "templatedisplaytext": template.displaytext,
            "hypervisor": vm.hypervisor,
            "account": account.name,
            "domainid": account.domain.uuid,
            "domain": account.domain.name,
            "created": cs_date(vm.created),
            "haenable": False,
            "isdynamicallyscalable": False,
        }))
    return out


# ---- deploy --------------------------------------------------------------------------------------

def deploy(runtime: "Runtime", vm_id: int, job_log) -> None:
    """Job body of deployVirtualMachine: the ROOT volume's file, then the start if asked for."""
    with runtime.session() as s:
        root = root_volume(s, s.get(VirtualMachine, vm_id))
        root_id = root.id
    vols.create_content(runtime, root_id, job_log)
    with runtime.session() as s:
        vm = s.get(VirtualMachine, vm_id)
        if vm.state != VmState.Starting.value:
            return
        spec, hypervisor = _spec(s, vm), vm.hypervisor
    _call(hypervisor, "start", spec)
    with runtime.session() as s:
        transition(s.get(VirtualMachine, vm_id), VmEvent.OperationSucceeded, runtime.now())
    job_log.info("instance %s deployed and running", spec.uuid)


def deploy_failed(runtime: "Runtime", vm_id: int, reason: str) -> None:
    with runtime.session() as s:
        vm = s.get(VirtualMachine, vm_id)
        root = root_volume(s, vm)
        root_id = root.id if root else None
        if vm.state == VmState.Starting.value:
            transition(vm, VmEvent.OperationFailedToError, runtime.now())
        vm.error_text = reason
    if root_id is not None:
        vols.creation_failed(runtime, root_id, reason)


def _call(hypervisor: str, op: str, *args: Any) -> None:
    try:
        getattr(for_name(hypervisor), op)(*args)
    except HypervisorError as exc:
        raise OperationFailed(f"{op} failed on the {hypervisor} hypervisor: {exc}") from None


# ---- start / stop / destroy / attach / detach ----------------------------------------------------

def run_action(runtime: "Runtime", params: dict[str, Any], job_log) -> None:
    """Job body of the instance actions; the API call already moved the instance into the
    action's transitional state (or recorded the attachment)."""
    action, vm_id = params["action"], params["vm_id"]
    with runtime.session() as s:
        vm = s.get(VirtualMachine, vm_id)
        spec, hypervisor = _spec(s, vm), vm.hypervisor
        disk = _disk(s, s.get(Volume, params["volume_id"])) if "volume_id" in params else None
        state = vm.state
    running = state == VmState.Running.value
    if action == "start":
        _call(hypervisor, "start", spec)
        _finish(runtime, vm_id, VmState.Starting, VmEvent.OperationSucceeded)
    elif action == "stop":
        _call(hypervisor, "stop", spec, bool(params.get("forced")))
        _finish(runtime, vm_id, VmState.Stopping, VmEvent.OperationSucceeded)
    elif action == "destroy":
        if state == VmState.Stopping.value:
            _call(hypervisor, "stop", spec, True)
            _finish(runtime, vm_id, VmState.Stopping, VmEvent.OperationSucceeded)
        _destroy(runtime, vm_id, bool(params.get("expunge")))
    elif action == "attach":
        vt.copy_to_pool(runtime, params["volume_id"], job_log)  # an Uploaded volume reaches primary first
        if running:
            _call(hypervisor, "attach", spec, disk)
    elif action == "detach":
        if running:
            _call(hypervisor, "detach", spec, disk)
        with runtime.session() as s:
            volume = s.get(Volume, params["volume_id"])
            volume.vm_id = volume.device_id = None
            volume.updated = runtime.now()
    job_log.info("instance %s: %s done", spec.uuid, action)


def _finish(runtime: "Runtime", vm_id: int, expected: VmState, event: VmEvent) -> None:
    with runtime.session() as s:
        vm = s.get(VirtualMachine, vm_id)
        if vm.state == expected.value:
            transition(vm, event, runtime.now())


def _destroy(runtime: "Runtime", vm_id: int, expunge: bool) -> None:
    with runtime.session() as s:
        vm = s.get(VirtualMachine, vm_id)
        now = runtime.now()
        if vm.state in (VmState.Stopped.value, VmState.Error.value):
            transition(vm, VmEvent.DestroyRequested, now)
        root = root_volume(s, vm)
        if root is not None and root.state != VolumeState.Destroy.value:
            vols.transition(root, vols.VolumeEvent.DestroyRequested, now)
        if not expunge:
            return
        transition(vm, VmEvent.ExpungeOperation, now)
        for volume in attached_volumes(s, vm):
            if volume.volume_type == "ROOT":
                vols.expunge(s, volume, now)
            else:
                volume.vm_id = volume.device_id = None
                volume.updated = now
        vm.removed = now


def action_failed(runtime: "Runtime", params: dict[str, Any], reason: str) -> None:
    """An action's job failed for good: back to the state before the action."""
    with runtime.session() as s:
        vm = s.get(VirtualMachine, params["vm_id"])
        vm.error_text = reason
        if vm.state in (VmState.Starting.value, VmState.Stopping.value):
            transition(vm, VmEvent.OperationFailed, runtime.now())
        if params["action"] == "attach":
            volume = s.get(Volume, params["volume_id"])
            if volume.vm_id == vm.id:
                volume.vm_id = volume.device_id = None
    if params["action"] == "attach":
        vt.copy_to_pool_failed(runtime, params["volume_id"], reason)


def check_can_attach(session: Session, vm: VirtualMachine, volume: Volume) -> None:
    if volume.vm_id is not None:
        other = session.get(VirtualMachine, volume.vm_id)
        raise InvalidParameter(f"Volume {volume.uuid} is already attached to VM {other.name}", "id")
    if volume.state not in (VolumeState.Ready.value, VolumeState.Uploaded.value):
        raise InvalidParameter("Volume state must be in Allocated, Ready or in Uploaded state", "id")
    if vm.state not in (VmState.Running.value, VmState.Stopped.value):
        raise InvalidParameter(f"Please specify a VM that is either running or stopped (VM {vm.uuid} is "
                               f"{vm.state})", "virtualmachineid")
    if volume.zone_id != vm.zone_id:
        raise InvalidParameter("Please specify a VM that is in the same zone as the volume", "virtualmachineid")
    if volume.account_id != vm.account_id:
        raise InvalidParameter("The volume and the VM belong to different accounts", "virtualmachineid")
