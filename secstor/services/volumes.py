"""Primary storage pools and volumes: placement, the files behind volumes, the template cache.

The database says what should exist; a job makes the file and only then marks the volume Ready.
No pool I/O happens while a database transaction is open, except the single unlink of
deleteVolume, so that a failed unlink leaves the volume as it was.
"""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from secstor.api.format import cs_date, drop_none
from secstor.db.models import (Account, ImageStore, StoragePool, TemplatePoolCache, TemplateStoreRef,
                               VirtualMachine, VMTemplate, Volume, Zone)
from secstor.domain.errors import InsufficientCapacity, OperationFailed
from secstor.domain.states import READABLE_COPY_STATES, ObjectInStoreState
from secstor.domain.volumes import GONE_STATES, VOLUME, VolumeEvent, VolumeState
from secstor.movers.checksums import parse_checksum
from secstor.movers.transfer import TransferError, copy_verified
from secstor.primary.posix import CACHE_DIR, FORMATS, PoolError, PosixPool
from secstor.services.staging import pull_to_staging
from secstor.services.volume_transfers import upload_percentages, upload_status
from secstor.stores.base import StoreError
from secstor.stores.local import LocalDriver

if TYPE_CHECKING:
    from secstor.runtime import Runtime

log = logging.getLogger("secstor.volumes")

CREATE_HANDLER = "volume.create"
RESIZE_HANDLER = "volume.resize"
# A template copy whose copier has given no sign of life for this long is taken over.
CACHE_CLAIM_STALE = timedelta(minutes=2)
CACHE_HEARTBEAT_SECONDS = 20.0
CACHE_POLL_SECONDS = 0.2
DEPLOYABLE_FORMATS = FORMATS  # template formats a volume can be cloned from


# ---- pools ---------------------------------------------------------------------------------------

def allocated_by_pool(session: Session, pool_ids: list[int]) -> dict[int, int]:
    """Sum of the virtual sizes of the live volumes on each pool (CloudStack's disksizeallocated)."""
    if not pool_ids:
        return {}
    rows = session.execute(select(Volume.pool_id, func.sum(Volume.size))
                           .where(Volume.pool_id.in_(pool_ids), Volume.removed.is_(None))
                           .group_by(Volume.pool_id))
    return {pool_id: int(total or 0) for pool_id, total in rows}


def pool_total(pool: StoragePool) -> int | None:
    return pool.capacity_bytes or pool.total_bytes


def pool_response(pool: StoragePool, allocated: int, *, admin: bool) -> dict[str, Any]:
    return drop_none({
        "id": pool.uuid,
        "name": pool.name,
        "zoneid": pool.zone.uuid,
        "zonename": pool.zone.name,
        "path": pool.path if admin else None,
        "ipaddress": "localhost",
        "created": cs_date(pool.created),
        "type": "Filesystem",
        "state": pool.state,
        "scope": pool.scope,
        "provider": "DefaultPrimary" if pool.provider == "Local" else pool.provider,
        "hypervisor": "Simulator",
        "disksizetotal": pool_total(pool),
        "disksizeused": pool.used_bytes,
        "disksizeallocated": allocated,
        "overprovisionfactor": "1.0",
        "volumeformat": pool.volume_format,
    })


def scan_pool(runtime: "Runtime", pool_id: int) -> None:
    """Record the pool's file-system capacity (best effort: a pool that can't be read keeps its
    last numbers)."""
    with runtime.session() as s:
        path = s.get(StoragePool, pool_id).path
    try:
        cap = PosixPool(path).capacity()
    except OSError as exc:
        log.warning("storage pool %s: capacity unreadable at %s: %s", pool_id, path, exc)
        return
    with runtime.session() as s:
        pool = s.get(StoragePool, pool_id)
        pool.total_bytes, pool.used_bytes = cap.total_bytes, cap.used_bytes


def choose_pool(session: Session, zone: Zone, size: int, template_id: int | None = None) -> StoragePool:
    """An Up pool of the zone with room for ``size`` more bytes (a pool's total counts only when
    known): pools already caching ``template_id`` first, then the least allocated."""
    pools = list(session.scalars(select(StoragePool).where(StoragePool.zone_id == zone.id, StoragePool.state == "Up",
                                                           StoragePool.removed.is_(None)).order_by(StoragePool.id)))
    allocated = allocated_by_pool(session, [p.id for p in pools])
    cached: set[int] = set()
    if template_id is not None:
        cached = set(session.scalars(select(TemplatePoolCache.pool_id).where(
            TemplatePoolCache.template_id == template_id,
            TemplatePoolCache.state == ObjectInStoreState.Ready.value)))
    fitting = [p for p in pools if pool_total(p) is None or allocated.get(p.id, 0) + size <= pool_total(p)]
    if not fitting:
        raise InsufficientCapacity(f"Unable to find a storage pool in zone {zone.name} with {size} bytes free "
                                   f"for the volume")
    return min(fitting, key=lambda p: (p.id not in cached, allocated.get(p.id, 0), p.id))


