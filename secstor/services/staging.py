"""Zone staging stores (role ImageCache) in front of a region-wide store.

A staging store holds cached copies only: placement never sends canonical data to it
(``secstor.domain.capacity.eligible_for_new_data`` wants role Image), so deleting one first
drops its cached copies, then the store itself.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from secstor.db.models import ImageStore, PendingStoreDeletion, TemplateStoreRef, VMTemplate, Zone
from secstor.domain import templates as dt
from secstor.domain.errors import InvalidParameter, OperationFailed
from secstor.domain.states import OBJECT_IN_STORE, DownloadState, ObjectInStoreEvent, ObjectInStoreState
from secstor.movers.checksums import parse_checksum
from secstor.movers.transfer import TransferError, copy_verified
from secstor.services.background import periodic_task
from secstor.services.capacity import measure
from secstor.services.image_stores import add_image_store, delete_image_store
from secstor.stores.base import StoreError

if TYPE_CHECKING:
    from secstor.runtime import Runtime
    from secstor.stores.base import StoreDriver

log = logging.getLogger("secstor.staging")

STAGING_ROLE = "ImageCache"
STAGING_PROVIDERS = ("Local", "NFS")


def create_staging_store(session: Session, runtime: "Runtime", *, url: str, zone: Zone | None,
                         provider: str | None, details: dict[str, str]) -> ImageStore:
    """Probe and save a staging store; any file provider (an S3 cache in front of S3 buys nothing)."""
    provider = (provider or "Local").strip()
    if provider.lower() not in {p.lower() for p in STAGING_PROVIDERS}:
        raise InvalidParameter(f"Invalid staging store provider {provider}: valid providers are "
                               f"{', '.join(STAGING_PROVIDERS)}", "provider")
    return add_image_store(session, runtime, provider=provider, url=url, name=None, zone=zone, details=details,
                           role=STAGING_ROLE)


def delete_staging_store(session: Session, runtime: "Runtime", store: ImageStore) -> None:
    """Drop the store's cached copies (objects, then rows), then the store."""
    if store.role != STAGING_ROLE:
        raise InvalidParameter(f"Image store {store.name} is not a secondary staging store", "id")
    cached = session.execute(select(TemplateStoreRef.id, VMTemplate.account_id, VMTemplate.id)
                             .join(VMTemplate, VMTemplate.id == TemplateStoreRef.template_id)
                             .where(TemplateStoreRef.store_id == store.id)).all()
    session.commit()  # no transaction open across store I/O
    driver = runtime.drivers.for_store(store)
    for ref_id, account_id, template_id in cached:
        removed = driver.delete_prefix(dt.install_dir(account_id, template_id) + "/")
        with runtime.session() as s:
            ref = s.get(TemplateStoreRef, ref_id)
            if ref is not None:
                s.delete(ref)
        log.info("staging store %s (%s): cached template %s dropped (%d objects)", store.name, store.uuid,
                 template_id, removed)
    delete_image_store(session, runtime, store)


# ---- pull on first use ------------------------------------------------------------------------

PULL_POLL_SECONDS = 0.2


def _region_source(session: Session, template_id: int) -> TemplateStoreRef | None:
    return session.scalars(select(TemplateStoreRef).join(ImageStore, ImageStore.id == TemplateStoreRef.store_id)
                           .where(TemplateStoreRef.template_id == template_id, TemplateStoreRef.zone_id.is_(None),
                                  TemplateStoreRef.state == ObjectInStoreState.Ready.value,
                                  ImageStore.removed.is_(None)).order_by(TemplateStoreRef.id)).first()


def _staging_store(session: Session, zone_id: int) -> ImageStore | None:
    return session.scalars(select(ImageStore).where(ImageStore.zone_id == zone_id, ImageStore.role == STAGING_ROLE,
                                                    ImageStore.readonly.is_(False), ImageStore.removed.is_(None))
                           .order_by(ImageStore.id)).first()


