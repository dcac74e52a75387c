"""Zones: createZone, listZones, deleteZone."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from secstor.api.context import CallContext
from secstor.api.format import drop_none
from secstor.api.params import Param, PType
from secstor.api.registry import ADMIN_ONLY, ALL_ROLES, api_command
from secstor.api.results import ListResult, ObjectResult, SuccessResult
from secstor.db.models import ImageStore, StoragePool, Zone
from secstor.domain.errors import InvalidParameter, ResourceInUse


def zone_response(zone: Zone, *, admin: bool) -> dict[str, Any]:
    return drop_none({
        "id": zone.uuid,
        "name": zone.name,
        "description": zone.description,
        "allocationstate": zone.allocation_state if admin else None,
        "networktype": "Advanced",
        "securitygroupsenabled": False,
        "localstorageenabled": True,
        "zonetoken": None,
        "hasannotations": False,
    })


@api_command(
    "createZone",
    params=[
        Param("name", required=True, description="the name of the Zone"),
        Param("description", description="a description of the zone"),
        Param("dns1", description="accepted for compatibility; secstor does not use it"),
        Param("internaldns1", description="accepted for compatibility; secstor does not use it"),
        Param("networktype", description="accepted for compatibility (Basic or Advanced)"),
        Param("allocationstate", description="Allocation state of this Zone: Enabled or Disabled"),
    ],
    roles=ADMIN_ONLY,
    description="Creates a Zone.",
    response_object="zone",
)
def create_zone(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    name = p["name"].strip()
    if not name:
        raise InvalidParameter("Zone name cannot be empty", "name")
    if ctx.db.scalars(select(Zone).where(Zone.name == name, Zone.removed.is_(None))).first():
        raise InvalidParameter(f"A zone with name {name} already exists", "name")
    state = p.get("allocationstate", "Enabled")
    if state not in ("Enabled", "Disabled"):
        raise InvalidParameter("Allocation state must be Enabled or Disabled", "allocationstate")
    zone = Zone(name=name, description=p.get("description"), allocation_state=state, created=ctx.now)
    ctx.db.add(zone)
    ctx.db.flush()
    return ObjectResult("zone", zone_response(zone, admin=True))


@api_command(
    "listZones",
    params=[
        Param("id", PType.UUID, description="the ID of the zone"),
        Param("name", description="the name of the zone"),
        Param("available", PType.BOOLEAN, description="true: only zones available to the caller"),
    ],
    roles=ALL_ROLES,
    description="Lists zones.",
    is_list=True,
    response_object="zone",
)
def list_zones(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    stmt = select(Zone).where(Zone.removed.is_(None)).order_by(Zone.id)
    if "id" in p:
        stmt = stmt.where(Zone.uuid == p["id"])
    if "name" in p:
        stmt = stmt.where(Zone.name == p["name"])
    if "keyword" in p:
        stmt = stmt.where(Zone.name.contains(p["keyword"]))
    if not ctx.caller.is_admin:
        stmt = stmt.where(Zone.allocation_state == "Enabled")
    rows, total = ctx.page(p, stmt)
    return ListResult("zone", [zone_response(z, admin=ctx.caller.is_admin) for z in rows], total)


@api_command(
    "deleteZone",
    params=[Param("id", PType.UUID, required=True, description="the ID of the Zone")],
    roles=ADMIN_ONLY,
    description="Deletes a Zone; refused while it holds image stores or storage pools.",
)
def delete_zone(ctx: CallContext, p: dict[str, Any]) -> SuccessResult:
    zone = ctx.get_by_uuid(Zone, p["id"], "id", what="zone")
    stores = ctx.db.scalars(select(ImageStore.name).where(ImageStore.zone_id == zone.id,
                                                           ImageStore.removed.is_(None))).all()
    if stores:
        raise ResourceInUse(f"The zone is not deletable because there are image stores in this zone: "
                            f"{', '.join(stores)}")
    pools = ctx.db.scalars(select(StoragePool.name).where(StoragePool.zone_id == zone.id,
                                                          StoragePool.removed.is_(None))).all()
    if pools:
        raise ResourceInUse(f"The zone is not deletable because there are storage pools in this zone: "
                            f"{', '.join(pools)}")
    zone.removed = ctx.now
    return SuccessResult()