# ---- volumes -------------------------------------------------------------------------------------

def volume_path(volume: Volume) -> str:
    return volume.uuid


def transition(volume: Volume, event: VolumeEvent, now) -> None:
    volume.state = VOLUME.next_state(volume.state, event)
    volume.updated = now


def volume_responses(session: Session, volumes: list[Volume], *, admin: bool) -> list[dict[str, Any]]:
    out = []
    upload_pcts = upload_percentages(session, [v.id for v in volumes])
    for v in volumes:
        account = session.get(Account, v.account_id)
        zone = session.get(Zone, v.zone_id)
        vm = session.get(VirtualMachine, v.vm_id) if v.vm_id else None
        pool = session.get(StoragePool, v.pool_id) if v.pool_id else None
        template = session.get(VMTemplate, v.template_id) if v.template_id else None
        out.append(drop_none({
            "id": v.uuid,
            "name": v.name,
            "zoneid": zone.uuid,
            "zonename": zone.name,
            "type": v.volume_type,
            "deviceid": v.device_id,
            "virtualmachineid": vm.uuid if vm else None,
            "vmname": vm.name if vm else None,
            "vmdisplayname": (vm.display_name or vm.name) if vm else None,
            "vmstate": vm.state if vm else None,
            "hypervisor": vm.hypervisor if vm else None,
            "provisioningtype": "thin",
            "size": v.size,
            "created": cs_date(v.created),
            "attached": cs_date(v.updated) if vm else None,
            "state": v.state,
            "status": upload_status(v, upload_pcts.get(v.id)),
            "account": account.name,
            "domainid": account.domain.uuid,
            "domain": account.domain.name,
            "storagetype": "shared",
            "destroyed": v.state == VolumeState.Destroy.value,
            "isextractable": v.volume_type == "DATADISK",
            "templateid": template.uuid if template else None,
            "templatename": template.name if template else None,
            "storageid": pool.uuid if admin and pool else None,
            "storage": pool.name if admin and pool else None,
            "path": v.path if admin else None,
            "format": v.format,
        }))
    return out


def visible_volumes(stmt, caller) -> Any:
    stmt = stmt.where(Volume.removed.is_(None), Volume.state.not_in(GONE_STATES))
    if not caller.is_admin:
        stmt = stmt.where(Volume.account_id == caller.account_id)
    return stmt


def new_volume(session: Session, *, name: str, account_id: int, zone: Zone, pool: StoragePool, size: int,
               volume_type: str, template_id: int | None, now) -> Volume:
    volume = Volume(name=name, account_id=account_id, zone_id=zone.id, pool_id=pool.id, volume_type=volume_type,
                    state=VolumeState.Allocated.value, size=size, format=pool.volume_format, template_id=template_id,
                    created=now, updated=now)
    session.add(volume)
    session.flush()
    volume.path = volume_path(volume)
    transition(volume, VolumeEvent.CreateRequested, now)
    return volume


@dataclass(frozen=True)
class _Work:
    """What a job needs after its transaction ended (plain values, no ORM rows)."""

    volume_id: int
    volume_uuid: str
    pool_id: int
    pool_path: str
    path: str
    format: str
    size: int
    template_id: int | None


def _work(volume: Volume, pool: StoragePool) -> _Work:
    return _Work(volume.id, volume.uuid, pool.id, pool.path, volume.path, volume.format, volume.size,
                 volume.template_id)


def create_content(runtime: "Runtime", volume_id: int, job_log) -> bool:
    """Make the file of a Creating volume (blank, or a clone of its template's cached copy) and
    mark it Ready. Safe to run again after a dead attempt. False if the volume is no longer
    waiting for its file."""
    with runtime.session() as s:
        volume = s.get(Volume, volume_id)
        if volume is None or volume.state != VolumeState.Creating.value:
            return False
        work = _work(volume, s.get(StoragePool, volume.pool_id))
    pool = PosixPool(work.pool_path)
    try:
        if work.template_id is None:
            pool.create_blank(work.path, work.size, work.format)
            method = None
        else:
            cached = ensure_template_cached(runtime, work.template_id, work.pool_id, job_log)
            method = pool.clone(cached.path, cached.format, work.path, work.format, max(work.size, cached.size))
    except (OSError, PoolError) as exc:
        raise OperationFailed(f"Failed to create volume {work.volume_uuid}: {exc}") from None
    with runtime.session() as s:
        volume = s.get(Volume, volume_id)
        volume.clone_method = method
        volume.error_text = None
        transition(volume, VolumeEvent.OperationSucceeded, runtime.now())
    job_log.info("volume %s ready at %s/%s (%s)", work.volume_uuid, work.pool_path, work.path, method or "blank")
    scan_pool(runtime, work.pool_id)
    return True