def pull_to_staging(runtime: "Runtime", template_id: int, zone_id: int, job_log) -> None:
    """Give the zone a Ready copy of a template held on a region-wide store: copied (verified
    against the stored checksum) into the zone's staging store on first use; later uses find
    that copy and only touch its ``last_used``. Nothing to do when the zone holds a copy of its
    own, has no staging store, or the template has no region copy (callers then use what exists).
    Concurrent first uses make one copy: the (template, store) row is the claim, the others wait."""
    deadline = time.monotonic() + runtime.settings.get("secstorage.staging.pull.wait")
    while True:
        with runtime.session() as s:
            own = s.scalars(select(TemplateStoreRef).where(TemplateStoreRef.template_id == template_id,
                                                          TemplateStoreRef.zone_id == zone_id)
                            .order_by(TemplateStoreRef.id)).all()
            ready = [r for r in own if r.state == ObjectInStoreState.Ready.value]
            if ready:
                ready[0].last_used = runtime.now()
                return
            source = _region_source(s, template_id)
            staging = _staging_store(s, zone_id) if source is not None else None
            if staging is None:
                return
            if any(r.store_id == staging.id for r in own):
                claimed = None  # another caller is pulling it: wait for its copy
            else:
                claimed = _claim(s, runtime, source, staging, zone_id)
            if claimed is not None:
                src_driver = runtime.drivers.for_store(s.get(ImageStore, source.store_id))
                dst_driver = runtime.drivers.for_store(staging)
                key, checksum, staging_name = source.install_path, source.checksum, staging.name
                template = s.get(VMTemplate, template_id)
                properties_key = f"{dt.install_dir(template.account_id, template.id)}/template.properties"
                template_uuid = template.uuid
                size, physical_size = source.size, source.physical_size
        if claimed is None:
            if time.monotonic() > deadline:
                raise OperationFailed(f"Template {template_id} is still being copied to the staging store of "
                                      f"zone {zone_id}: try again later")
            time.sleep(PULL_POLL_SECONDS)
            continue
        break
    job_log.info("template %s: pulling %s from the region store into staging store %s", template_uuid, key,
                 staging_name)
    try:
        copy_verified(src_driver, key, dst_driver, key, expected=parse_checksum(checksum))
        dst_driver.put(properties_key, [b"".join(src_driver.open_reader(properties_key))])
    except (TransferError, StoreError, OSError, ValueError) as exc:
        with runtime.session() as s:
            ref = s.get(TemplateStoreRef, claimed)
            if ref is not None:
                s.delete(ref)  # the next use tries again
        raise OperationFailed(f"Pulling template {template_uuid} into staging store {staging_name} failed: "
                              f"{exc}") from None
    with runtime.session() as s:
        ref = s.get(TemplateStoreRef, claimed)
        ref.state = OBJECT_IN_STORE.next_state(ref.state, ObjectInStoreEvent.OperationSucceeded)
        ref.download_state, ref.download_pct = DownloadState.DOWNLOADED.value, 100
        ref.install_path, ref.checksum, ref.size, ref.physical_size = key, checksum, size, physical_size
        ref.updated = ref.last_used = runtime.now()
    job_log.info("template %s is ready on staging store %s", template_uuid, staging_name)


def _claim(session: Session, runtime: "Runtime", source: TemplateStoreRef, staging: ImageStore,
           zone_id: int) -> int | None:
    ref = TemplateStoreRef(template_id=source.template_id, store_id=staging.id, zone_id=zone_id,
                           state=ObjectInStoreState.Creating.value,
                           download_state=DownloadState.DOWNLOAD_IN_PROGRESS.value, download_pct=0,
                           created=runtime.now())
    session.add(ref)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        return None
    return ref.id


# ---- least-recently-used eviction --------------------------------------------------------------

def evict_staging_copies(runtime: "Runtime") -> int:
    """On every staging store filled past ``secstorage.staging.eviction.threshold``, drop Ready
    cached copies, least recently used first, until it is back under; the number dropped. A
    store that cannot be measured is skipped (the next pass tries again)."""
    threshold = float(runtime.settings.get("secstorage.staging.eviction.threshold"))
    with runtime.session() as s:
        stores = list(s.scalars(select(ImageStore).where(ImageStore.role == STAGING_ROLE,
                                                         ImageStore.removed.is_(None)).order_by(ImageStore.id)))
        s.expunge_all()
    dropped = 0
    for store in stores:
        driver = runtime.drivers.for_store(store)
        try:
            capacity = measure(driver, store.capacity_bytes)
        except (StoreError, OSError) as exc:
            log.warning("staging store %s (%s) not measured, no eviction this pass: %s", store.name, store.uuid, exc)
            continue
        target = threshold * capacity.total_bytes
        used = capacity.used_bytes
        if used <= target:
            continue
        with runtime.session() as s:
            candidates = s.execute(
                select(TemplateStoreRef.id, TemplateStoreRef.physical_size, VMTemplate.account_id, VMTemplate.id)
                .join(VMTemplate, VMTemplate.id == TemplateStoreRef.template_id)
                .where(TemplateStoreRef.store_id == store.id,
                       TemplateStoreRef.state == ObjectInStoreState.Ready.value)
                .order_by(TemplateStoreRef.last_used.is_(None).desc(), TemplateStoreRef.last_used,
                          TemplateStoreRef.id)).all()
        for ref_id, physical_size, account_id, template_id in candidates:
            if used <= target:
                break
            with runtime.session() as s:  # gone from listings and lookups before its bytes go
                ref = s.get(TemplateStoreRef, ref_id)
                if ref is None or ref.state != ObjectInStoreState.Ready.value:
                    continue
                s.delete(ref)
            driver.delete_prefix(dt.install_dir(account_id, template_id) + "/")
            used -= physical_size or 0
            dropped += 1
            log.info("staging store %s (%s): least recently used copy of template %s evicted", store.name,
                     store.uuid, template_id)
    return dropped


