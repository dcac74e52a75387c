"""Keeping template copies where they belong, and downloads crash-safe.

- **New stores get the zone's public templates** (CloudStack issue #2689): public, featured
  and system templates live on every eligible store of their zone. When a store is added (or
  becomes eligible again: read-only cleared, space freed) the copies it lacks are queued, each
  copied store-to-store from a Ready copy (verified against its checksum) or downloaded from the
  template's URL when no copy is Ready. The unique (template, store) row makes this idempotent:
  running it twice, or in two processes at once, never queues a copy twice.
- **resetTemplateDownload**: a copy that failed (DOWNLOAD_ERROR, ABANDONED) or is stuck with no
  live job goes back to NOT_DOWNLOADED with a new job, instead of hand-edited database rows.
- **Stale writes**: a worker killed mid-download leaves an unpublished temporary file (or S3
  multipart upload) behind; a periodic clean-up aborts those older than
  ``secstorage.stale.write.age`` on every store. Nothing unpublished was ever visible.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import case, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from secstor.db.models import AsyncJob, ImageStore, TemplateStoreRef, VMTemplate
from secstor.domain import templates as dt
from secstor.domain.capacity import stores_for_new_data
from secstor.domain.errors import InvalidParameter
from secstor.domain.states import OBJECT_IN_STORE, DownloadState, JobState, ObjectInStoreEvent, ObjectInStoreState
from secstor.jobs.engine import enqueue
from secstor.movers.checksums import parse_checksum
from secstor.movers.transfer import TransferError, copy_verified
from secstor.services import templates as svc
from secstor.services.background import periodic_task
from secstor.services.image_stores import on_store_added
from secstor.stores.base import StoreError

if TYPE_CHECKING:
    from secstor.runtime import Runtime

log = logging.getLogger("secstor.templates.sync")

REPLICATE_HANDLER = "template.replicate"
SYNC_CMD = "templateSync"
PROPERTIES = "template.properties"
_LIVE_JOB_STATES = (JobState.pending.value, JobState.running.value)
_GONE_STATES = (ObjectInStoreState.Destroying.value, ObjectInStoreState.Destroyed.value)
_AWAITING_UPLOAD = (DownloadState.NOT_UPLOADED.value, DownloadState.UPLOAD_IN_PROGRESS.value)

# (handler, params, instance_type=, instance_id=) -> AsyncJob, as CallContext.submit_job
SubmitJob = Callable[..., AsyncJob]


def system_submitter(session: Session, runtime: "Runtime", cmd: str) -> SubmitJob:
    """A job submitter for work no API caller asked for (periodic tasks, the CLI)."""

    def submit(handler: str, params: dict[str, Any], *, instance_type: str | None = None,
               instance_id: str | None = None) -> AsyncJob:
        return enqueue(session, cmd=cmd, handler=handler, params=params, account_id=None, user_id=None,
                       instance_type=instance_type, instance_id=instance_id, now=runtime.now())

    return submit


# ---- queueing one copy ------------------------------------------------------------------------

def _ready_source(session: Session, template: VMTemplate, store_id: int,
                  zone_id: int | None) -> TemplateStoreRef | None:
    """A Ready copy on another live store to copy from, one of the same zone first."""
    return session.scalars(
        select(TemplateStoreRef).join(ImageStore, ImageStore.id == TemplateStoreRef.store_id)
        .where(TemplateStoreRef.template_id == template.id, TemplateStoreRef.store_id != store_id,
               TemplateStoreRef.state == ObjectInStoreState.Ready.value, TemplateStoreRef.install_path.is_not(None),
               ImageStore.removed.is_(None))
        .order_by(case((TemplateStoreRef.zone_id == zone_id, 0), else_=1), TemplateStoreRef.id).limit(1)).first()


def queue_copy(session: Session, runtime: "Runtime", template: VMTemplate, store_id: int, zone_id: int | None,
               submit_job: SubmitJob, *, ref: TemplateStoreRef | None = None) -> TemplateStoreRef | None:
    """Queue the job that fills one copy (a new row, or ``ref`` reset): a verified copy from a
    Ready copy elsewhere, else a download from the URL. None when there is no source at all (a
    template seeded from a file whose copies all failed)."""
    source = _ready_source(session, template, store_id, zone_id)
    if source is None and not template.url:
        return None
    if ref is None:
        ref = TemplateStoreRef(template_id=template.id, store_id=store_id, zone_id=zone_id,
                               state=ObjectInStoreState.Allocated.value, created=runtime.now())
        session.add(ref)
    ref.download_state, ref.download_pct, ref.error_text = DownloadState.NOT_DOWNLOADED.value, 0, None
    ref.updated = runtime.now()
    session.flush()
    if source is not None:
        handler, params = REPLICATE_HANDLER, {"ref_id": ref.id, "source_ref_id": source.id}
    else:
        handler, params = svc.DOWNLOAD_HANDLER, {"ref_id": ref.id}
    job = submit_job(handler, params, instance_type="Template", instance_id=template.uuid)
    session.flush()
    ref.job_id = job.id
    log.info("template %s (%s): copy %s on store %s queued as job %s (%s)", template.name, template.uuid, ref.id,
             store_id, job.uuid, "copy of copy %s" % source.id if source is not None else "download")
    return ref


# ---- new stores receive the zone's public templates -------------------------------------------

def _replicated():
    return or_(VMTemplate.is_public.is_(True), VMTemplate.featured.is_(True),
               VMTemplate.template_type.in_(dt.REPLICATED_TYPES))


def missing_on_store(session: Session, store: ImageStore) -> list[VMTemplate]:
    """Templates of the store's zone that every store of it holds, but this one does not.

    A template belongs to a zone while it has a copy there; one being deleted (a copy is
    Destroying) is left alone, so a deletion is never undone by a new copy."""
    ref = TemplateStoreRef
    in_zone = exists().where(ref.template_id == VMTemplate.id, ref.zone_id == store.zone_id)
    on_store = exists().where(ref.template_id == VMTemplate.id, ref.store_id == store.id)
    being_deleted = exists().where(ref.template_id == VMTemplate.id, ref.state.in_(_GONE_STATES))
    return list(session.scalars(
        select(VMTemplate).where(VMTemplate.removed.is_(None), VMTemplate.state == "Active", _replicated(),
                                 in_zone, ~on_store, ~being_deleted).order_by(VMTemplate.id)))


def sync_store(session: Session, runtime: "Runtime", store: ImageStore, submit_job: SubmitJob) -> int:
    """Queue the copies an eligible zone store lacks (in the caller's transaction). Returns
    how many were queued; 0 for a store that may not receive new data."""
    threshold = runtime.settings.get("secondary.storage.capacity.threshold")
    if store.zone_id is None or store.removed is not None or not stores_for_new_data([store], "firstfitleastconsumed",
                                                                                       threshold):
        return 0
    queued = [t for t in missing_on_store(session, store)
              if queue_copy(session, runtime, t, store.id, store.zone_id, submit_job) is not None]
    if queued:
        log.info("image store %s (%s): %d public or system templates queued to be copied there", store.name,
                 store.uuid, len(queued))
    return len(queued)


def sync_all(runtime: "Runtime") -> int:
    """Every zone store, each in a transaction of its own. Another process queueing the same
    copy first makes ours fail on the unique (template, store) row: that store is simply done."""
    with runtime.session() as s:
        store_ids = list(s.scalars(select(ImageStore.id).where(ImageStore.removed.is_(None),
                                                               ImageStore.zone_id.is_not(None))))
    total = 0
    for store_id in store_ids:
        try:
            with runtime.session() as s:
                store = s.get(ImageStore, store_id)
                total += sync_store(s, runtime, store, system_submitter(s, runtime, SYNC_CMD))
        except IntegrityError:
            log.info("image store %s: another process queued its template copies first", store_id)
    return total


def sync_interval_seconds(runtime: "Runtime") -> float:
    return float(runtime.settings.get("secstorage.template.sync.interval"))


@periodic_task("template-sync", sync_interval_seconds)
def _periodic_template_sync(runtime: "Runtime") -> None:
    sync_all(runtime)


# ---- the copy job -----------------------------------------------------------------------------

def replicate_copy(runtime: "Runtime", ref_id: int, source_ref_id: int, on_progress: Callable[[int], None],
                   job_log) -> VMTemplate | None:
    """Fill copy ``ref_id`` from Ready copy ``source_ref_id`` on another store, verified against
    the source's checksum; falls back to the URL when the source is gone. The template, or None
    if the copy is gone. Raises OperationFailed after recording DOWNLOAD_ERROR."""
    with runtime.session() as s:
        ref = s.get(TemplateStoreRef, ref_id)
        template = s.get(VMTemplate, ref.template_id) if ref is not None else None
        if ref is None or template is None or template.removed is not None:
            job_log.info("template copy %s no longer exists: nothing to copy", ref_id)
            return None
        if ref.state == ObjectInStoreState.Ready.value:
            return template
        source = s.get(TemplateStoreRef, source_ref_id)
        src_store = s.get(ImageStore, source.store_id) if source is not None else None
        usable = (source is not None and source.state == ObjectInStoreState.Ready.value and src_store is not None
                  and src_store.removed is None)
        if usable:
            retried = ref.state == ObjectInStoreState.Creating.value
            if not retried:
                ref.state = OBJECT_IN_STORE.next_state(ref.state, ObjectInStoreEvent.CreateOnlyRequested)
            ref.download_state, ref.download_pct = DownloadState.DOWNLOAD_IN_PROGRESS.value, 0
            ref.error_text, ref.updated = None, runtime.now()
            dst_store = s.get(ImageStore, ref.store_id)
            src_driver, dst_driver = runtime.drivers.for_store(src_store), runtime.drivers.for_store(dst_store)
            s.flush()
            s.expunge_all()
    if not usable:
        if not template.url:
            svc.fail_copy(runtime, ref_id, "No Ready copy is left to copy the template from, and it has no URL",
                          job_log)
        job_log.info("template %s (%s): source copy %s is gone; downloading from its URL", template.name,
                     template.uuid, source_ref_id)
        return svc.download_copy(runtime, ref_id, on_progress, job_log)
    key, directory = source.install_path, dt.install_dir(template.account_id, template.id)
    job_log.info("copying template %s (%s) from store %s to store %s", template.name, template.uuid, src_store.name,
                 dst_store.name)
    try:
        if retried:  # what a dead attempt may have left; its temporary file goes with stale writes
            dst_driver.delete_prefix(directory + "/")
        pct = svc.copy_percent_writer(runtime, ref_id, on_progress)
        copy_verified(src_driver, key, dst_driver, key, expected=parse_checksum(source.checksum),
                      progress=lambda done: pct(done, source.physical_size))
        properties = f"{directory}/{PROPERTIES}"
        dst_driver.put(properties, src_driver.open_reader(properties))
    except (TransferError, StoreError) as exc:
        dst_driver.delete_prefix(directory + "/")
        svc.fail_copy(runtime, ref_id, f"copy from image store {src_store.name} failed: {exc}", job_log)
    with runtime.session() as s:
        ref = s.get(TemplateStoreRef, ref_id)
        ref.state = OBJECT_IN_STORE.next_state(ref.state, ObjectInStoreEvent.OperationSucceeded)
        ref.download_state, ref.download_pct = DownloadState.DOWNLOADED.value, 100
        ref.install_path, ref.size, ref.physical_size = key, source.size, source.physical_size
        ref.checksum, ref.updated = source.checksum, runtime.now()
    job_log.info("template %s (%s) is ready on store %s (copied from store %s)", template.name, template.uuid,
                 dst_store.name, src_store.name)
    return template


# ---- reset ------------------------------------------------------------------------------------

def _live_job(session: Session, job_id: int | None) -> bool:
    return job_id is not None and session.scalar(select(AsyncJob.state).where(AsyncJob.id == job_id)) in \
        _LIVE_JOB_STATES


def refusal_to_reset(session: Session, ref: TemplateStoreRef) -> str | None:
    """Why a copy may not be reset, or None: a Ready copy needs nothing, a copy whose job is
    still queued or running is being downloaded, and a copy waiting for (or receiving) its upload
    has nothing to download."""
    if ref.state == ObjectInStoreState.Ready.value:
        return "is Ready"
    if ref.state in _GONE_STATES:
        return "is being deleted"
    if ref.download_state in _AWAITING_UPLOAD:
        return f"is {ref.download_state}: its file comes from an upload, not a download"
    if _live_job(session, ref.job_id):
        return f"is {ref.download_state} with its job still queued or running"
    return None


def reset_downloads(session: Session, runtime: "Runtime", template: VMTemplate, copies: list[TemplateStoreRef],
                    store_names: dict[int, str], submit_job: SubmitJob, *, strict: bool) -> list[TemplateStoreRef]:
    """Put failed or stuck copies back to NOT_DOWNLOADED, each with a new job. ``strict`` (one
    copy named): a copy that may not be reset is a 431; else such copies are skipped, and a 431
    says so when none is left."""
    what = "ISO" if template.is_iso else "template"
    refusals = {c.id: refusal_to_reset(session, c) for c in copies}
    resettable = [c for c in copies if refusals[c.id] is None]
    if strict or not resettable:
        for c in copies:
            if refusals[c.id] is not None:
                raise InvalidParameter(f"Cannot reset the download of {what} {template.name}: its copy on image store "
                                       f"{store_names[c.store_id]} {refusals[c.id]}", "id")
    for c in resettable:
        if queue_copy(session, runtime, template, c.store_id, c.zone_id, submit_job, ref=c) is None:
            raise InvalidParameter(f"Cannot reset the download of {what} {template.name}: it has no URL and no Ready "
                                   f"copy to copy from", "id")
        log.info("%s %s (%s): copy on store %s reset (was %s: %s)", what, template.name, template.uuid,
                 store_names[c.store_id], c.download_state, c.error_text)
    return resettable


# ---- stale writes -----------------------------------------------------------------------------

def clean_stale_writes(runtime: "Runtime") -> int:
    """Abort every store's unpublished writes older than ``secstorage.stale.write.age``: the
    temporary files (S3: multipart uploads) of workers that died mid-transfer. A live transfer
    writes continuously, so only abandoned ones are that old. Returns how many were aborted."""
    age = timedelta(seconds=int(runtime.settings.get("secstorage.stale.write.age")))
    with runtime.session() as s:
        stores = list(s.scalars(select(ImageStore).where(ImageStore.removed.is_(None)).order_by(ImageStore.id)))
        s.expunge_all()
    total = 0
    for store in stores:
        try:
            aborted = runtime.drivers.for_store(store).abort_stale_writes(age)
        except Exception as exc:  # an unreachable store is the capacity scan's to report
            log.warning("image store %s (%s): stale writes could not be cleaned up: %s", store.name, store.uuid, exc)
            continue
        if aborted:
            log.info("image store %s (%s): %d unfinished writes older than %s aborted", store.name, store.uuid,
                     aborted, age)
        total += aborted
    return total


def cleanup_interval_seconds(runtime: "Runtime") -> float:
    return float(runtime.settings.get("secstorage.stale.write.cleanup.interval"))


@periodic_task("stale-write-cleanup", cleanup_interval_seconds)
def _periodic_stale_write_cleanup(runtime: "Runtime") -> None:
    clean_stale_writes(runtime)


@on_store_added
def _new_store_receives_zone_templates(session: Session, runtime: "Runtime", store: ImageStore) -> None:
    sync_store(session, runtime, store, system_submitter(session, runtime, "addImageStore"))