def creation_failed(runtime: "Runtime", volume_id: int, reason: str) -> None:
    """A create job failed for good: the volume goes back to Allocated with the reason."""
    with runtime.session() as s:
        volume = s.get(Volume, volume_id)
        if volume is not None and volume.state == VolumeState.Creating.value:
            transition(volume, VolumeEvent.OperationFailed, runtime.now())
            volume.error_text = reason


def resize_content(runtime: "Runtime", volume_id: int, new_size: int, job_log) -> None:
    with runtime.session() as s:
        volume = s.get(Volume, volume_id)
        if volume is None or volume.state != VolumeState.Resizing.value:
            return
        work = _work(volume, s.get(StoragePool, volume.pool_id))
    try:
        PosixPool(work.pool_path).resize(work.path, work.format, new_size)
    except (OSError, PoolError) as exc:
        raise OperationFailed(f"Failed to resize volume {work.volume_uuid}: {exc}") from None
    with runtime.session() as s:
        volume = s.get(Volume, volume_id)
        volume.size = new_size
        transition(volume, VolumeEvent.OperationSucceeded, runtime.now())
    job_log.info("volume %s resized from %d to %d bytes", work.volume_uuid, work.size, new_size)
    scan_pool(runtime, work.pool_id)


def resize_failed(runtime: "Runtime", volume_id: int, reason: str) -> None:
    with runtime.session() as s:
        volume = s.get(Volume, volume_id)
        if volume is not None and volume.state == VolumeState.Resizing.value:
            transition(volume, VolumeEvent.OperationFailed, runtime.now())
            volume.error_text = reason


def expunge(session: Session, volume: Volume, now) -> None:
    """Remove a volume's file and mark it Expunged, in the caller's transaction: if the file
    can't be removed the caller's transaction fails and the volume is left as it was."""
    if volume.state != VolumeState.Destroy.value:
        transition(volume, VolumeEvent.DestroyRequested, now)
    transition(volume, VolumeEvent.ExpungingRequested, now)
    if volume.pool_id is not None and volume.path:
        pool = session.get(StoragePool, volume.pool_id)
        try:
            PosixPool(pool.path).delete(volume.path)
        except OSError as exc:
            raise OperationFailed(f"Failed to delete the file of volume {volume.uuid}: {exc}") from None
    transition(volume, VolumeEvent.OperationSucceeded, now)
    volume.vm_id = volume.device_id = None
    volume.removed = now
    log.info("volume %s expunged", volume.uuid)


# ---- templates cached on pools -------------------------------------------------------------------

@dataclass(frozen=True)
class CachedTemplate:
    path: str  # relative to the pool
    format: str
    size: int  # virtual size
    copied: bool  # this call made the copy


def _cached(row: TemplatePoolCache, copied: bool) -> CachedTemplate:
    return CachedTemplate(row.path, row.format, row.size or 0, copied)


def ensure_template_cached(runtime: "Runtime", template_id: int, pool_id: int, job_log) -> CachedTemplate:
    """The template's copy on the pool, copied from an image store (verified against the
    template's checksum) by the first caller only. Concurrent callers anywhere wait for that copy
    instead of making their own: inserting the (template, pool) row is the claim."""
    token = uuidlib.uuid4().hex
    waited_on: str | None = None
    while True:
        with runtime.session() as s:
            row = s.scalars(select(TemplatePoolCache).where(TemplatePoolCache.template_id == template_id,
                                                            TemplatePoolCache.pool_id == pool_id)).first()
            if row is not None and row.state == ObjectInStoreState.Ready.value:
                return _cached(row, False)
            if row is not None:
                stale = runtime.now() - row.claimed_at > CACHE_CLAIM_STALE
                if row.state == ObjectInStoreState.Failed.value and waited_on == row.claim_token:
                    raise OperationFailed(f"Copying the template to the storage pool failed: {row.error_text}")
                if row.state == ObjectInStoreState.Failed.value or stale:
                    taken = s.execute(update(TemplatePoolCache).where(
                        TemplatePoolCache.id == row.id, TemplatePoolCache.claim_token == row.claim_token
                    ).values(claim_token=token, claimed_at=runtime.now(), state=ObjectInStoreState.Creating.value,
                             error_text=None)).rowcount
                    if taken:
                        job_log.info("template %s on pool %s: taking over the copy of claim %s", template_id,
                                     pool_id, row.claim_token)
                        row_id = row.id
                    else:
                        continue
                else:
                    waited_on = row.claim_token
                    row_id = None
        if row is None:
            row_id = _claim(runtime, template_id, pool_id, token)
            if row_id is None:
                continue  # someone else claimed it first: wait for theirs
        if row_id is None:
            time.sleep(CACHE_POLL_SECONDS)
            continue
        return _copy_to_pool(runtime, row_id, token, job_log)


