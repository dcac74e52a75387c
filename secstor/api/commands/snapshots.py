"""Volume snapshots and snapshot policies: createSnapshot, listSnapshots, deleteSnapshot,
revertSnapshot, the policy commands, createVolume's snapshotid, and the admin chunk GC and scrub."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from secstor.api.context import CallContext
from secstor.api.format import cs_date, drop_none
from secstor.api.params import Param, PType
from secstor.api.registry import ADMIN_ONLY, ALL_ROLES, api_command
from secstor.api.results import AsyncResult, ListResult, ObjectResult, SuccessResult
from secstor.db.models import Account, ImageStore, Snapshot, SnapshotPolicy, StoragePool, VirtualMachine, Volume, Zone
from secstor.domain.errors import InvalidParameter
from secstor.domain.snapshot_policy import parse_interval, parse_schedule, parse_timezone
from secstor.domain.states import SnapshotState
from secstor.domain.volumes import VmState, VolumeEvent, VolumeState
from secstor.services import snapshot_region
from secstor.services import snapshots as snaps
from secstor.services import volumes as vols


def snapshot_responses(session: Session, rows: list[Snapshot], zones: list[Zone] | None = None
                       ) -> list[dict[str, Any]]:
    """``zones``: the zone each row is shown in (a region-wide snapshot is available in every
    zone); by default the snapshot's own."""
    out = []
    for index, snap in enumerate(rows):
        account = session.get(Account, snap.account_id)
        volume = session.get(Volume, snap.volume_id)
        zone = zones[index] if zones is not None else session.get(Zone, snap.zone_id)
        if snap.location_type == snaps.SECONDARY and snap.store_id:
            datastore = session.get(ImageStore, snap.store_id)
        else:
            datastore = session.get(StoragePool, snap.pool_id) if snap.pool_id else None
        out.append(drop_none({
            "id": snap.uuid,
            "name": snap.name,
            "account": account.name,
            "domainid": account.domain.uuid,
            "domain": account.domain.name,
            "snapshottype": snap.snapshot_type,
            "intervaltype": snap.interval_type,
            "volumeid": volume.uuid,
            "volumename": volume.name,
            "volumetype": volume.volume_type,
            "created": cs_date(snap.created),
            "state": snap.state,
            "physicalsize": snap.physical_size,
            "virtualsize": snap.virtual_size,
            "zoneid": zone.uuid,
            "zonename": zone.name,
            "revertable": snap.state in snaps.RESTORABLE,
            "locationtype": snap.location_type.capitalize(),
            "datastoreid": datastore.uuid if datastore else None,
            "datastorename": datastore.name if datastore else None,
            "datastoretype": ("Image" if isinstance(datastore, ImageStore) else "Primary") if datastore else None,
            "hasannotations": False,
        }))
    return out


def find_snapshot(ctx: CallContext, uuid: str, param: str = "id") -> Snapshot:
    snap = ctx.get_by_uuid(Snapshot, uuid, param, what="snapshot")
    if snap.removed is not None:
        raise InvalidParameter(f"Unable to find snapshot with specified {param} {uuid}", param)
    ctx.check_owner(snap.account_id)
    return snap


def restorable_snapshot(ctx: CallContext, uuid: str, param: str) -> Snapshot:
    snap = find_snapshot(ctx, uuid, param)
    if snap.state not in snaps.RESTORABLE:
        raise InvalidParameter(f"Snapshot {snap.uuid} is in state {snap.state}; only a BackedUp snapshot can be "
                               f"used", param)
    return snap


def find_volume(ctx: CallContext, uuid: str, param: str) -> Volume:
    volume = ctx.get_by_uuid(Volume, uuid, param, what="volume")
    if volume.removed is not None or volume.state in vols.GONE_STATES:
        raise InvalidParameter(f"Unable to find volume with specified {param} {uuid}", param)
    ctx.check_owner(volume.account_id)
    return volume


