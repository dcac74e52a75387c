"""Templates and ISOs: registration and placement, the download of one copy, listing, deletion."""

from __future__ import annotations

import json
import logging
import time
import uuid as uuidlib
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import and_, bindparam, false, or_, select, union_all
from sqlalchemy.orm import Session, object_session

from secstor.api.format import cs_date
from secstor.db.models import (
    Account, AsyncJob, Domain, ImageStore, LaunchPermission, TemplateStoreRef, VMTemplate, Zone,
)
from secstor.domain import templates as dt
from secstor.domain.errors import InvalidParameter, OperationFailed
from secstor.domain.states import (
    OBJECT_IN_STORE,
    READABLE_COPY_STATES,
    DownloadState,
    ObjectInStoreEvent,
    ObjectInStoreState,
)
from secstor.domain.urlsafety import ALLOWANCE_SETTING, UnsafeUrl, check_url
from secstor.movers.checksums import Checksum, UnknownChecksumAlgorithm, parse_checksum
from secstor.movers.download import DownloadOptions, download_to_store
from secstor.movers.inspect import ImageRejected, inspect_store_object
from secstor.movers.transfer import TransferError, TransferResult
from secstor.services.image_stores import store_reference_check
from secstor.services.staging import STAGING_ROLE, delete_cached_copy
from secstor.stores.base import StoreError

if TYPE_CHECKING:
    from secstor.runtime import Runtime
    from secstor.stores.base import StoreDriver
    from secstor.stores.base import StoreDriver

log = logging.getLogger("secstor.templates")

DOWNLOAD_HANDLER = "template.download"
DELETE_HANDLER = "template.delete"
REGION_UPLOAD_HANDLER = "template.region.upload"  # secstor.services.region_sync
ALL_ZONES = "-1"
PCT_WRITE_SECONDS = 1.0  # a copy's download percentage is written at most this often
GIB = 1 << 30
DOWNLOADING_REFUSAL = "Please specify a template that is not currently being downloaded."


def parse_given_checksum(text: str | None) -> str | None:
    """The canonical ``{ALG}hex`` of a user's checksum, or None; 431 on bad input."""
    if text is None or not text.strip():
        return None
    try:
        return str(parse_checksum(text))
    except UnknownChecksumAlgorithm as exc:
        raise InvalidParameter(str(exc), "checksum") from None
    except ValueError as exc:
        raise InvalidParameter(f"Invalid checksum: {exc}", "checksum") from None


# ---- registration -----------------------------------------------------------------------------

@dataclass
class NewTemplate:
    name: str
    displaytext: str | None
    format: str
    url: str | None  # None: uploaded through getUploadParamsFor*
    is_iso: bool
    account_id: int
    hypervisor: str | None = None
    ostypeid: str | None = None
    checksum: str | None = None
    is_public: bool = False
    featured: bool = False
    extractable: bool = False
    bootable: bool = True
    passwordenabled: bool = False
    sshkeyenabled: bool = False
    isdynamicallyscalable: bool = False
    requireshvm: bool = True
    bits: int = 64
    template_type: str = "USER"


def _zones(session: Session, zone_ids: list[str]) -> tuple[list[Zone], bool]:
    """The zones named (``-1``: every zone) and whether the template is cross-zone."""
    if zone_ids == [ALL_ZONES]:
        zones = list(session.scalars(select(Zone).where(Zone.removed.is_(None)).order_by(Zone.id)))
        return zones, True
    if ALL_ZONES in zone_ids:
        raise InvalidParameter("-1 (all zones) cannot be combined with other zones", "zoneids")
    found = {z.uuid: z for z in session.scalars(select(Zone).where(Zone.uuid.in_(zone_ids), Zone.removed.is_(None)))}
    for zid in zone_ids:
        if zid not in found:
            raise InvalidParameter(f"Unable to find zone by id {zid}", "zoneid")
    return [found[z] for z in dict.fromkeys(zone_ids)], False


