"""Capacity, alerts and health: listCapacity, listAlerts, archiveAlerts, deleteAlerts,
runSecondaryStorageHealthCheck (extension)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, time, timezone
from typing import Any

from sqlalchemy import delete, or_, select, update

from secstor.api.context import CallContext
from secstor.api.format import cs_date, drop_none
from secstor.api.params import Param, PType
from secstor.api.registry import ADMIN_ONLY, api_command
from secstor.api.results import ListResult, SuccessResult
from secstor.db.models import Alert, ImageStore, Zone
from secstor.domain.capacity import CAPACITY_TYPE_SECONDARY_STORAGE, percent_used
from secstor.domain.errors import InvalidParameter
from secstor.services.capacity import refresh_capacity
from secstor.services.health import run_health_checks

CAPACITY_NAMES = {CAPACITY_TYPE_SECONDARY_STORAGE: "SECONDARY_STORAGE"}


def capacity_response(zone: Zone, total: int, used: int) -> dict[str, Any]:
    return {
        "type": CAPACITY_TYPE_SECONDARY_STORAGE,
        "name": CAPACITY_NAMES[CAPACITY_TYPE_SECONDARY_STORAGE],
        "zoneid": zone.uuid,
        "zonename": zone.name,
        "capacitytotal": total,
        "capacityused": used,
        "percentused": percent_used(total, used),
    }


def alert_response(alert: Alert) -> dict[str, Any]:
    return drop_none({
        "id": alert.uuid,
        "type": alert.type,
        "name": alert.name,
        "description": alert.subject,
        "sent": cs_date(alert.created),
    })


@api_command(
    "listCapacity",
    params=[
        Param("zoneid", PType.UUID, description="lists capacity by the Zone ID"),
        Param("type", PType.INTEGER, description="lists capacity by type; secstor keeps "
                                                 "CAPACITY_TYPE_SECONDARY_STORAGE = 6 only"),
        Param("fetchlatest", PType.BOOLEAN, description="recalculate capacities and fetch the latest"),
        Param("sortby", description="Sort the results. Available values: Usage"),
        Param("podid", PType.UUID, description="accepted for compatibility; secstor has no pods"),
        Param("clusterid", PType.UUID, description="accepted for compatibility; secstor has no clusters"),
    ],
    roles=ADMIN_ONLY,
    description="Lists secondary storage capacity per zone, summed over the zone's image stores and the "
                "region-wide ones (which serve every zone).",
    is_list=True,
    response_object="capacity",
    response_fields=(("capacitytotal", "the total capacity available"), ("capacityused", "the capacity currently in use"),
                     ("percentused", "the percentage of capacity currently in use"), ("type", "the capacity type"),
                     ("name", "the capacity name"), ("zoneid", "the Zone ID"), ("zonename", "the Zone name")),
)
def list_capacity(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    sortby = p.get("sortby")
    if sortby is not None and sortby.lower() != "usage":
        raise InvalidParameter("Only value supported for sortBy parameter is : usage", "sortby")
    if p.get("type", CAPACITY_TYPE_SECONDARY_STORAGE) != CAPACITY_TYPE_SECONDARY_STORAGE:
        return ListResult("capacity", [], 0)
    live = select(ImageStore).where(ImageStore.removed.is_(None))
    if p.get("fetchlatest"):
        refresh_capacity(ctx.db, ctx.runtime, list(ctx.db.scalars(live).unique()))
    stores = list(ctx.db.scalars(live).unique())
    zones_stmt = select(Zone).where(Zone.removed.is_(None)).order_by(Zone.name)
    if "zoneid" in p:
        zones_stmt = zones_stmt.where(Zone.uuid == p["zoneid"])
    sums: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    zones = list(ctx.db.scalars(zones_stmt))
    for store in stores:
        if store.total_bytes is None or store.used_bytes is None:
            continue  # not measured yet
        for zone in zones:
            if store.zone_id is None or store.zone_id == zone.id:
                sums[zone.id][0] += store.total_bytes
                sums[zone.id][1] += store.used_bytes
    items = [capacity_response(z, *sums[z.id]) for z in zones if z.id in sums]
    if sortby:
        items.sort(key=lambda c: c["capacityused"] / c["capacitytotal"] if c["capacitytotal"] else 0, reverse=True)
    page, total = ctx.page_items(p, items)
    return ListResult("capacity", page, total)


def _alert_filter(p: dict[str, Any]):
    """The WHERE of archiveAlerts/deleteAlerts, with CloudStack's checks of its parameters."""
    if not any(k in p for k in ("ids", "type", "startdate", "enddate")):
        raise InvalidParameter("either ids, type, startdate or enddate must be specified", "ids")
    if "startdate" in p and "enddate" not in p:
        raise InvalidParameter("enddate must be specified with startdate parameter", "enddate")
    conditions = [Alert.archived.is_(False)]
    if "ids" in p:
        conditions.append(Alert.uuid.in_(p["ids"]))
    if "type" in p:
        conditions.append(Alert.type == p["type"])
    if "startdate" in p:
        conditions.append(Alert.created >= _as_utc(p["startdate"], end_of_day=False))
    if "enddate" in p:
        conditions.append(Alert.created <= _as_utc(p["enddate"], end_of_day=True))
    return conditions