@api_command(
    "createSnapshot",
    params=[
        Param("volumeid", PType.UUID, required=True, description="The ID of the disk volume"),
        Param("name", description="the name of the snapshot"),
        Param("policyid", PType.UUID, description="policy id of the snapshot, if this is part of a policy"),
        Param("locationtype", description="accepted for compatibility: where the snapshot goes follows "
                                          "snapshot.backup.to.secondary"),
        Param("quiescevm", PType.BOOLEAN, description="accepted for compatibility"),
        Param("asyncbackup", PType.BOOLEAN, description="accepted for compatibility"),
    ],
    roles=ALL_ROLES,
    is_async=True,
    description="Creates a snapshot of a Ready volume: a point-in-time copy on primary storage (reflink or "
                "sparse copy), then a deduplicated, compressed backup into the image store holding the volume's "
                "other snapshots; the copy on primary is removed once backed up.",
    response_object="snapshot",
)
def create_snapshot(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    volume = find_volume(ctx, p["volumeid"], "volumeid")
    policy_id = None
    if "policyid" in p:
        policy = ctx.get_by_uuid(SnapshotPolicy, p["policyid"], "policyid", what="snapshot policy")
        if policy.volume_id != volume.id or policy.removed is not None:
            raise InvalidParameter(f"Snapshot policy {p['policyid']} is not a policy of volume {volume.uuid}",
                                   "policyid")
        policy_id = policy.id
    name = (p.get("name") or "").strip() or None
    snap = snaps.new_snapshot(ctx.db, volume, name=name, snapshot_type=snaps.MANUAL, interval_type=snaps.MANUAL,
                              policy_id=policy_id, now=ctx.now)
    job = ctx.submit_job(snaps.CREATE_HANDLER, {"snapshot_id": snap.id}, instance_type="Snapshot",
                         instance_id=snap.uuid)
    return AsyncResult(job.uuid, snap.uuid)


@api_command(
    "listSnapshots",
    params=[
        Param("id", PType.UUID, description="lists snapshot by snapshot ID"),
        Param("ids", PType.LIST, item_type=PType.UUID, description="the IDs of the snapshots"),
        Param("volumeid", PType.UUID, description="the ID of the disk volume"),
        Param("intervaltype", description="valid values are HOURLY, DAILY, WEEKLY, and MONTHLY (or MANUAL)"),
        Param("snapshottype", description="valid values are MANUAL or RECURRING"),
        Param("name", description="lists snapshot by snapshot name"),
        Param("zoneid", PType.UUID, description="list snapshots available in the zone: its own, and those on a "
                                                "region-wide image store (shown with this zone)"),
        Param("state", description="state of the snapshot"),
        Param("listall", PType.BOOLEAN, description="accepted for compatibility (admins see every account's)"),
        Param("showunique", PType.BOOLEAN, description="if false, one entry per zone the snapshot is available in"),
        Param("locationtype", description="list snapshots by location type (primary or secondary); used only with "
                                          "showunique=false"),
    ],
    roles=ALL_ROLES,
    description="Lists snapshots: a User sees its own, admins every account's. A snapshot backed up into a "
                "region-wide image store is available in every zone.",
    is_list=True,
    response_object="snapshot",
)
def list_snapshots(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    stmt = select(Snapshot).where(Snapshot.removed.is_(None)).order_by(Snapshot.id)
    if not ctx.caller.is_admin:
        stmt = stmt.where(Snapshot.account_id == ctx.caller.account_id)
    if "id" in p:
        stmt = stmt.where(Snapshot.uuid == p["id"])
    if "ids" in p:
        stmt = stmt.where(Snapshot.uuid.in_(p["ids"]))
    if "volumeid" in p:
        stmt = stmt.where(Snapshot.volume_id == ctx.get_by_uuid(Volume, p["volumeid"], "volumeid", what="volume").id)
    if "intervaltype" in p:
        stmt = stmt.where(Snapshot.interval_type == p["intervaltype"].upper())
    if "snapshottype" in p:
        stmt = stmt.where(Snapshot.snapshot_type == p["snapshottype"].upper())
    if "name" in p:
        stmt = stmt.where(Snapshot.name == p["name"])
    zone = ctx.get_by_uuid(Zone, p["zoneid"], "zoneid", what="zone") if "zoneid" in p else None
    if zone is not None:
        stmt = stmt.where(snapshot_region.available_in(zone.id))
    if "state" in p:
        stmt = stmt.where(Snapshot.state == p["state"])
    if "keyword" in p:
        stmt = stmt.where(Snapshot.name.contains(p["keyword"]))
    if p.get("showunique") is False:
        return _list_per_zone(ctx, p, stmt, zone)
    rows, total = ctx.page(p, stmt)
    return ListResult("snapshot", snapshot_responses(ctx.db, rows, [zone] * len(rows) if zone else None), total)


def _list_per_zone(ctx: CallContext, p: dict[str, Any], stmt, zone: Zone | None) -> ListResult:
    """showunique=false: one entry per (snapshot, zone it is available in), as CloudStack 4.19."""
    if "locationtype" in p:
        location = p["locationtype"].strip().lower()
        if location not in (snaps.PRIMARY, snaps.SECONDARY):
            raise InvalidParameter(f"Invalid location type {p['locationtype']}: valid ones are primary and "
                                   f"secondary", "locationtype")
        stmt = stmt.where(Snapshot.location_type == location)
    zones = snapshot_region.snapshot_zones()
    pairs_stmt = (select(zones.c.snapshot_id, zones.c.zone_id)
                  .where(zones.c.snapshot_id.in_(stmt.with_only_columns(Snapshot.id).order_by(None)))
                  .order_by(zones.c.snapshot_id, zones.c.zone_id))
    if zone is not None:
        pairs_stmt = pairs_stmt.where(zones.c.zone_id == zone.id)
    pairs, total = ctx.page_items(p, [tuple(r) for r in ctx.db.execute(pairs_stmt)])
    by_id = {s.id: s for s in ctx.db.scalars(select(Snapshot).where(Snapshot.id.in_({s for s, _ in pairs})))}
    zone_rows = {z.id: z for z in ctx.db.scalars(select(Zone).where(Zone.id.in_({z for _, z in pairs})))}
    return ListResult("snapshot", snapshot_responses(ctx.db, [by_id[s] for s, _ in pairs],
                                                     [zone_rows[z] for _, z in pairs]), total)


@api_command(
    "deleteSnapshot",
    params=[Param("id", PType.UUID, required=True, description="The ID of the snapshot")],
    roles=ALL_ROLES,
    is_async=True,
    description="Deletes a snapshot everywhere: its manifest on the one image store holding it (zone or "
                "region-wide; removed later if that store is unreachable now) or its copy on primary; chunks other "
                "snapshots share stay, and those no snapshot uses are removed later by garbage collection.",
)
def delete_snapshot(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    snap = find_snapshot(ctx, p["id"])
    if snap.state not in (SnapshotState.BackedUp.value, SnapshotState.Error.value, SnapshotState.Destroying.value):
        raise InvalidParameter(f"Snapshot {snap.uuid} is in state {snap.state} and cannot be deleted now", "id")
    job = ctx.submit_job(snaps.DELETE_HANDLER, {"snapshot_id": snap.id}, instance_type="Snapshot",
                         instance_id=snap.uuid)
    return AsyncResult(job.uuid)


@api_command(
    "copySnapshot",
    params=[
        Param("id", PType.UUID, required=True, description="the ID of the snapshot."),
        Param("sourcezoneid", PType.UUID, description="The ID of the zone in which the snapshot is currently "
                                                      "present. If not specified then the zone of snapshot's volume "
                                                      "will be used."),
        Param("destzoneid", PType.UUID, description="The ID of the zone the snapshot is being copied to."),
        Param("destzoneids", PType.LIST, item_type=PType.UUID,
              description="A comma-separated list of IDs of the zones that the snapshot needs to be copied to. Do "
                          "not specify destzoneid and destzoneids together, however one of them is required."),
    ],
    roles=ALL_ROLES,
    is_async=True,
    description="Copies a snapshot from one zone to other zones (CloudStack 4.19). A snapshot on a region-wide "
                "image store is available in every zone already: nothing is copied. One on a zone's image store "
                "makes the whole chain of its volume's snapshots (one deduplication domain) move into a "
                "region-wide image store, verified chunk by chunk, after which every zone can use them.",
    response_object="snapshot",
)
def copy_snapshot(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    if "destzoneid" in p and p.get("destzoneids"):
        raise InvalidParameter("Both destzoneid and destzoneids cannot be specified at the same time.", "destzoneids")
    snap = find_snapshot(ctx, p["id"])
    if snap.state != SnapshotState.BackedUp.value or snap.location_type != snaps.SECONDARY:
        raise InvalidParameter("Snapshot is not backed up", "id")
    dest_uuids = list(dict.fromkeys([p["destzoneid"]] if "destzoneid" in p else p.get("destzoneids", [])))
    if not dest_uuids:
        raise InvalidParameter("Please specify valid destination zone(s).", "destzoneids")
    source = ctx.db.get(Zone, snap.zone_id)
    if "sourcezoneid" in p:
        source = ctx.db.scalars(select(Zone).where(Zone.uuid == p["sourcezoneid"], Zone.removed.is_(None))).first()
        if source is None:
            raise InvalidParameter("Please specify a valid source zone.", "sourcezoneid")
    if source.uuid in dest_uuids:
        raise InvalidParameter("Please specify different source and destination zones.", "destzoneids")
    found = set(ctx.db.scalars(select(Zone.uuid).where(Zone.uuid.in_(dest_uuids), Zone.removed.is_(None))))
    if any(u not in found for u in dest_uuids):
        raise InvalidParameter("Please specify a valid destination zone.", "destzoneids")
    if not snapshot_region.is_available_in(ctx.db, snap, source.id):
        raise InvalidParameter(f"There is no snapshot ID: {snap.uuid} ready on image store", "sourcezoneid")
    refusal = snapshot_region.copy_refusal(ctx.runtime, ctx.db, snap)
    if refusal:
        raise InvalidParameter(refusal, "id")
    job = ctx.submit_job(snapshot_region.COPY_HANDLER, {"snapshot_id": snap.id, "destzoneids": dest_uuids},
                         instance_type="Snapshot", instance_id=snap.uuid, queue=snapshot_region.COPY_QUEUE)
    return AsyncResult(job.uuid)


@api_command(
    "revertSnapshot",
    params=[Param("id", PType.UUID, required=True, description="The ID of the snapshot")],
    roles=ALL_ROLES,
    is_async=True,
    description="Reverts a volume to a snapshot: the volume's file gets the snapshot's exact content. Refused "
                "while the volume is attached to a Running instance.",
    response_object="snapshot",
)
def revert_snapshot(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    snap = restorable_snapshot(ctx, p["id"], "id")
    volume = ctx.db.get(Volume, snap.volume_id)
    if volume.removed is not None:
        raise InvalidParameter(f"The volume of snapshot {snap.uuid} no longer exists", "id")
    vm = ctx.db.get(VirtualMachine, volume.vm_id) if volume.vm_id else None
    if vm is not None and vm.state != VmState.Stopped.value:
        raise InvalidParameter(f"The VM {vm.name} the volume {volume.uuid} is attached to is {vm.state}: stop it "
                               f"before reverting the snapshot", "id")
    if volume.state != VolumeState.Ready.value:
        raise InvalidParameter(f"Volume {volume.uuid} is {volume.state}, not Ready: cannot revert it now", "id")
    vols.transition(volume, VolumeEvent.RevertSnapshotRequested, ctx.now)
    job = ctx.submit_job(snaps.REVERT_HANDLER, {"snapshot_id": snap.id}, instance_type="Snapshot",
                         instance_id=snap.uuid)
    return AsyncResult(job.uuid)


def zone_for_use(ctx: CallContext, snap: Snapshot, zone_uuid: str | None, param: str = "zoneid") -> Zone:
    """The zone where something is made from the snapshot: ``zone_uuid`` (default: the
    snapshot's own), which must be one the snapshot is available in."""
    if zone_uuid is None:
        return ctx.db.get(Zone, snap.zone_id)
    zone = ctx.get_by_uuid(Zone, zone_uuid, param, what="zone")
    if not snapshot_region.is_available_in(ctx.db, snap, zone.id):
        raise InvalidParameter(f"Snapshot {snap.uuid} is not available in zone {zone.name}: copy it there first "
                               f"(copySnapshot)", param)
    return zone


def create_volume_from_snapshot(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    """createVolume with snapshotid: a new DATADISK holding the snapshot's content, in its zone or
    (a snapshot on a region-wide store) in any zone."""
    snap = restorable_snapshot(ctx, p["snapshotid"], "snapshotid")
    zone = zone_for_use(ctx, snap, p.get("zoneid"))
    pool = vols.choose_pool(ctx.db, zone, snap.virtual_size)
    volume = vols.new_volume(ctx.db, name=(p.get("name") or "").strip(), account_id=ctx.caller.account_id, zone=zone,
                             pool=pool, size=snap.virtual_size, volume_type="DATADISK", template_id=None, now=ctx.now)
    volume.name = volume.name or volume.uuid
    job = ctx.submit_job(snaps.VOLUME_HANDLER, {"volume_id": volume.id, "snapshot_id": snap.id,
                                                "caller_is_admin": ctx.caller.is_admin},
                         instance_type="Volume", instance_id=volume.uuid)
    return AsyncResult(job.uuid, volume.uuid)


# ---- policies ------------------------------------------------------------------------------------

def policy_response(session: Session, policy: SnapshotPolicy) -> dict[str, Any]:
    return {
        "id": policy.uuid,
        "volumeid": session.get(Volume, policy.volume_id).uuid,
        "intervaltype": policy.interval_type,
        "schedule": policy.schedule,
        "timezone": policy.timezone,
        "maxsnaps": policy.max_snaps,
        "fordisplay": True,
        "hasannotations": False,
    }


def _apply_policy_fields(policy: SnapshotPolicy, p: dict[str, Any], now) -> None:
    interval = parse_interval(p.get("intervaltype", policy.interval_type))
    schedule = p.get("schedule", policy.schedule)
    parse_schedule(interval, schedule)
    timezone = p.get("timezone", policy.timezone)
    parse_timezone(timezone)
    max_snaps = p.get("maxsnaps", policy.max_snaps)
    if max_snaps is None or max_snaps < 1:
        raise InvalidParameter("maxsnaps must be at least 1", "maxsnaps")
    policy.interval_type, policy.schedule, policy.timezone, policy.max_snaps = (
        interval.value, schedule.strip(), timezone.strip(), max_snaps)
    policy.next_run_at = snaps.policy_next_run(policy, now)


@api_command(
    "createSnapshotPolicy",
    params=[
        Param("volumeid", PType.UUID, required=True, description="the ID of the disk volume"),
        Param("intervaltype", required=True, description="valid values are HOURLY, DAILY, WEEKLY, and MONTHLY"),
        Param("maxsnaps", PType.INTEGER, required=True, description="maximum number of snapshots to retain"),
        Param("schedule", required=True, description="time the snapshot is scheduled to be taken: MM (HOURLY), "
                                                     "MM:HH (DAILY), MM:HH:DD (WEEKLY DD 1-7, MONTHLY DD 1-28)"),
        Param("timezone", required=True, description="the time zone of the schedule, e.g. Europe/Berlin"),
        Param("fordisplay", PType.BOOLEAN, description="accepted for compatibility"),
    ],
    roles=ALL_ROLES,
    description="Creates a snapshot policy for a volume; the scheduler takes RECURRING snapshots on time and "
                "keeps the newest min(maxsnaps, snapshot.max.<interval>). One policy per interval type and volume: "
                "a second one replaces the first's schedule.",
    response_object="snapshotpolicy",
)
def create_snapshot_policy(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    volume = find_volume(ctx, p["volumeid"], "volumeid")
    interval = parse_interval(p["intervaltype"])
    policy = ctx.db.scalars(select(SnapshotPolicy).where(SnapshotPolicy.volume_id == volume.id,
                                                         SnapshotPolicy.interval_type == interval.value,
                                                         SnapshotPolicy.removed.is_(None))).first()
    if policy is None:
        policy = SnapshotPolicy(volume_id=volume.id, created=ctx.now)
    _apply_policy_fields(policy, p, ctx.now)
    ctx.db.add(policy)
    ctx.db.flush()
    return ObjectResult("snapshotpolicy", policy_response(ctx.db, policy))


def _find_policy(ctx: CallContext, uuid: str, param: str) -> SnapshotPolicy:
    policy = ctx.get_by_uuid(SnapshotPolicy, uuid, param, what="snapshot policy")
    if policy.removed is not None:
        raise InvalidParameter(f"Unable to find snapshot policy with specified {param} {uuid}", param)
    ctx.check_owner(ctx.db.get(Volume, policy.volume_id).account_id)
    return policy


@api_command(
    "listSnapshotPolicies",
    params=[
        Param("volumeid", PType.UUID, description="the ID of the disk volume"),
        Param("id", PType.UUID, description="the ID of the snapshot policy"),
    ],
    roles=ALL_ROLES,
    description="Lists snapshot policies (of a volume, or one by id): a User sees those of its own volumes.",
    is_list=True,
    response_object="snapshotpolicy",
)
def list_snapshot_policies(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    stmt = (select(SnapshotPolicy).join(Volume, Volume.id == SnapshotPolicy.volume_id)
            .where(SnapshotPolicy.removed.is_(None)).order_by(SnapshotPolicy.id))
    if not ctx.caller.is_admin:
        stmt = stmt.where(Volume.account_id == ctx.caller.account_id)
    if "id" in p:
        stmt = stmt.where(SnapshotPolicy.uuid == p["id"])
    if "volumeid" in p:
        stmt = stmt.where(Volume.uuid == p["volumeid"])
    rows, total = ctx.page(p, stmt)
    return ListResult("snapshotpolicy", [policy_response(ctx.db, r) for r in rows], total)


@api_command(
    "updateSnapshotPolicy",
    params=[
        Param("id", PType.UUID, required=True, description="the ID of the snapshot policy"),
        Param("intervaltype", description="valid values are HOURLY, DAILY, WEEKLY, and MONTHLY"),
        Param("maxsnaps", PType.INTEGER, description="maximum number of snapshots to retain"),
        Param("schedule", description="time the snapshot is scheduled to be taken"),
        Param("timezone", description="the time zone of the schedule"),
        Param("fordisplay", PType.BOOLEAN, description="accepted for compatibility"),
    ],
    roles=ALL_ROLES,
    description="Updates a snapshot policy; its next run is computed again.",
    response_object="snapshotpolicy",
)
def update_snapshot_policy(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    policy = _find_policy(ctx, p["id"], "id")
    _apply_policy_fields(policy, p, ctx.now)
    return ObjectResult("snapshotpolicy", policy_response(ctx.db, policy))


@api_command(
    "deleteSnapshotPolicies",
    params=[
        Param("id", PType.UUID, description="the ID of the snapshot policy"),
        Param("ids", PType.LIST, item_type=PType.UUID, description="list of snapshots policy IDs"),
    ],
    roles=ALL_ROLES,
    description="Deletes snapshot policies; their snapshots stay.",
)
def delete_snapshot_policies(ctx: CallContext, p: dict[str, Any]) -> SuccessResult:
    uuids = ([p["id"]] if "id" in p else []) + list(p.get("ids", []))
    if not uuids:
        raise InvalidParameter("Give id or ids", "id")
    for uuid in uuids:
        _find_policy(ctx, uuid, "id" if "id" in p and uuid == p["id"] else "ids").removed = ctx.now
    return SuccessResult()


# ---- admin: chunk GC and scrub -------------------------------------------------------------------

def _image_store(ctx: CallContext, uuid: str, param: str) -> ImageStore:
    store = ctx.get_by_uuid(ImageStore, uuid, param, what="image store")
    if store.removed is not None:
        raise InvalidParameter(f"Unable to find image store with specified {param} {uuid}", param)
    return store


@api_command(
    "runSnapshotGarbageCollection",
    params=[Param("storeid", PType.UUID, required=True, description="the image store whose snapshot chunks to "
                                                                      "collect")],
    roles=ADMIN_ONLY,
    is_async=True,
    extension=True,
    description="Removes the snapshot chunks of an image store that no snapshot uses and that are older than "
                "snapshot.gc.grace seconds (mark and sweep; safe while backups run).",
)
def run_snapshot_gc(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    store = _image_store(ctx, p["storeid"], "storeid")
    job = ctx.submit_job(snaps.GC_HANDLER, {"store_id": store.id, "store_uuid": store.uuid},
                         instance_type="ImageStore", instance_id=store.uuid)
    return AsyncResult(job.uuid)


@api_command(
    "scrubImageStore",
    params=[
        Param("id", PType.UUID, required=True, description="the image store to verify"),
        Param("repair", PType.BOOLEAN, description="copy damaged or missing chunks back from another image store "
                                                   "holding them"),
    ],
    roles=ADMIN_ONLY,
    is_async=True,
    extension=True,
    description="Verifies every snapshot chunk of an image store against its SHA-256 and reports the damaged "
                "ones and the snapshots they break; with repair=true, repairs them from another store.",
)
def scrub_image_store(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    store = _image_store(ctx, p["id"], "id")
    job = ctx.submit_job(snaps.SCRUB_HANDLER, {"store_id": store.id, "store_uuid": store.uuid,
                                               "repair": bool(p.get("repair"))},
                         instance_type="ImageStore", instance_id=store.uuid)
    return AsyncResult(job.uuid)
