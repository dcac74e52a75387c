"""Zone templates synchronised up to the region store (the seed's "reaper").

Once a region-wide store exists, every template or ISO that is Ready on an image store of a zone
using the region (a zone with a staging store, as CloudStack needs one to use an S3 store) and has
no copy on a region store yet is uploaded there, so that every zone can pull it.

- **Once**: the copy row on the region store (unique per template and store) is the claim. A pass
  locks the region stores' rows first, so passes of several processes (the periodic task, a new
  store's trigger, finished uploads) queue one after the other and never claim a template twice.
- **Bounded**: at most ``secstorage.region.sync.parallel`` uploads are queued or running at a
  time across every process; each upload that ends queues the next ones. Each is a job of the
  ``copy`` queue, so a worker also runs at most ``secstorage.max.migrate.sessions`` of them.
- **Restartable**: an upload is a job; a worker that dies mid-upload leaves only an unpublished
  write (aborted by the stale-write clean-up) and its job runs again on another worker. An attempt
  that died after publishing the object finds it, verifies it against the source's checksum and
  records it without uploading it again. A failed upload (DOWNLOAD_ERROR on the region copy) is
  queued again by the next periodic pass.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from sqlalchemy import case, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from secstor.db.models import AsyncJob, ImageStore, TemplateStoreRef, VMTemplate
from secstor.domain import templates as dt
from secstor.domain.states import OBJECT_IN_STORE, DownloadState, JobState, ObjectInStoreEvent, ObjectInStoreState
from secstor.jobs.engine import enqueue
from secstor.jobs.handlers import RetryableJobError
from secstor.movers.checksums import parse_checksum
from secstor.movers.transfer import TransferError, copy_verified, verify_object
from secstor.services import templates as svc
from secstor.services.background import periodic_task
from secstor.services.image_stores import on_store_added
from secstor.services.staging import STAGING_ROLE, delete_cached_copy
from secstor.services.template_copy import COPY_QUEUE
from secstor.stores.base import ObjectNotFound, StoreError

if TYPE_CHECKING:
    from secstor.runtime import Runtime
    from secstor.stores.base import StoreDriver

log = logging.getLogger("secstor.templates.region")

UPLOAD_HANDLER = svc.REGION_UPLOAD_HANDLER
SYNC_HANDLER = "template.region.sync"
SYNC_CMD = "regionTemplateSync"
PROPERTIES = "template.properties"
_READY = ObjectInStoreState.Ready.value
_GONE_STATES = (ObjectInStoreState.Destroying.value, ObjectInStoreState.Destroyed.value)
_LIVE_JOB_STATES = (JobState.pending.value, JobState.running.value)


# ---- what to upload ---------------------------------------------------------------------------

def _zones_using_region():
    return select(ImageStore.zone_id).where(ImageStore.role == STAGING_ROLE, ImageStore.removed.is_(None),
                                            ImageStore.zone_id.is_not(None))


def _zone_copies(template_id):
    """Ready copies of a template on live zone image stores (staging copies come from the region)."""
    ref, store = aliased(TemplateStoreRef), aliased(ImageStore)
    return (select(ref).join(store, store.id == ref.store_id)
            .where(ref.template_id == template_id, ref.zone_id.is_not(None), ref.state == _READY,
                   ref.install_path.is_not(None), ref.checksum.is_not(None), store.role == "Image",
                   store.removed.is_(None)), ref)


def _templates_to_upload(session: Session, limit: int) -> list[int]:
    """Templates Ready in a zone using the region, with no region copy and not being deleted."""
    ref = TemplateStoreRef
    in_region_zone, zone_ref = _zone_copies(VMTemplate.id)
    in_region_zone = in_region_zone.where(zone_ref.zone_id.in_(_zones_using_region())).exists()
    on_region = exists().where(ref.template_id == VMTemplate.id, ref.zone_id.is_(None))
    being_deleted = exists().where(ref.template_id == VMTemplate.id, ref.state.in_(_GONE_STATES))
    return list(session.scalars(select(VMTemplate.id).where(VMTemplate.removed.is_(None), in_region_zone, ~on_region,
                                                            ~being_deleted).order_by(VMTemplate.id).limit(limit)))


def _failed_uploads(session: Session, limit: int) -> list[TemplateStoreRef]:
    """Region copies whose upload failed for good, that still have a zone copy to upload from."""
    ref = TemplateStoreRef
    source, _ = _zone_copies(ref.template_id)
    return list(session.scalars(
        select(ref).join(AsyncJob, AsyncJob.id == ref.job_id)
        .where(ref.zone_id.is_(None), ref.download_state == DownloadState.DOWNLOAD_ERROR.value,
               ref.state == ObjectInStoreState.Allocated.value, AsyncJob.handler == UPLOAD_HANDLER,
               AsyncJob.state.not_in(_LIVE_JOB_STATES), source.exists())
        .order_by(ref.id).limit(limit)))


def _source(session: Session, template_id: int, preferred: int | None) -> TemplateStoreRef | None:
    """A Ready zone copy to upload from: ``preferred`` while it is one, else the oldest."""
    stmt, ref = _zone_copies(template_id)
    return session.scalars(stmt.order_by(case((ref.id == preferred, 0), else_=1), ref.id).limit(1)).first()


# ---- queueing ---------------------------------------------------------------------------------

def queue_uploads(session: Session, runtime: "Runtime", *, retry_failed: bool = False, finishing_job: int | None = None,
                  queue: str = COPY_QUEUE) -> int:
    """Claim templates to upload and queue their upload jobs, in the caller's transaction, up to
    the parallel bound (``finishing_job``: an upload ending now, not counted). How many were queued."""
    # The lock comes first: on MariaDB the reads below then see every claim committed before.
    session.scalars(select(ImageStore.id).where(ImageStore.zone_id.is_(None), ImageStore.role == "Image",
                                                ImageStore.removed.is_(None)).with_for_update()).all()
    target = svc.region_store_to_receive(session, runtime.settings.get("image.store.allocation.algorithm"),
                                         runtime.settings.get("secondary.storage.capacity.threshold"))
    if target is None:
        return 0
    in_flight = select(func.count()).select_from(AsyncJob).where(AsyncJob.handler == UPLOAD_HANDLER,
                                                                  AsyncJob.state.in_(_LIVE_JOB_STATES))
    if finishing_job is not None:
        in_flight = in_flight.where(AsyncJob.id != finishing_job)
    room = int(runtime.settings.get("secstorage.region.sync.parallel")) - session.scalar(in_flight)
    queued = 0
    if retry_failed and room > 0:
        for ref in _failed_uploads(session, room):
            _queue(session, runtime, ref, queue)
            queued += 1
    for template_id in _templates_to_upload(session, room - queued) if room > queued else ():
        ref = TemplateStoreRef(template_id=template_id, store_id=target.id, zone_id=None,
                               state=ObjectInStoreState.Allocated.value, created=runtime.now())
        session.add(ref)
        _queue(session, runtime, ref, queue)
        queued += 1
    if queued:
        log.info("region store %s (%s): %d template uploads queued", target.name, target.uuid, queued)
    return queued


def _queue(session: Session, runtime: "Runtime", ref: TemplateStoreRef, queue: str) -> None:
    ref.download_state, ref.download_pct, ref.error_text = DownloadState.NOT_DOWNLOADED.value, 0, None
    ref.updated = runtime.now()
    session.flush()
    template = session.get(VMTemplate, ref.template_id)
    source = _source(session, template.id, None)
    job = enqueue(session, cmd=SYNC_CMD, handler=UPLOAD_HANDLER, params={"ref_id": ref.id, "source_ref_id": source.id},
                  account_id=None, user_id=None, instance_type="Iso" if template.is_iso else "Template",
                  instance_id=template.uuid, queue=queue, now=runtime.now())
    ref.job_id = job.id


def sync_to_region(runtime: "Runtime", *, retry_failed: bool = True, finishing_job: int | None = None) -> int:
    """One pass in a transaction of its own; the uploads queued."""
    try:
        with runtime.session() as s:
            return queue_uploads(s, runtime, retry_failed=retry_failed, finishing_job=finishing_job)
    except IntegrityError:  # only if the lock was bypassed: the other pass claimed them
        log.info("another process queued the same region uploads first")
        return 0


@periodic_task("region-sync", lambda runtime: float(runtime.settings.get("secstorage.region.sync.interval")))
def _periodic_region_sync(runtime: "Runtime") -> None:
    sync_to_region(runtime)


@on_store_added
def _store_joins_region(session: Session, runtime: "Runtime", store: ImageStore) -> None:
    """A new region store, or a staging store (its zone joins the region): a pass runs as a job
    once the store is saved, so the store's own transaction stays short."""
    if store.role == STAGING_ROLE or (store.zone_id is None and store.role == "Image"):
        enqueue(session, cmd="addImageStore", handler=SYNC_HANDLER, params={}, account_id=None, user_id=None,
                instance_type="ImageStore", instance_id=store.uuid, now=runtime.now())


