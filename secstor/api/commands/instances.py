"""Minimal instances on the Simulator hypervisor (which holds state only): deployVirtualMachine,
startVirtualMachine, stopVirtualMachine, destroyVirtualMachine, listVirtualMachines, attachVolume,
detachVolume."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from secstor.api.commands.volumes import find_volume
from secstor.api.context import CallContext
from secstor.api.params import Param, PType
from secstor.api.registry import ALL_ROLES, api_command
from secstor.api.results import AsyncResult, ListResult
from secstor.db.models import VirtualMachine, VMTemplate, Zone
from secstor.domain.errors import InvalidParameter
from secstor.domain.volumes import GIB, VmEvent, VmState, VolumeEvent, VolumeState
from secstor.hypervisor import DEFAULT as DEFAULT_HYPERVISOR
from secstor.services import instances as inst
from secstor.services import volumes as vols


def find_vm(ctx: CallContext, uuid: str, param: str = "id") -> VirtualMachine:
    vm = ctx.get_by_uuid(VirtualMachine, uuid, param, what="virtual machine")
    ctx.check_owner(vm.account_id)
    return vm


def _action(ctx: CallContext, vm: VirtualMachine, action: str, **params: Any) -> AsyncResult:
    job = ctx.submit_job(inst.ACTION_HANDLER, {"action": action, "vm_id": vm.id,
                                               "caller_is_admin": ctx.caller.is_admin, **params},
                         instance_type="VirtualMachine", instance_id=vm.uuid)
    return AsyncResult(job.uuid)


@api_command(
    "deployVirtualMachine",
    params=[
        Param("templateid", PType.UUID, required=True, description="the ID of the template for the instance"),
        Param("zoneid", PType.UUID, required=True, description="availability zone for the instance"),
        Param("name", description="host name for the instance (default: its id)"),
        Param("displayname", description="an optional user generated name for the instance"),
        Param("serviceofferingid", PType.UUID, description="accepted and ignored: the Simulator has no CPU or "
                                                           "memory to size"),
        Param("rootdisksize", PType.LONG, description="the ROOT disk size in GiB (default: the template's size; "
                                                      "never smaller)"),
        Param("startvm", PType.BOOLEAN, description="true by default; false leaves the instance Stopped"),
        Param("hypervisor", description="the hypervisor: only Simulator"),
    ],
    roles=ALL_ROLES,
    is_async=True,
    description="Creates an instance on the Simulator hypervisor (which holds state only) with a ROOT volume "
                "cloned from the template's copy cached on a primary storage pool, and starts it.",
    response_object="virtualmachine",
)
def deploy_virtual_machine(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    if p.get("hypervisor", DEFAULT_HYPERVISOR) != DEFAULT_HYPERVISOR:
        raise InvalidParameter(f"Hypervisor {p['hypervisor']} is not supported; use {DEFAULT_HYPERVISOR}",
                               "hypervisor")
    zone = ctx.get_by_uuid(Zone, p["zoneid"], "zoneid", what="zone")
    template = ctx.get_by_uuid(VMTemplate, p["templateid"], "templateid", what="template")
    if not inst.usable_template(ctx.db, ctx.caller, template):
        raise InvalidParameter(f"Unable to find template with specified templateid {template.uuid}", "templateid")
    if template.is_iso or template.format not in vols.DEPLOYABLE_FORMATS:
        raise InvalidParameter(f"Template {template.name} has format {template.format}; instances are deployed "
                               f"from {' or '.join(vols.DEPLOYABLE_FORMATS)} templates", "templateid")
    ref = vols.ready_template_copy_in_zone(ctx.db, template, zone)
    if ref is None:
        raise InvalidParameter(f"Template {template.name} has not been completely downloaded to zone {zone.name}",
                               "templateid")
    size = ref.size or template.size or 0
    if "rootdisksize" in p:
        wanted = p["rootdisksize"] * GIB
        if p["rootdisksize"] <= 0 or wanted < size:
            raise InvalidParameter(f"rootdisksize must be at least the template's size ({size} bytes)",
                                   "rootdisksize")
        size = wanted
    pool = vols.choose_pool(ctx.db, zone, size, template.id)
    start = p.get("startvm", True)
    vm = VirtualMachine(name=(p.get("name") or "").strip() or "", display_name=p.get("displayname"),
                        account_id=ctx.caller.account_id, zone_id=zone.id, template_id=template.id,
                        hypervisor=DEFAULT_HYPERVISOR, state=VmState.Stopped.value, created=ctx.now, updated=ctx.now)
    ctx.db.add(vm)
    ctx.db.flush()
    vm.name = vm.name or f"VM-{vm.uuid}"
    if start:
        inst.transition(vm, VmEvent.StartRequested, ctx.now)
    root = vols.new_volume(ctx.db, name=f"ROOT-{vm.id}", account_id=vm.account_id, zone=zone, pool=pool, size=size,
                           volume_type="ROOT", template_id=template.id, now=ctx.now)
    root.vm_id, root.device_id = vm.id, inst.ROOT_DEVICE
    job = ctx.submit_job(inst.DEPLOY_HANDLER, {"vm_id": vm.id, "caller_is_admin": ctx.caller.is_admin},
                         instance_type="VirtualMachine", instance_id=vm.uuid)
    return AsyncResult(job.uuid, vm.uuid)


@api_command(
    "listVirtualMachines",
    params=[
        Param("id", PType.UUID, description="the ID of the virtual machine"),
        Param("name", description="name of the virtual machine"),
        Param("state", description="state of the virtual machine"),
        Param("zoneid", PType.UUID, description="the availability zone ID"),
        Param("templateid", PType.UUID, description="list instances by template"),
        Param("listall", PType.BOOLEAN, description="accepted for compatibility (admins see every account's)"),
    ],
    roles=ALL_ROLES,
    description="Lists instances: a User sees its own, without destroyed ones.",
    is_list=True,
    response_object="virtualmachine",
)
def list_virtual_machines(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    stmt = select(VirtualMachine).where(VirtualMachine.removed.is_(None)).order_by(VirtualMachine.id)
    if not ctx.caller.is_admin:
        stmt = stmt.where(VirtualMachine.account_id == ctx.caller.account_id,
                          VirtualMachine.state != VmState.Destroyed.value)
    if "id" in p:
        stmt = stmt.where(VirtualMachine.uuid == p["id"])
    if "name" in p:
        stmt = stmt.where(VirtualMachine.name == p["name"])
    if "state" in p:
        stmt = stmt.where(VirtualMachine.state == p["state"])
    if "zoneid" in p:
        stmt = stmt.where(VirtualMachine.zone_id == ctx.get_by_uuid(Zone, p["zoneid"], "zoneid", what="zone").id)
    if "templateid" in p:
        template = ctx.get_by_uuid(VMTemplate, p["templateid"], "templateid", what="template")
        stmt = stmt.where(VirtualMachine.template_id == template.id)
    if "keyword" in p:
        stmt = stmt.where(VirtualMachine.name.contains(p["keyword"]))
    rows, total = ctx.page(p, stmt)
    return ListResult("virtualmachine", inst.vm_responses(ctx.db, rows, admin=ctx.caller.is_admin), total)


@api_command(
    "startVirtualMachine",
    params=[Param("id", PType.UUID, required=True, description="The ID of the virtual machine")],
    roles=ALL_ROLES,
    is_async=True,
    description="Starts a stopped instance (on the Simulator: records it as Running).",
    response_object="virtualmachine",
)
def start_virtual_machine(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    vm = find_vm(ctx, p["id"])
    if vm.state == VmState.Running.value:
        raise InvalidParameter(f"Virtual machine {vm.name} is already running", "id")
    if not inst.VM.can(vm.state, VmEvent.StartRequested):
        raise InvalidParameter(f"Virtual machine {vm.name} is in state {vm.state} and cannot be started", "id")
    not_ready = [v.name for v in inst.attached_volumes(ctx.db, vm) if v.state != "Ready"]
    if not_ready:
        raise InvalidParameter(f"Virtual machine {vm.name} cannot start: volumes not Ready: {', '.join(not_ready)}",
                               "id")
    inst.transition(vm, VmEvent.StartRequested, ctx.now)
    return _action(ctx, vm, "start")


@api_command(
    "stopVirtualMachine",
    params=[
        Param("id", PType.UUID, required=True, description="The ID of the virtual machine"),
        Param("forced", PType.BOOLEAN, description="Force stop the VM"),
    ],
    roles=ALL_ROLES,
    is_async=True,
    description="Stops a running instance; stopping a stopped one succeeds and changes nothing.",
    response_object="virtualmachine",
)
def stop_virtual_machine(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    vm = find_vm(ctx, p["id"])
    if vm.state == VmState.Running.value:
        inst.transition(vm, VmEvent.StopRequested, ctx.now)
    elif vm.state != VmState.Stopped.value:
        raise InvalidParameter(f"Virtual machine {vm.name} is in state {vm.state} and cannot be stopped", "id")
    return _action(ctx, vm, "stop", forced=bool(p.get("forced")))


@api_command(
    "destroyVirtualMachine",
    params=[
        Param("id", PType.UUID, required=True, description="The ID of the virtual machine"),
        Param("expunge", PType.BOOLEAN, description="true: remove the instance and delete its ROOT volume at once "
                                                    "(data disks are detached and kept)"),
    ],
    roles=ALL_ROLES,
    is_async=True,
    description="Destroys an instance (stopping it first). Without expunge it stays listed to admins as "
                "Destroyed with its ROOT volume in state Destroy.",
    response_object="virtualmachine",
)
def destroy_virtual_machine(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    vm = find_vm(ctx, p["id"])
    expunge = bool(p.get("expunge"))
    if vm.state == VmState.Destroyed.value and not expunge:
        raise InvalidParameter(f"Virtual machine {vm.name} is already destroyed", "id")
    if vm.state == VmState.Running.value:
        inst.transition(vm, VmEvent.StopRequested, ctx.now)
    elif vm.state not in (VmState.Stopped.value, VmState.Error.value, VmState.Destroyed.value):
        raise InvalidParameter(f"Virtual machine {vm.name} is in state {vm.state} and cannot be destroyed now", "id")
    return _action(ctx, vm, "destroy", expunge=expunge)


@api_command(
    "attachVolume",
    params=[
        Param("id", PType.UUID, required=True, description="the ID of the disk volume"),
        Param("virtualmachineid", PType.UUID, required=True, description="the ID of the virtual machine"),
        Param("deviceid", PType.LONG, description="the device id (default: the next free one)"),
    ],
    roles=ALL_ROLES,
    is_async=True,
    description="Attaches a Ready data volume to a running or stopped instance; an Uploaded volume is first "
                "copied (verified) from its image store to a primary storage pool of its zone.",
    response_object="volume",
)
def attach_volume(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    volume = find_volume(ctx, p["id"])
    vm = find_vm(ctx, p["virtualmachineid"], "virtualmachineid")
    inst.check_can_attach(ctx.db, vm, volume)
    device = p.get("deviceid")
    used = {v.device_id for v in inst.attached_volumes(ctx.db, vm)}
    if device is not None and (device <= 0 or device == inst.CDROM_DEVICE or device in used):
        raise InvalidParameter(f"deviceid {device} is not free on virtual machine {vm.name}", "deviceid")
    volume.vm_id, volume.device_id = vm.id, device or inst.next_device_id(ctx.db, vm)
    volume.updated = ctx.now
    if volume.state == VolumeState.Uploaded.value:  # the attach job copies it to this pool first
        volume.pool_id = vols.choose_pool(ctx.db, ctx.db.get(Zone, volume.zone_id), volume.size).id
        volume.path = vols.volume_path(volume)
        vols.transition(volume, VolumeEvent.CopyRequested, ctx.now)
    return _action(ctx, vm, "attach", volume_id=volume.id)


@api_command(
    "detachVolume",
    params=[Param("id", PType.UUID, required=True, description="the ID of the disk volume")],
    roles=ALL_ROLES,
    is_async=True,
    description="Detaches a data volume from its instance.",
    response_object="volume",
)
def detach_volume(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    volume = find_volume(ctx, p["id"])
    if volume.vm_id is None:
        raise InvalidParameter(f"Volume {volume.uuid} is not attached to any VM", "id")
    if volume.volume_type == "ROOT":
        raise InvalidParameter("Detaching a ROOT volume is not supported", "id")
    vm = ctx.db.get(VirtualMachine, volume.vm_id)
    if vm.state not in (VmState.Running.value, VmState.Stopped.value):
        raise InvalidParameter(f"Please specify a VM that is either running or stopped (VM {vm.uuid} is "
                               f"{vm.state})", "id")
    return _action(ctx, vm, "detach", volume_id=volume.id)