def _placement(session: Session, runtime: "Runtime", zones: list[Zone], replicate: bool,
               what: str, name: str, cross_zones: bool, *, region_wide: bool
               ) -> list[tuple[Zone | None, ImageStore]]:
    """(zone, store) of each copy to make; zone None for the one copy on a region-wide store."""
    algorithm = runtime.settings.get("image.store.allocation.algorithm")
    threshold = runtime.settings.get("secondary.storage.capacity.threshold")
    region = region_store_to_receive(session, algorithm, threshold) if region_wide else None
    if region is not None:
        return [(None, region)]
    stores_by_zone: dict[int, list[ImageStore]] = defaultdict(list)
    for store in session.scalars(select(ImageStore).where(ImageStore.zone_id.in_([z.id for z in zones]),
                                                          ImageStore.removed.is_(None)).order_by(ImageStore.id)):
        stores_by_zone[store.zone_id].append(store)
    placed: list[tuple[Zone, ImageStore]] = []
    for zone in zones:
        chosen = dt.stores_to_receive(stores_by_zone[zone.id], replicate=replicate, algorithm=algorithm,
                                      threshold=threshold)
        if not chosen and not cross_zones:
            raise OperationFailed(f"Unable to find image store to download the {what} {name} in zone {zone.name}")
        placed.extend((zone, store) for store in chosen)
    if not placed:
        raise OperationFailed(f"Unable to find image store to download the {what} {name}")
    return placed


def region_store_to_receive(session: Session, algorithm: str, threshold: float) -> ImageStore | None:
    """The region-wide store that gets a registered template's one canonical copy, if any.

    As CloudStack with an S3 store: once a region store exists it is every zone's home for new
    templates and ISOs, and zones pull copies into their staging stores (secstor.services.staging).
    """
    stores = list(session.scalars(select(ImageStore).where(ImageStore.scope == "REGION", ImageStore.zone_id.is_(None),
                                                           ImageStore.removed.is_(None)).order_by(ImageStore.id)))
    chosen = dt.stores_to_receive(stores, replicate=False, algorithm=algorithm, threshold=threshold)
    return chosen[0] if chosen else None


def create_with_copies(session: Session, runtime: "Runtime", spec: NewTemplate, zone_ids: list[str], *,
                       download_state: DownloadState, single_store: bool = False
                       ) -> tuple[VMTemplate, list[TemplateStoreRef]]:
    """Create the template and one copy row per store placement chooses; ``single_store``: one
    store per zone whatever the template's kind (an upload lands on one store)."""
    what = "ISO" if spec.is_iso else "template"
    zones, cross_zones = _zones(session, zone_ids)
    replicate = not single_store and dt.replicated(is_public=spec.is_public, featured=spec.featured,
                                                   template_type=spec.template_type)
    # An upload or a createTemplate lands in the zone it was asked in, region store or not.
    placed = _placement(session, runtime, zones, replicate, what, spec.name, cross_zones,
                        region_wide=not single_store)
    template = VMTemplate(**vars(spec), cross_zones=cross_zones, created=runtime.now())
    session.add(template)
    session.flush()
    refs = [TemplateStoreRef(template_id=template.id, store_id=store.id, zone_id=zone.id if zone else None,
                             state=ObjectInStoreState.Allocated.value, download_state=download_state.value,
                             download_pct=0, created=runtime.now())
            for zone, store in placed]
    session.add_all(refs)
    session.flush()
    return template, refs


def register(session: Session, runtime: "Runtime", spec: NewTemplate, zone_ids: list[str],
             submit_job: Callable[..., Any]) -> VMTemplate:
    """Create the template, one copy per chosen store and one download job per copy."""
    try:
        check_url(spec.url)
    except UnsafeUrl as exc:
        raise InvalidParameter(f"Invalid url {spec.url}: {exc}", "url") from None
    template, refs = create_with_copies(session, runtime, spec, zone_ids, download_state=DownloadState.NOT_DOWNLOADED)
    for ref in refs:
        job = submit_job(DOWNLOAD_HANDLER, {"ref_id": ref.id}, instance_type="Template", instance_id=template.uuid)
        session.flush()
        ref.job_id = job.id
    log.info("%s %s (%s) registered from %s: %d copies to download", "ISO" if spec.is_iso else "template",
             template.name, template.uuid, spec.url, len(refs))
    return template


# ---- download of one copy ---------------------------------------------------------------------

def download_options(runtime: "Runtime") -> DownloadOptions:
    s = runtime.settings
    return DownloadOptions(
        allowed_cidrs=tuple(s.get(ALLOWANCE_SETTING)),
        connect_timeout=float(s.get("secstorage.download.connect.timeout")),
        read_timeout=float(s.get("secstorage.download.read.timeout")),
        stall_timeout=float(s.get("secstorage.download.stall.timeout")),
        max_retries=int(s.get("secstorage.download.max.retries")),
        max_bytes=int(s.get("max.template.iso.size")) * GIB,
        ca_bundle=s.get("secstorage.download.ca.bundle") or None,
    )