def eviction_interval_seconds(runtime: "Runtime") -> float:
    return float(runtime.settings.get("secstorage.staging.eviction.interval"))


@periodic_task("staging-eviction", eviction_interval_seconds)
def _periodic_staging_eviction(runtime: "Runtime") -> None:
    evict_staging_copies(runtime)


# ---- delete once, clean everywhere ------------------------------------------------------------

def driver_if_reachable(runtime: "Runtime", store: ImageStore) -> tuple["StoreDriver | None", str | None]:
    """(driver, None) for a store that passes its probe, else (None, why)."""
    try:
        driver = runtime.drivers.for_store(store)
        failed = [c for c in driver.probe() if not c.ok and c.name != "free space"]
    except (StoreError, OSError, ValueError) as exc:
        return None, str(exc)
    if failed:
        return None, f"the {failed[0].name} check failed: {failed[0].detail}"
    return driver, None


def delete_cached_copy(runtime: "Runtime", store: ImageStore, prefix: str, job_log) -> int | None:
    """Remove a copy's directory from a staging or region store; the objects removed, or None when
    the store is unreachable: the removal is then recorded and retried by a periodic task until it
    succeeds, and the caller forgets the copy as if it were gone (the template does not wait for
    the store)."""
    driver, reason = driver_if_reachable(runtime, store)
    if driver is not None:
        try:
            return driver.delete_prefix(prefix)
        except (StoreError, OSError) as exc:
            reason = str(exc)
    with runtime.session() as s:
        if s.scalar(select(PendingStoreDeletion.id).where(PendingStoreDeletion.store_id == store.id,
                                                          PendingStoreDeletion.prefix == prefix)) is None:
            s.add(PendingStoreDeletion(store_id=store.id, prefix=prefix, attempts=1, last_error=reason,
                                       created=runtime.now()))
    job_log.warning("%s store %s (%s) unreachable, removal of %s postponed: %s", _kind(store), store.name, store.uuid,
                    prefix, reason)
    return None


def _kind(store: ImageStore) -> str:
    return "staging" if store.role == STAGING_ROLE else "region" if store.zone_id is None else "image"


def retry_pending_deletions(runtime: "Runtime") -> int:
    """Retry the removals staging and region stores owe; the number completed. A store still
    unreachable keeps its records (attempts and last error updated); a deleted store's records go."""
    with runtime.session() as s:
        pending = s.execute(select(PendingStoreDeletion, ImageStore)
                            .join(ImageStore, ImageStore.id == PendingStoreDeletion.store_id)
                            .order_by(PendingStoreDeletion.id)).all()
        s.expunge_all()
    done = 0
    probed: dict[int, tuple["StoreDriver | None", str | None]] = {}  # one probe per store and pass
    for record, store in pending:
        error = None
        if store.removed is None:
            if store.id not in probed:
                probed[store.id] = driver_if_reachable(runtime, store)
            driver, error = probed[store.id]
            if driver is not None:
                try:
                    removed = driver.delete_prefix(record.prefix)
                    log.info("%s store %s (%s): postponed removal of %s done (%d objects)", _kind(store), store.name,
                             store.uuid, record.prefix, removed)
                except (StoreError, OSError) as exc:
                    error = str(exc)
        with runtime.session() as s:
            row = s.get(PendingStoreDeletion, record.id)
            if row is None:
                continue
            if error is None:
                s.delete(row)
                done += 1
            else:
                row.attempts, row.last_error, row.updated = row.attempts + 1, error, runtime.now()
    return done


@periodic_task("staging-pending-deletions", eviction_interval_seconds)
def _periodic_pending_deletions(runtime: "Runtime") -> None:
    retry_pending_deletions(runtime)