def _claim(runtime: "Runtime", template_id: int, pool_id: int, token: str) -> int | None:
    with runtime.session() as s:
        template = s.get(VMTemplate, template_id)
        now = runtime.now()
        row = TemplatePoolCache(template_id=template_id, pool_id=pool_id, state=ObjectInStoreState.Creating.value,
                                path=f"{CACHE_DIR}/{template.uuid}", format=template.format, claim_token=token,
                                claimed_at=now, created=now, updated=now)
        s.add(row)
        try:
            s.flush()
        except IntegrityError:
            s.rollback()
            return None
        return row.id


def _copy_to_pool(runtime: "Runtime", row_id: int, token: str, job_log) -> CachedTemplate:
    with runtime.session() as s:
        row = s.get(TemplatePoolCache, row_id)
        template_id, zone_id = row.template_id, s.get(StoragePool, row.pool_id).zone_id
    try:
        pull_to_staging(runtime, template_id, zone_id, job_log)  # a region-wide template: via the zone's staging
    except OperationFailed as exc:
        with runtime.session() as s:
            _fail_claim(s, s.get(TemplatePoolCache, row_id), token, runtime.now(), str(exc))
        raise
    with runtime.session() as s:
        row = s.get(TemplatePoolCache, row_id)
        pool = s.get(StoragePool, row.pool_id)
        template = s.get(VMTemplate, row.template_id)
        ref = ready_template_copy_in_zone(s, template, pool.zone)
        if ref is None:
            _fail_claim(s, row, token, runtime.now(), "no Ready copy of the template in the pool's zone")
            raise OperationFailed(f"Template {template.uuid} has no Ready copy in the zone of pool {pool.name}")
        driver = runtime.drivers.for_store(s.get(ImageStore, ref.store_id))
        source_key, checksum, size, path = ref.install_path, ref.checksum, ref.size, row.path
        pool_path, template_uuid, pool_uuid = pool.path, template.uuid, pool.uuid
    job_log.info("copying template %s to storage pool %s as %s", template_uuid, pool_uuid, path)
    last_beat = time.monotonic()

    def heartbeat(_done: int) -> None:
        nonlocal last_beat
        if time.monotonic() - last_beat >= CACHE_HEARTBEAT_SECONDS:
            last_beat = time.monotonic()
            with runtime.session() as hs:
                hs.execute(update(TemplatePoolCache).where(TemplatePoolCache.id == row_id,
                                                           TemplatePoolCache.claim_token == token)
                           .values(claimed_at=runtime.now()))

    try:
        result = copy_verified(driver, source_key, LocalDriver(pool_path), path, expected=parse_checksum(checksum),
                               progress=heartbeat)
    except (TransferError, StoreError, OSError, ValueError) as exc:
        with runtime.session() as s:
            _fail_claim(s, s.get(TemplatePoolCache, row_id), token, runtime.now(), str(exc))
        raise OperationFailed(f"Copying template {template_uuid} to storage pool {pool_uuid} failed: {exc}") from None
    with runtime.session() as s:
        row = s.get(TemplatePoolCache, row_id)
        if row.claim_token != token:
            raise OperationFailed(f"the copy of template {template_uuid} to pool {pool_uuid} was taken over")
        row.state, row.size, row.physical_size = ObjectInStoreState.Ready.value, size, result.size
        row.checksum, row.updated = checksum, runtime.now()
        job_log.info("template %s cached on storage pool %s (%d bytes, verified)", template_uuid, pool_uuid,
                     result.size)
        return _cached(row, True)


def _fail_claim(session: Session, row: TemplatePoolCache, token: str, now, reason: str) -> None:
    if row.claim_token == token:
        row.state, row.error_text, row.updated = ObjectInStoreState.Failed.value, reason, now


def ready_template_copy_in_zone(session: Session, template: VMTemplate, zone: Zone) -> TemplateStoreRef | None:
    return session.scalars(select(TemplateStoreRef).join(ImageStore, ImageStore.id == TemplateStoreRef.store_id)
                           .where(TemplateStoreRef.template_id == template.id,
                                  or_(TemplateStoreRef.zone_id == zone.id, TemplateStoreRef.zone_id.is_(None)),
                                  TemplateStoreRef.state.in_(READABLE_COPY_STATES),
                                  ImageStore.removed.is_(None))
                           # the zone's own copies (staging included) first, else a region-wide one
                           .order_by(TemplateStoreRef.zone_id.is_(None), TemplateStoreRef.id)).first()