def update_copy(runtime: "Runtime", ref_id: int, event: ObjectInStoreEvent | None = None, **values: Any) -> None:
    """Set columns of a copy (and apply ``event`` to its state) in a transaction of its own."""
    with runtime.session() as s:
        ref = s.get(TemplateStoreRef, ref_id)
        if ref is None:
            return
        if event is not None:
            ref.state = OBJECT_IN_STORE.next_state(ref.state, event)
        for k, v in values.items():
            setattr(ref, k, v)
        ref.updated = runtime.now()


class PercentWriter:
    """Records a transfer's percentage (``record(pct)``, then ``on_progress(pct)``) at most once
    per PCT_WRITE_SECONDS: a progress callback of download_to_store or write_verified."""

    def __init__(self, record: Callable[[int], None], on_progress: Callable[[int], None]):
        self.record, self.on_progress = record, on_progress
        self.written_at = 0.0
        self.pct = 0

    def __call__(self, done: int, total: int | None) -> None:
        pct = min(int(done * 100 / total), 100) if total else 0
        now = time.monotonic()
        if pct != self.pct and now - self.written_at >= PCT_WRITE_SECONDS:
            self.pct, self.written_at = pct, now
            self.record(pct)
            self.on_progress(pct)


def copy_percent_writer(runtime: "Runtime", ref_id: int, on_progress: Callable[[int], None]) -> PercentWriter:
    """A PercentWriter into a template copy's download_pct."""
    return PercentWriter(lambda pct: update_copy(runtime, ref_id, download_pct=pct), on_progress)


# (driver, key, expected checksum, algorithms, progress(done, total)) -> the verified write's result
Fetch = Callable[["StoreDriver", str, "Checksum | None", tuple[str, ...], Callable[[int, "int | None"], None]],
                 TransferResult]


def download_copy(runtime: "Runtime", ref_id: int, on_progress: Callable[[int], None], job_log, *,
                  fetch: Fetch | None = None) -> VMTemplate | None:
    """Download, verify and inspect one copy; the template, or None if the copy is gone.
    Raises OperationFailed with the reason after recording DOWNLOAD_ERROR on the copy.
    ``fetch`` writes the bytes from elsewhere than the template's URL (a seeded local file)."""
    with runtime.session() as s:
        ref = s.get(TemplateStoreRef, ref_id)
        template = s.get(VMTemplate, ref.template_id) if ref is not None else None
        if ref is None or template is None or template.removed is not None:
            job_log.info("template copy %s no longer exists: nothing to download", ref_id)
            return None
        if ref.state == ObjectInStoreState.Ready.value:
            return template
        retried = ref.state == ObjectInStoreState.Creating.value  # an earlier attempt died mid-way
        if not retried:
            ref.state = OBJECT_IN_STORE.next_state(ref.state, ObjectInStoreEvent.CreateOnlyRequested)
        ref.download_state = DownloadState.DOWNLOAD_IN_PROGRESS.value
        ref.download_pct, ref.error_text, ref.updated = 0, None, runtime.now()
        store = s.get(ImageStore, ref.store_id)
        driver = runtime.drivers.for_store(store)
        key = dt.install_key(template.account_id, template.id, str(uuidlib.uuid4()), template.format)
        s.flush()
        s.expunge_all()  # used after the session ends, without it
    expected = parse_checksum(template.checksum) if template.checksum else None
    if retried:
        # The dead attempt may have published its image (and died before recording it) under
        # a name this attempt will not use: start from an empty directory. Its unpublished
        # temporary file is removed by the stale-write clean-up (secstor.services.template_sync).
        removed = driver.delete_prefix(dt.install_dir(template.account_id, template.id) + "/")
        if removed:
            job_log.info("template %s (%s): %d objects of an earlier attempt removed from store %s", template.name,
                         template.uuid, removed, store.name)
    job_log.info("downloading template %s (%s) to store %s as %s", template.name, template.uuid, store.name, key)
    try:
        if fetch is not None:
            result = fetch(driver, key, expected, ("SHA-512", "SHA-256"),
                           copy_percent_writer(runtime, ref_id, on_progress))
        else:
            result = download_to_store(template.url, driver, key, expected=expected,
                                       algorithms=("SHA-512", "SHA-256"), options=download_options(runtime),
                                       progress=copy_percent_writer(runtime, ref_id, on_progress))
    except (TransferError, StoreError) as exc:
        fail_copy(runtime, ref_id, str(exc), job_log)
    update_copy(runtime, ref_id, download_pct=100)
    return finish_copy(runtime, ref_id, template, store, driver, key, result.digests, job_log)


