"""Disk offerings: createDiskOffering, listDiskOfferings, deleteDiskOffering."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from secstor.api.context import CallContext
from secstor.api.format import cs_date, drop_none
from secstor.api.params import Param, PType
from secstor.api.registry import ADMIN_ONLY, ALL_ROLES, api_command
from secstor.api.results import ListResult, ObjectResult, SuccessResult
from secstor.db.models import DiskOffering
from secstor.domain.errors import InvalidParameter
from secstor.domain.volumes import gib_to_bytes

GIB = 1 << 30


def disk_offering_response(offering: DiskOffering) -> dict[str, Any]:
    return drop_none({
        "id": offering.uuid,
        "name": offering.name,
        "displaytext": offering.display_text,
        "disksize": offering.disk_size // GIB if offering.disk_size is not None else 0,
        "iscustomized": offering.customized,
        "storagetype": "shared",
        "provisioningtype": "thin",
        "created": cs_date(offering.created),
    })


def find_disk_offering(ctx: CallContext, uuid: str, param: str = "diskofferingid") -> DiskOffering:
    return ctx.get_by_uuid(DiskOffering, uuid, param, what="disk offering")


def size_from_offering(ctx: CallContext, p: dict[str, Any], command: str) -> int:
    """The volume size in bytes that `size` and `diskofferingid` ask for (CloudStack's rules:
    a customized offering takes `size`; a fixed one fixes it, and `size` is refused with it)."""
    if "diskofferingid" not in p:
        if "size" not in p:
            raise InvalidParameter(f"Unable to execute API command {command} due to missing parameter size", "size")
        return gib_to_bytes(p["size"], "size")
    offering = find_disk_offering(ctx, p["diskofferingid"])
    if offering.customized:
        if "size" not in p:
            raise InvalidParameter(f"Disk offering {offering.name} is customized: give the size in GiB", "size")
        return gib_to_bytes(p["size"], "size")
    if "size" in p:
        raise InvalidParameter(f"Disk offering {offering.name} has a fixed size; size cannot be given with it", "size")
    return int(offering.disk_size)


@api_command(
    "createDiskOffering",
    params=[
        Param("name", required=True, description="name of the disk offering"),
        Param("displaytext", description="display text of the disk offering (default: the name)", length=4096),
        Param("disksize", PType.LONG, description="size of the disk offering in GiB (required unless customized)"),
        Param("customized", PType.BOOLEAN, description="true: the user gives the size when creating a volume"),
    ],
    roles=ADMIN_ONLY,
    description="Creates a disk offering.",
    response_object="diskoffering",
)
def create_disk_offering(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    name = p["name"].strip()
    if not name:
        raise InvalidParameter("Disk offering name cannot be empty", "name")
    customized = bool(p.get("customized", False))
    if customized and "disksize" in p:
        raise InvalidParameter("A customized disk offering takes no disksize", "disksize")
    if not customized and "disksize" not in p:
        raise InvalidParameter("Disksize is required for a non-customized disk offering", "disksize")
    size = None if customized else gib_to_bytes(p["disksize"], "disksize")
    offering = DiskOffering(name=name, display_text=p.get("displaytext") or name, disk_size=size,
                            customized=customized, created=ctx.now)
    ctx.db.add(offering)
    ctx.db.flush()
    return ObjectResult("diskoffering", disk_offering_response(offering))


@api_command(
    "listDiskOfferings",
    params=[
        Param("id", PType.UUID, description="ID of the disk offering"),
        Param("name", description="name of the disk offering"),
    ],
    roles=ALL_ROLES,
    description="Lists disk offerings.",
    is_list=True,
    response_object="diskoffering",
)
def list_disk_offerings(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    stmt = select(DiskOffering).where(DiskOffering.removed.is_(None)).order_by(DiskOffering.id)
    if "id" in p:
        stmt = stmt.where(DiskOffering.uuid == p["id"])
    if "name" in p:
        stmt = stmt.where(DiskOffering.name == p["name"])
    if "keyword" in p:
        stmt = stmt.where(DiskOffering.name.contains(p["keyword"]))
    rows, total = ctx.page(p, stmt)
    return ListResult("diskoffering", [disk_offering_response(o) for o in rows], total)


@api_command(
    "deleteDiskOffering",
    params=[Param("id", PType.UUID, required=True, description="ID of the disk offering")],
    roles=ADMIN_ONLY,
    description="Deletes a disk offering; volumes created from it keep their size.",
)
def delete_disk_offering(ctx: CallContext, p: dict[str, Any]) -> SuccessResult:
    offering = find_disk_offering(ctx, p["id"], "id")
    offering.removed = ctx.now
    return SuccessResult()
