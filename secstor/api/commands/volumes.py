"""Volumes on primary storage: createVolume, listVolumes, deleteVolume, resizeVolume."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from secstor.api.commands.disk_offerings import size_from_offering
from secstor.api.context import CallContext
from secstor.api.params import Param, PType
from secstor.api.registry import ALL_ROLES, api_command
from secstor.api.results import AsyncResult, ListResult, SuccessResult
from secstor.db.models import VirtualMachine, Volume, Zone
from secstor.domain.errors import InvalidParameter
from secstor.domain.volumes import RESIZE_REFUSAL, VolumeEvent, VolumeState, gib_to_bytes
from secstor.services import volumes as vols


def find_volume(ctx: CallContext, uuid: str, param: str = "id") -> Volume:
    volume = ctx.get_by_uuid(Volume, uuid, param, what="volume")
    if volume.state in vols.GONE_STATES:
        raise InvalidParameter(f"Unable to find volume with specified {param} {uuid}", param)
    ctx.check_owner(volume.account_id)
    return volume


def volume_response(ctx: CallContext, volume: Volume) -> dict[str, Any]:
    return vols.volume_responses(ctx.db, [volume], admin=ctx.caller.is_admin)[0]


@api_command(
    "createVolume",
    params=[
        Param("name", description="the name of the disk volume (default: the volume's id)"),
        Param("zoneid", PType.UUID, description="the ID of the availability zone"),
        Param("size", PType.LONG, description="size of the volume in GiB"),
        Param("diskofferingid", PType.UUID, description="the disk offering giving the size (a customized one takes size)"),
        Param("snapshotid", PType.UUID, description="the snapshot to create the volume from (size and zone follow it)"),
        Param("displayvolume", PType.BOOLEAN, description="accepted for compatibility"),
    ],
    roles=ALL_ROLES,
    is_async=True,
    description="Creates a data disk volume of the given size: an empty sparse raw file (or qcow2 image, per the "
                "pool's format) on a primary storage pool of the zone. The volume is Ready when the job ends.",
    response_object="volume",
)
def create_volume(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    if "snapshotid" in p:
        from secstor.api.commands.snapshots import create_volume_from_snapshot

        return create_volume_from_snapshot(ctx, p)
    if "zoneid" not in p:
        raise InvalidParameter("Unable to execute API command createvolume due to missing parameter zoneid",
                               "zoneid")
    size = size_from_offering(ctx, p, "createvolume")
    zone = ctx.get_by_uuid(Zone, p["zoneid"], "zoneid", what="zone")
    pool = vols.choose_pool(ctx.db, zone, size)
    volume = vols.new_volume(ctx.db, name=p.get("name") or "", account_id=ctx.caller.account_id, zone=zone,
                             pool=pool, size=size, volume_type="DATADISK", template_id=None, now=ctx.now)
    volume.name = volume.name.strip() or volume.uuid
    job = ctx.submit_job(vols.CREATE_HANDLER, {"volume_id": volume.id, "caller_is_admin": ctx.caller.is_admin},
                         instance_type="Volume", instance_id=volume.uuid)
    return AsyncResult(job.uuid, volume.uuid)


@api_command(
    "listVolumes",
    params=[
        Param("id", PType.UUID, description="the ID of the disk volume"),
        Param("name", description="the name of the disk volume"),
        Param("zoneid", PType.UUID, description="the ID of the availability zone"),
        Param("type", description="the type of disk volume: ROOT or DATADISK"),
        Param("virtualmachineid", PType.UUID, description="the ID of the virtual machine"),
        Param("state", description="state of the volume"),
        Param("listall", PType.BOOLEAN, description="accepted for compatibility (admins see every account's)"),
    ],
    roles=ALL_ROLES,
    description="Lists volumes: a User sees its own; admins see every account's and, in path, the file "
                "<pool path>/<path>.",
    is_list=True,
    response_object="volume",
)
def list_volumes(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    stmt = vols.visible_volumes(select(Volume), ctx.caller).order_by(Volume.id)
    if "id" in p:
        stmt = stmt.where(Volume.uuid == p["id"])
    if "name" in p:
        stmt = stmt.where(Volume.name == p["name"])
    if "zoneid" in p:
        stmt = stmt.where(Volume.zone_id == ctx.get_by_uuid(Zone, p["zoneid"], "zoneid", what="zone").id)
    if "type" in p:
        stmt = stmt.where(Volume.volume_type == p["type"].upper())
    if "virtualmachineid" in p:
        vm = ctx.get_by_uuid(VirtualMachine, p["virtualmachineid"], "virtualmachineid", what="virtual machine")
        stmt = stmt.where(Volume.vm_id == vm.id)
    if "state" in p:
        stmt = stmt.where(Volume.state == p["state"])
    if "keyword" in p:
        stmt = stmt.where(Volume.name.contains(p["keyword"]))
    rows, total = ctx.page(p, stmt)
    return ListResult("volume", vols.volume_responses(ctx.db, rows, admin=ctx.caller.is_admin), total)


@api_command(
    "deleteVolume",
    params=[Param("id", PType.UUID, required=True, description="The ID of the disk volume")],
    roles=ALL_ROLES,
    description="Deletes a detached volume and its file.",
)
def delete_volume(ctx: CallContext, p: dict[str, Any]) -> SuccessResult:
    volume = find_volume(ctx, p["id"])
    if volume.vm_id is not None:
        raise InvalidParameter("Please specify a volume that is not attached to any VM.", "id")
    if not vols.VOLUME.can(volume.state, VolumeEvent.DestroyRequested) and volume.state != VolumeState.Destroy.value:
        raise InvalidParameter(f"Volume {volume.uuid} is in state {volume.state} and cannot be deleted now", "id")
    vols.expunge(ctx.db, volume, ctx.now)
    return SuccessResult()


@api_command(
    "resizeVolume",
    params=[
        Param("id", PType.UUID, required=True, description="the ID of the disk volume"),
        Param("size", PType.LONG, description="New volume size in GiB"),
        Param("shrinkok", PType.BOOLEAN, description="Verify OK to Shrink"),
        Param("diskofferingid", PType.UUID, description="the disk offering giving the size (a customized one takes size)"),
    ],
    roles=ALL_ROLES,
    is_async=True,
    description="Resizes a volume's file (sparse raw: truncate; qcow2: qemu-img resize). Shrinking needs "
                "shrinkok=true and discards the data past the new end.",
    response_object="volume",
)
def resize_volume(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    volume = find_volume(ctx, p["id"])
    if volume.state not in (VolumeState.Ready.value, VolumeState.Allocated.value):
        raise InvalidParameter(RESIZE_REFUSAL, "id")
    size = size_from_offering(ctx, p, "resizevolume")
    if size == volume.size:
        raise InvalidParameter(f"The new size of volume {volume.uuid} equals its current size", "size")
    if size < volume.size and not p.get("shrinkok"):
        raise InvalidParameter(f"Going from existing size of {volume.size} to size of {size} would shrink the "
                               f"volume. Need to sign off by supplying the shrinkok parameter with value of true.",
                               "shrinkok")
    if volume.state == VolumeState.Allocated.value:
        volume.size = size  # no file yet: it is made at the new size
    else:
        vols.transition(volume, VolumeEvent.ResizeRequested, ctx.now)
    job = ctx.submit_job(vols.RESIZE_HANDLER, {"volume_id": volume.id, "size": size,
                                               "caller_is_admin": ctx.caller.is_admin},
                         instance_type="Volume", instance_id=volume.uuid)
    return AsyncResult(job.uuid)