def finish_copy(runtime: "Runtime", ref_id: int, template: VMTemplate, store: ImageStore, driver: "StoreDriver",
                key: str, digests: dict[str, str], job_log, *,
                failed_state: DownloadState = DownloadState.DOWNLOAD_ERROR) -> VMTemplate:
    """The last step of every new copy, downloaded or uploaded, once its bytes are written and
    verified (``digests`` holds their SHA-512 and SHA-256): inspect the image, write
    template.properties next to it and mark the copy Ready. An image whose content is refused
    is deleted and the copy ends in ``failed_state`` (OperationFailed raised)."""
    try:
        info = inspect_store_object(driver, key, template.format)
    except ImageRejected as exc:
        driver.delete(key)
        fail_copy(runtime, ref_id, exc.reason, job_log, failed_state)
    digest = Checksum("SHA-512", digests["SHA-512"])
    checksum = template.checksum or str(digest)
    filename = key.rsplit("/", 1)[1]
    properties = dt.template_properties(
        filename=filename, template_id=template.id, uniquename=template.uuid, description=template.displaytext,
        is_public=template.is_public, fmt=template.format, physical_size=info.physical_size,
        virtual_size=info.virtual_size, checksum=checksum, requireshvm=template.requireshvm)
    driver.put(f"{dt.install_dir(template.account_id, template.id)}/template.properties", [properties.encode()])
    with runtime.session() as s:
        ref = s.get(TemplateStoreRef, ref_id)
        ref.state = OBJECT_IN_STORE.next_state(ref.state, ObjectInStoreEvent.OperationSucceeded)
        ref.download_state, ref.download_pct = DownloadState.DOWNLOADED.value, 100
        ref.install_path, ref.size, ref.physical_size, ref.checksum = key, info.virtual_size, info.physical_size, checksum
        ref.updated = runtime.now()
        template = s.get(VMTemplate, ref.template_id)
        template.size, template.physical_size = info.virtual_size, info.physical_size
        template.checksum_computed, template.sha256 = str(digest), digests["SHA-256"]
    job_log.info("template %s (%s) is ready on store %s", template.name, template.uuid, store.name)
    return template


def fail_copy(runtime: "Runtime", ref_id: int, reason: str, job_log,
              failed_state: DownloadState = DownloadState.DOWNLOAD_ERROR) -> None:
    """Record a copy's failure (``failed_state`` with the reason) and raise OperationFailed."""
    job_log.warning("template copy %s failed: %s", ref_id, reason)
    update_copy(runtime, ref_id, ObjectInStoreEvent.OperationFailed, download_state=failed_state.value,
                error_text=reason)
    raise OperationFailed(reason)


def download_failed_for_good(runtime: "Runtime", job_id: int, ref_id: int, reason: str) -> None:
    """The download job of a copy failed for good without the copy recording it (its worker
    died on the last attempt, or it crashed): the copy ends DOWNLOAD_ERROR with the reason
    rather than showing "downloading" forever. A copy reset since (another job) is left alone."""
    with runtime.session() as s:
        ref = s.get(TemplateStoreRef, ref_id)
        if ref is None or ref.job_id != job_id or ref.download_state not in (
                DownloadState.NOT_DOWNLOADED.value, DownloadState.DOWNLOAD_IN_PROGRESS.value):
            return
        if ref.state == ObjectInStoreState.Creating.value:
            ref.state = OBJECT_IN_STORE.next_state(ref.state, ObjectInStoreEvent.OperationFailed)
        ref.download_state, ref.error_text, ref.updated = DownloadState.DOWNLOAD_ERROR.value, reason, runtime.now()
    log.warning("template copy %s (job %s) ends in DOWNLOAD_ERROR: %s", ref_id, job_id, reason)


# ---- deletion ---------------------------------------------------------------------------------

def copies_to_delete(session: Session, template: VMTemplate, zone: Zone | None) -> list[TemplateStoreRef]:
    """Every copy, or those of one zone: its zone stores' and staging stores' copies. A copy on a
    region-wide store serves every zone, so a zone's deletion keeps it while another live zone
    may use it, unless it is not Ready and the zone held the last Ready copy it could be filled from."""
    copies = list(session.scalars(select(TemplateStoreRef).where(TemplateStoreRef.template_id == template.id)
                                  .order_by(TemplateStoreRef.id)))
    if zone is None:
        return copies
    region = [c for c in copies if c.zone_id is None]
    if region and _region_copy_kept(session, copies, zone):
        region = []
    return [c for c in copies if c.zone_id == zone.id] + region


