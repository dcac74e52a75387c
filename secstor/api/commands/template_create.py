"""createTemplate: a RAW template from a BackedUp snapshot or from a volume (CloudStack's
CreateTemplateCmd, an async create: the template's id and the job's at once)."""

from __future__ import annotations

from typing import Any

from secstor.api.commands.snapshots import find_snapshot, find_volume, zone_for_use
from secstor.api.context import CallContext
from secstor.api.params import Param, PType
from secstor.api.registry import ALL_ROLES, api_command
from secstor.api.results import AsyncResult
from secstor.db.models import Snapshot, VirtualMachine, VMTemplate, Volume, Zone
from secstor.domain.errors import InvalidParameter
from secstor.domain.states import SnapshotState
from secstor.domain.volumes import VmState, VolumeState
from secstor.hypervisor import DEFAULT as DEFAULT_HYPERVISOR
from secstor.services import template_create
from secstor.services import templates as svc


def _snapshot_source(ctx: CallContext, uuid: str) -> tuple[Volume, dict[str, int]]:
    snap: Snapshot = find_snapshot(ctx, uuid, "snapshotid")
    if snap.state != SnapshotState.BackedUp.value:
        raise InvalidParameter(f"Snapshot id={snap.uuid} is not in {SnapshotState.BackedUp.value} state yet and "
                               f"can't be used for template creation", "snapshotid")
    return ctx.db.get(Volume, snap.volume_id), {"snapshot_id": snap.id}


def _volume_source(ctx: CallContext, uuid: str) -> tuple[Volume, dict[str, int]]:
    volume = find_volume(ctx, uuid, "volumeid")
    vm = ctx.db.get(VirtualMachine, volume.vm_id) if volume.vm_id else None
    if vm is not None and vm.state != VmState.Stopped.value:
        raise InvalidParameter(f"Unable to create private template for volume: {volume.name}; volume is attached "
                               f"to a non-stopped VM, please stop the VM first", "volumeid")
    if volume.state != VolumeState.Ready.value:
        raise InvalidParameter(f"Volume {volume.uuid} is {volume.state}, not Ready: a template cannot be made from "
                               f"it now", "volumeid")
    return volume, {"volume_id": volume.id}


@api_command(
    "createTemplate",
    params=[
        Param("name", required=True, description="the name of the template"),
        Param("displaytext", length=4096, description="the display text of the template (defaults to the name)"),
        Param("snapshotid", PType.UUID, description="the ID of the BackedUp snapshot the template is made from "
                                                    "(give this or volumeid)"),
        Param("volumeid", PType.UUID, description="the ID of the volume the template is made from; a volume "
                                                  "attached to an instance needs the instance Stopped"),
        Param("zoneid", PType.UUID, description="the zone of the template: the source's, which is the default"),
        Param("ostypeid", description="the ID of the OS type (defaults to that of the source's template)"),
        Param("bits", PType.INTEGER, description="32 or 64 bits support (default 64)"),
        Param("ispublic", PType.BOOLEAN, description="true if the template is usable by every account"),
        Param("isfeatured", PType.BOOLEAN, description="true if the template is featured (admins only)"),
        Param("isextractable", PType.BOOLEAN, description="true if the template may be extracted"),
        Param("passwordenabled", PType.BOOLEAN, description="true if the template supports the password reset "
                                                            "feature"),
        Param("sshkeyenabled", PType.BOOLEAN, description="true if the template supports the sshkey upload"),
        Param("requireshvm", PType.BOOLEAN, description="true if the template requires HVM (default true)"),
        Param("isdynamicallyscalable", PType.BOOLEAN, description="true if the template contains XS/VMware tools"),
    ],
    roles=ALL_ROLES,
    is_async=True,
    description="Creates a RAW template from a BackedUp snapshot or from a volume (whose instance, if any, is "
                "Stopped): the content is written once, hashed on the way, into an image store of the source's "
                "zone. The template belongs to the caller.",
    response_object="template",
)
def create_template(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    if ("snapshotid" in p) == ("volumeid" in p):
        if "snapshotid" in p:
            raise InvalidParameter(f"Failed to create private template record, please specify only one of volume ID "
                                   f"({p['volumeid']}) and snapshot ID ({p['snapshotid']})", "snapshotid")
        raise InvalidParameter("Failed to create private template record, neither volume ID nor snapshot ID were "
                               "specified.", "volumeid")
    name = p["name"].strip()
    if not name:
        raise InvalidParameter("Template name cannot be empty", "name")
    if p.get("bits", 64) not in (32, 64):
        raise InvalidParameter("Invalid bits value: must be 32 or 64", "bits")
    volume, source = _snapshot_source(ctx, p["snapshotid"]) if "snapshotid" in p else _volume_source(ctx, p["volumeid"])
    zone = ctx.db.get(Zone, volume.zone_id)
    if "snapshotid" in p and p.get("zoneid", zone.uuid) != zone.uuid:  # a region-wide snapshot: any zone
        zone = zone_for_use(ctx, ctx.db.get(Snapshot, source["snapshot_id"]), p["zoneid"])
    elif "zoneid" in p and p["zoneid"] != zone.uuid:
        raise InvalidParameter(f"The template is made in the zone of its source, {zone.name}", "zoneid")
    vm = ctx.db.get(VirtualMachine, volume.vm_id) if volume.vm_id else None
    origin = ctx.db.get(VMTemplate, volume.template_id) if volume.template_id else None
    spec = svc.NewTemplate(
        name=name, displaytext=p.get("displaytext") or name, format="RAW", url=None, is_iso=False,
        account_id=ctx.caller.account_id, hypervisor=vm.hypervisor if vm else DEFAULT_HYPERVISOR,
        ostypeid=p.get("ostypeid") or (origin.ostypeid if origin else None),
        is_public=p.get("ispublic", False),
        featured=p.get("isfeatured", False) and ctx.caller.is_admin,  # CloudStack ignores isfeatured from users
        extractable=p.get("isextractable", False),
        passwordenabled=p.get("passwordenabled", False),
        sshkeyenabled=p.get("sshkeyenabled", False),
        requireshvm=p.get("requireshvm", True),
        isdynamicallyscalable=p.get("isdynamicallyscalable", False),
        bits=p.get("bits", 64),
    )
    template, job = template_create.create(ctx.db, ctx.runtime, spec, zone, source, ctx.submit_job)
    return AsyncResult(job.uuid, template.uuid)