def _as_utc(moment: datetime, *, end_of_day: bool) -> datetime:
    """A date without a time covers the whole day ("including this date")."""
    if moment.time() == time(0) and moment.tzinfo is None and end_of_day:
        moment = datetime.combine(moment.date(), time.max)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@api_command(
    "listAlerts",
    params=[
        Param("id", PType.UUID, description="the ID of the alert"),
        Param("type", PType.INTEGER, description="list by alert type (6 = secondary storage, 12 = storage misc)"),
        Param("name", description="list by alert name, e.g. ALERT.STORAGE.SECONDARY"),
    ],
    roles=ADMIN_ONLY,
    description="Lists all alerts that are not archived, newest first.",
    is_list=True,
    response_object="alert",
    response_fields=(("id", "the id of the alert"), ("type", "the alert type"), ("name", "the name of the alert"),
                     ("description", "description of the alert"), ("sent", "the date and time the alert was sent")),
)
def list_alerts(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    stmt = select(Alert).where(Alert.archived.is_(False)).order_by(Alert.created.desc(), Alert.id.desc())
    if "id" in p:
        stmt = stmt.where(Alert.uuid == p["id"])
    if "type" in p:
        stmt = stmt.where(Alert.type == p["type"])
    if "name" in p:
        stmt = stmt.where(Alert.name == p["name"])
    if "keyword" in p:
        stmt = stmt.where(or_(Alert.subject.contains(p["keyword"], autoescape=True),
                              Alert.name.contains(p["keyword"], autoescape=True)))
    rows, total = ctx.page(p, stmt)
    return ListResult("alert", [alert_response(a) for a in rows], total)


ALERT_SELECTION = [
    Param("ids", PType.LIST, item_type=PType.UUID, description="the IDs of the alerts"),
    Param("type", PType.INTEGER, description="the alert type"),
    Param("startdate", PType.DATE, description="start date range (including this date; yyyy-MM-dd or "
                                               "yyyy-MM-ddThh:mm:ss)"),
    Param("enddate", PType.DATE, description="end date range (including this date; yyyy-MM-dd or "
                                             "yyyy-MM-ddThh:mm:ss)"),
]


@api_command("archiveAlerts", params=ALERT_SELECTION, roles=ADMIN_ONLY,
             description="Archive one or more alerts: they stay in the database but are no longer listed.")
def archive_alerts(ctx: CallContext, p: dict[str, Any]) -> SuccessResult:
    ctx.db.execute(update(Alert).where(*_alert_filter(p)).values(archived=True))
    return SuccessResult()


@api_command("deleteAlerts", params=ALERT_SELECTION, roles=ADMIN_ONLY, description="Delete one or more alerts.")
def delete_alerts(ctx: CallContext, p: dict[str, Any]) -> SuccessResult:
    ctx.db.execute(delete(Alert).where(*_alert_filter(p)))
    return SuccessResult()


@api_command(
    "runSecondaryStorageHealthCheck",
    params=[Param("id", PType.UUID, description="the ID of one image store; default: every image store")],
    roles=ADMIN_ONLY,
    description="Runs the secondary storage health checks now, as `secstor health` does: the database, clock "
                "skew, DNS of secstorage.download.hosts.check, and per store reachable/mounted, writable and "
                "free space.",
    response_object="healthcheck",
    extension=True,
    response_fields=(("checkname", "the name of the check"), ("checktype", "global or store"),
                     ("success", "true if the check passed (a warning still passes)"),
                     ("status", "PASS, WARN or FAIL"), ("details", "what was found"),
                     ("imagestoreid", "the image store checked"), ("imagestorename", "its name"),
                     ("lastupdated", "when the check ran")),
)
def run_health_check(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    if "id" in p:
        ctx.get_by_uuid(ImageStore, p["id"], "id", what="image store")
    ctx.db.commit()  # the checks take seconds of I/O; hold no transaction (SQLite's write lock) meanwhile
    checks = run_health_checks(ctx.runtime, store_ref=p.get("id"))
    when = cs_date(ctx.now)
    items = [drop_none({
        "checkname": c.name,
        "checktype": "store" if c.store_uuid else "global",
        "success": c.ok,
        "status": c.status,
        "details": c.detail,
        "imagestoreid": c.store_uuid,
        "imagestorename": c.store_name,
        "lastupdated": when,
    }) for c in checks]
    return ListResult("healthcheck", items, len(items))