def _region_copy_kept(session: Session, copies: list[TemplateStoreRef], zone: Zone) -> bool:
    other_zone = session.scalar(select(Zone.id).where(Zone.id != zone.id, Zone.removed.is_(None)).limit(1))
    ready = ObjectInStoreState.Ready.value
    return other_zone is not None and any(c.state == ready and c.zone_id != zone.id for c in copies)


def refuse_while_downloading(copies: list[TemplateStoreRef]) -> None:
    busy = (DownloadState.DOWNLOAD_IN_PROGRESS.value, DownloadState.UPLOAD_IN_PROGRESS.value)
    if any(c.download_state in busy and not _region_sync_upload(c) for c in copies):
        raise InvalidParameter(DOWNLOADING_REFUSAL, "id")


def _region_sync_upload(copy: TemplateStoreRef) -> bool:
    """A region copy the background sync is uploading: no reason to refuse a deletion (the
    upload removes what it wrote once it finds its copy deleted)."""
    session = object_session(copy)
    return copy.zone_id is None and copy.job_id is not None and session is not None and session.scalar(
        select(AsyncJob.handler).where(AsyncJob.id == copy.job_id)) == REGION_UPLOAD_HANDLER


def delete(runtime: "Runtime", template_id: int, zone_id: int | None, job_log) -> None:
    """Remove the copies (of one zone, or all) from their stores, then their rows; the template
    itself is removed once no copy is left."""
    with runtime.session() as s:
        template = s.get(VMTemplate, template_id)
        zone = s.get(Zone, zone_id) if zone_id is not None else None
        copies = copies_to_delete(s, template, zone)
        refuse_while_downloading(copies)
        for c in copies:
            c.state = OBJECT_IN_STORE.next_state(c.state, ObjectInStoreEvent.DestroyRequested)
        targets = [(c.id, s.get(ImageStore, c.store_id)) for c in copies]
        directory = dt.install_dir(template.account_id, template.id)
        s.flush()
        s.expunge_all()
    for ref_id, store in targets:
        if store.role == STAGING_ROLE or store.zone_id is None:  # an offline staging or region store
            removed = delete_cached_copy(runtime, store, directory + "/", job_log)  # must not hold it up
        else:
            removed = runtime.drivers.for_store(store).delete_prefix(directory + "/")
        if removed is not None:
            job_log.info("template %s: %d objects removed from store %s", template.uuid, removed, store.name)
        with runtime.session() as s:
            ref = s.get(TemplateStoreRef, ref_id)
            if ref is not None:
                s.delete(ref)
    with runtime.session() as s:
        left = s.scalar(select(TemplateStoreRef.id).where(TemplateStoreRef.template_id == template_id).limit(1))
        if left is None:
            t = s.get(VMTemplate, template_id)
            t.removed, t.state = runtime.now(), "Inactive"
            job_log.info("template %s (%s) deleted", t.name, t.uuid)


@store_reference_check
def _holds_template_copies(session: Session, runtime: "Runtime", store: ImageStore) -> str | None:
    held = session.scalar(select(TemplateStoreRef.id).join(VMTemplate, VMTemplate.id == TemplateStoreRef.template_id)
                          .where(TemplateStoreRef.store_id == store.id, VMTemplate.removed.is_(None)).limit(1))
    return "Cannot delete image store with active templates backup!" if held is not None else None


# ---- region-wide copies in the listing (issue 6) -----------------------------------------------
# A copy on a region-wide store has no zone (zone_id NULL) and counts for every live zone.

def region_copies_possible(session: Session) -> bool:
    """Whether a copy may have no zone: only a store without a zone (region-wide, removed or
    not) holds such copies. Without one, listings join the copies directly: the copy/zone
    union of copy_zones costs listTemplates 2-3 times more on 100,000 templates."""
    return session.scalar(select(ImageStore.id).where(ImageStore.zone_id.is_(None)).limit(1)) is not None


def copy_zones(first: int | None = None, last: int | None = None):
    """(template_id, zone_id, state) of every copy and zone it serves: its own zone, or every
    live zone for a copy on a region-wide store; only of templates with ids from ``first`` to
    ``last`` if given (inside the union, so SQLite does not build it for every template)."""
    ref = TemplateStoreRef
    own = select(ref.template_id, ref.zone_id, ref.state).where(ref.zone_id.is_not(None))
    region = (select(ref.template_id, Zone.id.label("zone_id"), ref.state)
              .join(Zone, and_(ref.zone_id.is_(None), Zone.removed.is_(None))))
    if first is not None:
        own, region = (part.where(ref.template_id >= first) for part in (own, region))
    if last is not None:
        own, region = (part.where(ref.template_id <= last) for part in (own, region))
    return union_all(own, region).subquery("copy_zones")


