"""Seeding a system VM template straight into an image store (CloudStack's cloud-install-sys-tmplt).

Runs in the calling process with no API server and no job: the rows are created, the bytes are
written once (a local file, or a URL downloaded under the same safety rules as registerTemplate)
while they are hashed, the format is inspected, template.properties is written and the copy is
Ready. A failure (wrong checksum, refused image) removes what was created: nothing stored, no
rows. Seeding the same name and checksum into a store that holds it is a no-op.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from sqlalchemy import or_, select

from secstor.db.models import Account, ImageStore, TemplateStoreRef, VMTemplate, Zone
from secstor.domain import templates as dt
from secstor.domain.capacity import stores_for_new_data
from secstor.domain.errors import InvalidParameter, OperationFailed
from secstor.domain.states import DownloadState, ObjectInStoreState
from secstor.domain.urlsafety import UnsafeUrl, check_url
from secstor.movers.download import download_to_store
from secstor.movers.transfer import write_verified
from secstor.services import templates as svc

if TYPE_CHECKING:
    from secstor.runtime import Runtime

log = logging.getLogger("secstor.templates.seed")

FILE_CHUNK = 1 << 20


@dataclass(frozen=True)
class SeedRequest:
    name: str
    format: str
    hypervisor: str
    file: Path | None = None
    url: str | None = None
    checksum: str | None = None
    store: str | None = None  # name or id
    zone: str | None = None  # name or id


@dataclass(frozen=True)
class SeedOutcome:
    template_uuid: str
    store_name: str
    already_installed: bool
    install_path: str | None
    checksum: str | None


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(FILE_CHUNK):
            yield chunk


def _check(req: SeedRequest) -> tuple[str, str | None]:
    """(canonical format, canonical checksum); 431 naming the option on bad input."""
    if (req.file is None) == (req.url is None):
        raise InvalidParameter("give exactly one of --file and --url", "file")
    if req.file is not None and not req.file.is_file():
        raise InvalidParameter(f"{req.file} is not a readable file", "file")
    if req.url is not None:
        try:
            check_url(req.url)
        except UnsafeUrl as exc:
            raise InvalidParameter(f"Invalid url {req.url}: {exc}", "url") from None
    fmt = req.format.strip().upper()
    if fmt not in dt.FORMATS:
        raise InvalidParameter(f"Image format: {req.format} is incorrect. Supported formats are "
                               f"{', '.join(dt.FORMATS)}", "format")
    if not req.name.strip():
        raise InvalidParameter("Template name cannot be empty", "name")
    return fmt, svc.parse_given_checksum(req.checksum)


def _by_name_or_id(model, text: str):
    return or_(model.name == text, model.uuid == text)


def _target_store(session, runtime: "Runtime", req: SeedRequest) -> ImageStore:
    """--store as named, else the store of --zone (or of the only zone) the allocation algorithm picks."""
    live = select(ImageStore).where(ImageStore.removed.is_(None), ImageStore.role == "Image")
    if req.store:
        store = session.scalars(live.where(_by_name_or_id(ImageStore, req.store))).first()
        if store is None:
            raise InvalidParameter(f"Unable to find image store {req.store}", "store")
        if store.zone_id is None:
            raise InvalidParameter(f"Image store {store.name} belongs to no zone", "store")
        return store
    zones = list(session.scalars(select(Zone).where(Zone.removed.is_(None)).order_by(Zone.id)))
    if req.zone:
        zones = [z for z in zones if req.zone in (z.name, z.uuid)]
        if not zones:
            raise InvalidParameter(f"Unable to find zone {req.zone}", "zone")
    elif len(zones) != 1:
        raise InvalidParameter(f"there are {len(zones)} zones: give --zone or --store", "zone")
    stores = list(session.scalars(live.where(ImageStore.zone_id == zones[0].id).order_by(ImageStore.id)))
    chosen = stores_for_new_data(stores, runtime.settings.get("image.store.allocation.algorithm"),
                                 runtime.settings.get("secondary.storage.capacity.threshold"))
    if not chosen:
        raise OperationFailed(f"Unable to find image store to download the template {req.name} in zone "
                              f"{zones[0].name}")
    return chosen[0]


def _admin_account(session) -> Account:
    account = session.scalars(select(Account).where(Account.role == "Admin", Account.removed.is_(None))
                              .order_by(Account.id)).first()
    if account is None:
        raise OperationFailed("no admin account: start `secstor serve` once to initialise the installation")
    return account


def seed(runtime: "Runtime", req: SeedRequest, on_progress: Callable[[int], None]) -> SeedOutcome:
    """Install (or find installed) a SYSTEM template on one store. Raises InvalidParameter or
    OperationFailed (with the reason; nothing is left behind)."""
    fmt, checksum = _check(req)
    name = req.name.strip()
    with runtime.session() as s:
        store = _target_store(s, runtime, req)
        template = s.scalars(select(VMTemplate).where(VMTemplate.name == name, VMTemplate.template_type == "SYSTEM",
                                                      VMTemplate.is_iso.is_(False), VMTemplate.removed.is_(None))
                             .order_by(VMTemplate.id)).first()
        if template is not None and checksum is not None and template.checksum != checksum:
            raise InvalidParameter(f"a system template named {name} already exists ({template.uuid}) with checksum "
                                   f"{template.checksum or 'none given'}: give it another name", "name")
        new_template = template is None
        if new_template:
            template = VMTemplate(name=name, displaytext=name, format=fmt, hypervisor=req.hypervisor.strip(),
                                  account_id=_admin_account(s).id, is_public=True, template_type="SYSTEM",
                                  url=req.url, checksum=checksum, created=runtime.now())
            s.add(template)
            s.flush()
        ref = s.scalars(select(TemplateStoreRef).where(TemplateStoreRef.template_id == template.id,
                                                       TemplateStoreRef.store_id == store.id)).first()
        if ref is not None and ref.state == ObjectInStoreState.Ready.value:
            log.info("system template %s (%s) is already installed on store %s", name, template.uuid, store.name)
            return SeedOutcome(template.uuid, store.name, True, ref.install_path, ref.checksum)
        new_ref = ref is None
        if new_ref:
            ref = TemplateStoreRef(template_id=template.id, store_id=store.id, zone_id=store.zone_id,
                                   state=ObjectInStoreState.Allocated.value, created=runtime.now())
            s.add(ref)
        ref.download_state, ref.download_pct, ref.error_text = DownloadState.NOT_DOWNLOADED.value, 0, None
        s.flush()
        ids = (template.id, template.uuid, ref.id, store.name)
    template_id, template_uuid, ref_id, store_name = ids

    def fetch(driver, key, expected, algorithms, progress):
        if req.url is not None:  # the request's URL: an existing template may record another origin
            return download_to_store(req.url, driver, key, expected=expected, algorithms=algorithms,
                                     options=svc.download_options(runtime), progress=progress)
        size = req.file.stat().st_size
        return write_verified(driver, key, _file_chunks(req.file), expected=expected, algorithms=algorithms,
                              size_hint=size, progress=lambda done: progress(done, size))

    log.info("seeding system template %s (%s) into store %s from %s", name, template_uuid, store_name,
             req.file or req.url)
    try:
        svc.download_copy(runtime, ref_id, on_progress, log, fetch=fetch)
    except OperationFailed:
        _forget(runtime, template_id, ref_id, new_template=new_template)
        raise
    with runtime.session() as s:
        ref = s.get(TemplateStoreRef, ref_id)
        return SeedOutcome(template_uuid, store_name, False, ref.install_path, ref.checksum)


def _forget(runtime: "Runtime", template_id: int, ref_id: int, *, new_template: bool) -> None:
    """Remove the rows a failed seed created (the copy's bytes were never published)."""
    with runtime.session() as s:
        ref = s.get(TemplateStoreRef, ref_id)
        if ref is not None:
            s.delete(ref)
        s.flush()
        if new_template:
            template = s.get(VMTemplate, template_id)
            if template is not None:
                s.delete(template)
