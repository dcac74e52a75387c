"""copyTemplate / copyIso: store-to-store copies of a Ready template into other zones, verified
against the checksum recorded for the source copy."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from secstor.db.models import ImageStore, TemplateStoreRef, VMTemplate, Zone
from secstor.domain import templates as dt
from secstor.domain.errors import InvalidParameter, OperationFailed
from secstor.domain.states import READABLE_COPY_STATES, DownloadState, ObjectInStoreState
from secstor.services import template_sync as sync
from secstor.services import templates as svc

if TYPE_CHECKING:
    from secstor.runtime import Runtime

log = logging.getLogger("secstor.templates")

COPY_HANDLER = "template.copy"
COPY_QUEUE = "copy"


def ready_source(session: Session, template: VMTemplate, zone: Zone | None) -> TemplateStoreRef:
    """A Ready copy to copy from (in ``zone`` if given); 431 as CloudStack when there is none."""
    stmt = (select(TemplateStoreRef)
            .where(TemplateStoreRef.template_id == template.id,
                   TemplateStoreRef.state.in_(READABLE_COPY_STATES))
            .order_by(TemplateStoreRef.id).limit(1))
    if zone is not None:
        stmt = stmt.where(TemplateStoreRef.zone_id == zone.id)
    source = session.scalars(stmt).first()
    if source is None:
        raise InvalidParameter(f"There is no template {template.uuid} ready on image store.", "id")
    return source


@dataclass(frozen=True)
class _Target:
    ref_id: int
    store_name: str
    zone_name: str


# A copy in one of these download states whose job is another one's is being filled by that job.
_BUSY = (DownloadState.NOT_DOWNLOADED.value, DownloadState.DOWNLOAD_IN_PROGRESS.value,
         DownloadState.UPLOAD_IN_PROGRESS.value)


def _targets(session: Session, runtime: "Runtime", template: VMTemplate, zones: list[Zone],
             job_id: int) -> list[_Target]:
    """The copies to make: in each zone without a Ready copy, the stores placement chooses.

    Every zone is placed before anything is copied, so a zone without an eligible store fails
    the job before any data moves. A zone where another job is already filling a copy is left
    to that job. A failed copy on a chosen store is taken over and filled again."""
    algorithm = runtime.settings.get("image.store.allocation.algorithm")
    threshold = runtime.settings.get("secondary.storage.capacity.threshold")
    replicate = dt.replicated(is_public=template.is_public, featured=template.featured,
                              template_type=template.template_type)
    what = "ISO" if template.is_iso else "template"
    existing = {r.store_id: r for r in session.scalars(
        select(TemplateStoreRef).where(TemplateStoreRef.template_id == template.id))}
    plan: list[tuple[Zone, list[ImageStore]]] = []
    for zone in zones:
        in_zone = [r for r in existing.values() if r.zone_id == zone.id]
        if any(dt.is_ready(r.state) for r in in_zone):
            log.info("%s %s (%s) already has a Ready copy in zone %s: nothing to copy there", what, template.name,
                     template.uuid, zone.name)
            continue
        if any(r.download_state in _BUSY and r.job_id not in (None, job_id) for r in in_zone):
            log.info("%s %s (%s) is already being copied or downloaded to zone %s", what, template.name,
                     template.uuid, zone.name)
            continue
        stores = list(session.scalars(select(ImageStore).where(ImageStore.zone_id == zone.id,
                                                               ImageStore.removed.is_(None)).order_by(ImageStore.id)))
        chosen = dt.stores_to_receive(stores, replicate=replicate, algorithm=algorithm, threshold=threshold)
        if not chosen:
            raise OperationFailed(f"Unable to find image store to copy the {what} {template.name} to zone {zone.name}")
        plan.append((zone, chosen))
    targets: list[_Target] = []
    for zone, chosen in plan:
        for store in chosen:
            ref = existing.get(store.id)
            if ref is None:
                ref = TemplateStoreRef(template_id=template.id, store_id=store.id, zone_id=zone.id,
                                       state=ObjectInStoreState.Allocated.value, created=runtime.now())
                session.add(ref)
            ref.download_state, ref.download_pct = DownloadState.NOT_DOWNLOADED.value, 0
            ref.error_text, ref.job_id, ref.updated = None, job_id, runtime.now()
            session.flush()
            targets.append(_Target(ref.id, store.name, zone.name))
    return targets


def copy_template(runtime: "Runtime", job_id: int, template_id: int, source_zone_id: int | None,
                  dest_zone_ids: list[int], progress: Callable[..., None], job_log) -> VMTemplate:
    """Copy a Ready copy of the template to every destination zone; the template.

    Each copy is made as the copies a new store receives are (template_sync.replicate_copy):
    verified against the source's recorded checksum before it turns Ready. One that fails is
    left in DOWNLOAD_ERROR with the reason and nothing of it on its store; the others are still
    made, and the job fails with the reasons."""
    with runtime.session() as s:
        template = s.get(VMTemplate, template_id)
        if template is None or template.removed is not None:
            raise OperationFailed(f"Template {template_id} was deleted before it could be copied")
        source = ready_source(s, template, s.get(Zone, source_zone_id) if source_zone_id is not None else None)
        targets = _targets(s, runtime, template, [s.get(Zone, z) for z in dest_zone_ids], job_id)
        source_id, size = source.id, source.physical_size or 0
        s.expunge_all()  # used after the session ends, without it
    total, failures = size * len(targets), []
    for done, target in enumerate(targets):
        def report(pct: int, base: int = done * size, done: int = done) -> None:
            progress(bytesdone=base + size * pct // 100, bytestotal=total, objectsdone=done,
                     objectstotal=len(targets))

        try:
            sync.replicate_copy(runtime, target.ref_id, source_id, report, job_log)
        except OperationFailed as exc:
            failures.append(f"image store {target.store_name} in zone {target.zone_name}: {exc.message}")
    progress(bytesdone=total, bytestotal=total, objectsdone=len(targets) - len(failures), objectstotal=len(targets))
    if failures:
        raise OperationFailed(f"Failed to copy template {template.name}: " + "; ".join(failures))
    return template


def copy_failed_for_good(runtime: "Runtime", job_id: int, reason: str) -> None:
    """A copy job failed for good without its copies recording it (its worker died on the last
    attempt): each copy it was filling ends DOWNLOAD_ERROR rather than "downloading" forever."""
    with runtime.session() as s:
        ref_ids = list(s.scalars(select(TemplateStoreRef.id).where(TemplateStoreRef.job_id == job_id)))
    for ref_id in ref_ids:
        svc.download_failed_for_good(runtime, job_id, ref_id, reason)