def with_region_copies(session: Session, pairs: list[tuple[int, int | None]],
                       copies: dict[tuple[int, int | None], list]) -> dict[tuple[int, int | None], list]:
    """``copies`` by (template, zone) with each template's region-wide copies added to every
    zone of ``pairs``, named as that zone (a copy's last two fields are its zone's uuid and name)."""
    if not any(t_zone[1] is None for t_zone in copies):
        return copies
    zones = {z.id: z for z in session.execute(select(Zone.id, Zone.uuid, Zone.name)
                                              .where(Zone.id.in_({z for _, z in pairs if z is not None})))}
    merged = defaultdict(list, copies)
    for t, z in pairs:
        if z is not None and copies.get((t, None)):
            merged[(t, z)] = list(copies.get((t, z), [])) + [(*row[:-2], zones[z].uuid, zones[z].name)
                                                               for row in copies[(t, None)]]
    return merged


# ---- listing ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ListQuery:
    is_iso: bool
    visibility: dt.Visibility
    account_id: int
    is_admin: bool
    template_uuid: str | None = None
    name: str | None = None
    keyword: str | None = None
    zone_id: int | None = None
    hypervisor: str | None = None
    bootable: bool | None = None
    is_public: bool | None = None
    ready_only: bool = False


def _visible(q: ListQuery):
    v = q.visibility
    if v.everything:
        return None
    conditions = []
    if v.own:
        conditions.append(VMTemplate.account_id == q.account_id)
    if v.public == "any":
        conditions.append(VMTemplate.is_public.is_(True))
    elif v.public == "featured":
        conditions.append(and_(VMTemplate.is_public.is_(True), VMTemplate.featured.is_(True)))
    elif v.public == "community":
        conditions.append(and_(VMTemplate.is_public.is_(True), VMTemplate.featured.is_(False)))
    if v.shared:
        conditions.append(VMTemplate.id.in_(
            select(LaunchPermission.template_id).where(LaunchPermission.account_id == q.account_id)))
    visible = or_(*conditions) if conditions else false()
    if not (v.system_listed and q.is_admin):
        visible = and_(visible, VMTemplate.template_type != "SYSTEM")
    return visible


def zone_rows_select(q: ListQuery, template_ids: tuple[int, int] | None = None, *, region: bool = True):
    """(template_id, zone_id) pairs to list, one per template and zone, as CloudStack lists, in
    that order; only of templates with ids in the ``template_ids`` range (first, last) if given.
    ``region``: whether copies on region-wide stores may exist (region_copies_possible)."""
    if region:
        copy = copy_zones(*(template_ids or (None, None)))
        zone_id, state = copy.c.zone_id, copy.c.state
        stmt = select(VMTemplate.id.label("template_id"), zone_id).join(copy, copy.c.template_id == VMTemplate.id)
    else:
        ref = TemplateStoreRef
        zone_id, state = ref.zone_id, ref.state
        stmt = (select(VMTemplate.id.label("template_id"), zone_id).join(ref, ref.template_id == VMTemplate.id)
                .where(ref.zone_id.is_not(None)))
    stmt = stmt.where(VMTemplate.removed.is_(None), VMTemplate.is_iso.is_(q.is_iso)).distinct()
    if template_ids is not None:
        stmt = stmt.where(VMTemplate.id.between(*template_ids))
    visible = _visible(q)
    if visible is not None:
        stmt = stmt.where(visible)
    if q.visibility.ready_only or q.ready_only:
        stmt = stmt.where(state.in_(READABLE_COPY_STATES))
    if q.template_uuid:
        stmt = stmt.where(VMTemplate.uuid == q.template_uuid)
    if q.name:
        stmt = stmt.where(VMTemplate.name == q.name)
    if q.keyword:
        stmt = stmt.where(VMTemplate.name.contains(q.keyword, autoescape=True))
    if q.zone_id is not None:
        stmt = stmt.where(zone_id == q.zone_id)
    if q.hypervisor:
        stmt = stmt.where(VMTemplate.hypervisor == q.hypervisor)
    if q.bootable is not None:
        stmt = stmt.where(VMTemplate.bootable.is_(q.bootable))
    if q.is_public is not None:
        stmt = stmt.where(VMTemplate.is_public.is_(q.is_public))
    return stmt.order_by(VMTemplate.id, zone_id)