# ---- one upload -------------------------------------------------------------------------------

def _already_uploaded(driver: "StoreDriver", key: str, checksum: str) -> bool:
    """The object an earlier attempt published (it died, or failed later on), if it verifies."""
    try:
        return driver.stat(key) is not None and verify_object(driver, key, parse_checksum(checksum))
    except ObjectNotFound:
        return False


def upload_copy(runtime: "Runtime", ref_id: int, source_ref_id: int, on_progress: Callable[[int], None],
                job_log) -> bool:
    """Fill region copy ``ref_id`` from a Ready zone copy (``source_ref_id`` while it is one),
    verified against the source's checksum; an object an earlier attempt published is verified
    and kept, not uploaded again. True once the copy is Ready; False when it is gone (its
    template was deleted: what was written is removed). A store error raises RetryableJobError
    (the copy stays Creating: the next attempt resumes); any other failure ends in
    DOWNLOAD_ERROR (OperationFailed)."""
    with runtime.session() as s:
        ref = s.get(TemplateStoreRef, ref_id)
        template = s.get(VMTemplate, ref.template_id) if ref is not None else None
        if ref is None or template is None or template.removed is not None or ref.state in _GONE_STATES:
            job_log.info("region copy %s is being deleted: nothing to upload", ref_id)
            return False
        if ref.state == _READY:
            return True
        source = _source(s, template.id, source_ref_id)
        if source is not None:
            if ref.state != ObjectInStoreState.Creating.value:  # Creating: an earlier attempt died midway
                ref.state = OBJECT_IN_STORE.next_state(ref.state, ObjectInStoreEvent.CreateOnlyRequested)
            ref.download_state, ref.download_pct = DownloadState.DOWNLOAD_IN_PROGRESS.value, 0
            ref.error_text, ref.updated = None, runtime.now()
            src_store, dst_store = s.get(ImageStore, source.store_id), s.get(ImageStore, ref.store_id)
            src, dst = runtime.drivers.for_store(src_store), runtime.drivers.for_store(dst_store)
            s.flush()
            s.expunge_all()
    if source is None:  # its zone copies were deleted since it was queued
        svc.fail_copy(runtime, ref_id, "No Ready zone copy is left to upload the template from", job_log)
    key, directory = source.install_path, dt.install_dir(template.account_id, template.id)
    properties = f"{directory}/{PROPERTIES}"
    try:
        if _already_uploaded(dst, key, source.checksum):
            job_log.info("template %s (%s): %s was uploaded by an earlier attempt (verified): not uploaded again",
                         template.name, template.uuid, key)
        else:
            job_log.info("uploading template %s (%s) from store %s to region store %s", template.name,
                         template.uuid, src_store.name, dst_store.name)
            pct = svc.copy_percent_writer(runtime, ref_id, on_progress)
            copy_verified(src, key, dst, key, expected=parse_checksum(source.checksum),
                          progress=lambda done: pct(done, source.physical_size))
        if dst.stat(properties) is None and src.stat(properties) is not None:
            dst.put(properties, src.open_reader(properties))
    except TransferError as exc:
        svc.fail_copy(runtime, ref_id, f"upload from image store {src_store.name} failed: {exc}", job_log)
    except (StoreError, OSError) as exc:
        raise RetryableJobError(f"upload of template {template.uuid} to region store {dst_store.name} "
                                f"interrupted: {exc}") from None
    with runtime.session() as s:
        ref = s.get(TemplateStoreRef, ref_id, with_for_update=True)  # a deletion waits, or went first
        recorded = ref is not None and ref.state == ObjectInStoreState.Creating.value
        if recorded:
            ref.state = OBJECT_IN_STORE.next_state(ref.state, ObjectInStoreEvent.OperationSucceeded)
            ref.download_state, ref.download_pct = DownloadState.DOWNLOADED.value, 100
            ref.install_path, ref.checksum = key, source.checksum
            ref.size, ref.physical_size, ref.updated = source.size, source.physical_size, runtime.now()
    if not recorded:
        delete_cached_copy(runtime, dst_store, directory + "/", job_log)
        job_log.info("template %s (%s) was deleted during its upload: the region copy is removed", template.name,
                     template.uuid)
        return False
    job_log.info("template %s (%s) is ready on region store %s", template.name, template.uuid, dst_store.name)
    return True