_T = VMTemplate.__table__.c
_TEMPLATE_COLUMNS = (_T.id, _T.uuid, _T.name, _T.displaytext, _T.is_public, _T.created, _T.bootable, _T.featured,
                     _T.extractable, _T.cross_zones, _T.ostypeid, _T.account_id, _T.size, _T.physical_size,
                     _T.checksum, _T.checksum_computed, _T.passwordenabled, _T.isdynamicallyscalable, _T.details_json,
                     _T.is_iso, _T.format, _T.hypervisor, _T.template_type, _T.bits, _T.sshkeyenabled, _T.requireshvm)
_R = TemplateStoreRef.__table__.c


def _of_templates(stmt, template_id):
    """``stmt`` for the templates of a page, by id range (``first``, ``last``) and by ids (``ids``):
    built once, as the statements of responses() (building them took a page 2-3 ms)."""
    return {"range": stmt.where(template_id.between(bindparam("first"), bindparam("last"))),
            "ids": stmt.where(template_id.in_(bindparam("ids", expanding=True)))}


_TEMPLATES = _of_templates(select(*_TEMPLATE_COLUMNS, Account.name, Account.uuid, Domain.name, Domain.uuid)
                           .join(Account, Account.id == _T.account_id).join(Domain, Domain.id == Account.domain_id),
                           _T.id)
_COPIES = _of_templates(select(_R.template_id, _R.zone_id, _R.state, _R.download_state, _R.download_pct,
                               _R.error_text, _R.store_id).order_by(_R.id), _R.template_id)
_STORES = (select(ImageStore.id, ImageStore.name, ImageStore.uuid, ImageStore.role, Zone.id, Zone.uuid, Zone.name)
           .outerjoin(Zone, Zone.id == ImageStore.zone_id).where(ImageStore.id.in_(bindparam("ids", expanding=True))))
# Fields of a response that depend on the zone: set per zone in the template's shared body,
# and dropped there when the zone has no copy.
_ZONE_FIELDS = ("zoneid", "zonename", "status")
# Fields from NULLable columns, which CloudStack omits when null.
_NULLABLE = ("displaytext", "ostypeid", "size", "physicalsize", "checksum", "details", "hypervisor")


def responses(session: Session, pairs: list[tuple[int, int | None]], *, is_admin: bool) -> list[dict[str, Any]]:
    """Template responses for (template id, zone id) pairs in three queries whatever their number.

    Plain rows (Core, on the session's connection), and what does not depend on the zone built
    once per template: ORM objects and a full response built per pair took most of a 500-item
    page's time (bench/list_templates.py, docs/benchmarks.md).
    """
    if not pairs:
        return []
    session.flush()  # the caller's changes, as session.execute would: the reads below use the connection
    conn = session.connection()
    ids = list(dict.fromkeys(t for t, _ in pairs))
    first, last = min(ids), max(ids)
    # A page's ids nearly fill their range: reading the few rows not asked for costs less than
    # binding 500 parameters per query.
    which, params = ("range", {"first": first, "last": last}) if last - first < 2 * len(ids) else ("ids", {"ids": ids})
    templates = {row[0]: row for row in conn.execute(_TEMPLATES[which], params).all()}
    rows = conn.execute(_COPIES[which], params).all()
    # Stores and zones are few: read once, not joined to each copy (that doubled the query's
    # time). A copy's zone is its store's; any other is read apart.
    stores, zones = {}, {}
    for store_id, name, uuid, role, zone_id, zone_uuid, zone_name in conn.execute(
            _STORES, {"ids": list({r[6] for r in rows})}):
        stores[store_id] = (name, uuid, role)
        if zone_id is not None:
            zones[zone_id] = (zone_uuid, zone_name)
    missing = {r[1] for r in rows if r[1] is not None} - zones.keys()
    if missing:
        zones.update((z, (u, n)) for z, u, n in conn.execute(select(Zone.id, Zone.uuid, Zone.name)
                                                              .where(Zone.id.in_(missing))))
    # A copy: (state, download state, percent, error text, downloaddetails entry, zone uuid, zone name).
    copies: dict[tuple[int, int | None], list] = defaultdict(list)
    entries: dict[tuple, dict[str, str]] = {}  # shared by the copies they describe alike (most are)
    for t, z, state, download_state, pct, error, store_id in rows:
        entry = entries.get((store_id, pct, download_state))
        if entry is None:
            store_name, store_uuid, role = stores[store_id]
            # Every value is a NOT NULL column: nothing to drop.
            entry = entries[(store_id, pct, download_state)] = {
                "datastore": store_name, "datastoreId": store_uuid, "datastoreRole": role,
                "downloadPercent": str(pct), "downloadState": download_state} if is_admin else {
                "datastore": store_name, "downloadPercent": str(pct), "downloadState": download_state}
        copies[(t, z)].append((state, download_state, pct, error, entry, *zones.get(z, (None, None))))
    copies = with_region_copies(session, pairs, copies)
    bodies: dict[int, tuple[dict[str, Any], bool]] = {}
    statuses: dict[tuple, str] = {}  # status_text of each distinct copy state on the page
    out = []
    for t, z in pairs:
        body = bodies.get(t)
        if body is None:
            body = bodies[t] = _template_body(templates[t])
        out.append(_zone_response(body, copies.get((t, z), ()), statuses))
    return out


def _template_body(row) -> tuple[dict[str, Any], bool]:
    """What a template's responses share in every zone, in CloudStack's field order, with the
    zone's fields (isready, _ZONE_FIELDS, downloaddetails, tags) in their places; and whether it
    is an ISO."""
    (_id, uuid, name, displaytext, is_public, created, bootable, featured, extractable, cross_zones, ostypeid,
     _account_id, size, physical_size, checksum, checksum_computed, passwordenabled, isdynamicallyscalable,
     details_json, is_iso, fmt, hypervisor, template_type, bits, sshkeyenabled, requireshvm,
     account, account_uuid, domain, domain_uuid) = row
    checksum = checksum or checksum_computed
    body = {
        "id": uuid, "name": name, "displaytext": displaytext, "ispublic": is_public, "created": cs_date(created),
        "isready": False, "bootable": bootable, "isfeatured": featured, "isextractable": extractable,
        "crossZones": cross_zones, "ostypeid": ostypeid, "account": account, "accountid": account_uuid,
        "domain": domain, "domainid": domain_uuid, "zoneid": None, "zonename": None, "status": None,
        "size": size, "physicalsize": physical_size, "checksum": checksum.split("}", 1)[1] if checksum else None,
        "passwordenabled": passwordenabled, "isdynamicallyscalable": isdynamicallyscalable, "directdownload": False,
        "details": json.loads(details_json) if details_json else None, "downloaddetails": None, "tags": None,
    }
    if not is_iso:
        body.update(format=fmt, hypervisor=hypervisor, templatetype=template_type, bits=bits,
                    sshkeyenabled=sshkeyenabled, requireshvm=requireshvm, deployasis=False)
    for field in _NULLABLE:
        if body.get(field, 0) is None:
            del body[field]
    return body, is_iso


def _zone_response(shared: tuple[dict[str, Any], bool], copies, statuses: dict[tuple, str]) -> dict[str, Any]:
    """CloudStack's TemplateResponse for one zone of a template: its ``shared`` body and its
    ``copies`` in that zone (see responses); ``statuses`` memoizes status texts."""
    template_body, is_iso = shared
    body = template_body.copy()
    body["downloaddetails"] = [c[4] for c in copies]
    body["tags"] = []
    if not copies:
        for field in _ZONE_FIELDS:
            del body[field]
        return body
    first, ready, mixed = copies[0], False, False
    for c in copies:
        ready = ready or dt.is_ready(c[0])
        mixed = mixed or c[1] != first[1] or c[2] != first[2]
    body["isready"] = ready
    # When every copy ranks the same the first speaks, as with representative's max().
    best = dt.representative(copies, lambda c: (c[1], c[2])) if mixed else first
    state, download_state, pct, error, _entry, zone_uuid, zone_name = best
    if zone_uuid is None:
        del body["zoneid"], body["zonename"]
    else:
        body["zoneid"], body["zonename"] = zone_uuid, zone_name
    key = (download_state, pct, error, state, is_iso)
    status = statuses.get(key)
    if status is None:
        status = statuses[key] = dt.status_text(download_state, pct, error, state, is_iso=is_iso)
    body["status"] = status
    return body


def responses_of(session: Session, template: VMTemplate, *, is_admin: bool) -> list[dict[str, Any]]:
    """Every zone's response of one template (registration answers, job results)."""
    copy = copy_zones(template.id, template.id)
    zones = session.scalars(select(copy.c.zone_id).where(copy.c.template_id == template.id).distinct()).all()
    return responses(session, [(template.id, z) for z in sorted(zones, key=lambda z: z or 0)], is_admin=is_admin)
