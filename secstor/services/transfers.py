"""Bytes moved by signed URLs rather than API keys: browser and CLI uploads (getUploadParamsFor*
then POST /upload/<ticket>) and extract URLs (GET /extract/<token>/<file>).

A ticket names the kind of object it is for ("template" here, "volume" in
``secstor.services.volume_transfers``); the routes dispatch on it through ``UPLOAD_KINDS`` and
``EXTRACT_KINDS``, so every kind shares one signed-URL protocol and one streaming path.

A template upload is verified like a download (hashed once while it is written, the declared
checksum and the maximum size enforced, the format inspected) and shares its last step with it
(``templates.finish_copy``).
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Iterator

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from secstor.api.format import cs_date
from secstor.db.engine import READ_ONLY
from secstor.db.models import Account, ImageStore, TemplateStoreRef, VMTemplate, Zone
from secstor.domain import templates as dt
from secstor.domain.errors import InvalidParameter, NotFound, OperationFailed
from secstor.domain.states import (
    OBJECT_IN_STORE,
    READABLE_COPY_STATES,
    DownloadState,
    ObjectInStoreEvent,
    ObjectInStoreState,
)
from secstor.movers.checksums import parse_checksum
from secstor.movers.transfer import SizeLimitExceeded, TransferError, write_verified
from secstor.security.tickets import TicketRefused, TicketSigner, UploadTicket
from secstor.services import templates as svc
from secstor.services.staging import pull_to_staging
from secstor.stores.base import StoreError

if TYPE_CHECKING:
    from secstor.runtime import Runtime
    from secstor.stores.base import StoreDriver

log = logging.getLogger("secstor.transfers")

EXTRACT_HANDLER = "template.extract"
TEMPLATE_KIND = "template"
HTTP_DOWNLOAD = "HTTP_DOWNLOAD"
URL_CREATED = "DOWNLOAD_URL_CREATED"


def _signer(runtime: "Runtime") -> TicketSigner:
    return TicketSigner.for_secrets(runtime.secrets)


@contextmanager
def reading(runtime: "Runtime") -> Iterator[Session]:
    """A read-only session: serving bytes must never hold SQLite's write lock."""
    with runtime.session_factory(bind=runtime.engine.execution_options(**{READ_ONLY: True})) as s:
        yield s


# ---- uploads ----------------------------------------------------------------------------------

class MalformedUpload(ValueError):
    """The POST body is not the multipart form an upload sends."""


class UploadFailed(Exception):
    """An upload that was received but not stored; ``status`` is the HTTP answer."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def post_url(runtime: "Runtime", ticket_id: str) -> str:
    return f"{runtime.config.resolved_public_url.rstrip('/')}/upload/{ticket_id}"


@dataclass(frozen=True)
class NewUpload:
    ticket_id: str
    ticket: UploadTicket
    expires: datetime  # the postURL accepts the upload until then (upload.operation.timeout)

    def answer(self, object_uuid: str) -> dict[str, Any]:
        """CloudStack's getuploadparams response."""
        t = self.ticket
        return {"id": object_uuid, "postURL": t.post_url, "metadata": t.metadata, "expires": t.expires,
                "signature": t.signature}


def new_upload_ticket(runtime: "Runtime", kind: str, payload: dict[str, Any]) -> NewUpload:
    """A signed postURL for one upload of an object of ``kind`` (a key of UPLOAD_KINDS)."""
    ticket_id = uuidlib.uuid4().hex
    expires = runtime.now() + timedelta(minutes=runtime.settings.get("upload.operation.timeout"))
    ticket = _signer(runtime).issue_upload(post_url(runtime, ticket_id),
                                           {**payload, "id": ticket_id, "kind": kind}, expires)
    return NewUpload(ticket_id, ticket, expires)


@dataclass(frozen=True)
class StoredUpload:
    """What the POST answers once the upload is stored."""

    uuid: str
    name: str
    status: str


@dataclass(frozen=True)
class UploadKind:
    # (runtime, ticket id, verified payload) -> a claim with a ``kind`` attribute; TicketRefused
    claim: Callable[["Runtime", str, dict[str, Any]], Any]
    # (runtime, claim, body chunks) -> StoredUpload; UploadFailed
    store: Callable[["Runtime", Any, Iterable[bytes]], StoredUpload]


UPLOAD_KINDS: dict[str, UploadKind] = {}
# (runtime, verified token payload) -> ExtractSource; ExtractGone
EXTRACT_KINDS: dict[str, Callable[["Runtime", dict[str, Any]], "ExtractSource"]] = {}


def issue_upload(session: Session, runtime: "Runtime", spec: svc.NewTemplate, zone_uuid: str) -> dict[str, Any]:
    """Create the template with one copy waiting for its upload; the getuploadparams answer."""
    template, refs = svc.create_with_copies(session, runtime, spec, [zone_uuid],
                                            download_state=DownloadState.NOT_UPLOADED, single_store=True)
    upload = new_upload_ticket(runtime, TEMPLATE_KIND, {"template": template.uuid, "copy": refs[0].id})
    store = session.get(ImageStore, refs[0].store_id)
    log.info("%s %s (%s) awaits its upload to store %s until %s (ticket %s)", "ISO" if spec.is_iso else "template",
             template.name, template.uuid, store.name, upload.ticket.expires, upload.ticket_id)
    return upload.answer(template.uuid)


@dataclass(frozen=True)
class UploadClaim:
    """An upload whose ticket was accepted; its copy is UPLOAD_IN_PROGRESS."""

    ref_id: int
    template: VMTemplate  # detached
    store: ImageStore  # detached
    kind: str = "template"


def claim_upload(runtime: "Runtime", ticket_id: str, metadata: str | None, expires: str | None,
                 signature: str | None) -> Any:
    """Check an upload's ticket and take the object it is for (once: a ticket uploads one file).
    Raises TicketRefused, having changed nothing, for a forged, altered, expired or used ticket."""
    payload = _signer(runtime).verify_upload(post_url(runtime, ticket_id), metadata, expires, signature,
                                             runtime.now())
    if payload.get("id") != ticket_id:
        raise TicketRefused("the upload parameters are not for this URL")
    kind = UPLOAD_KINDS.get(payload.get("kind", TEMPLATE_KIND))
    if kind is None:
        raise TicketRefused("the upload parameters name an unknown kind of object")
    return kind.claim(runtime, ticket_id, payload)


def store_upload(runtime: "Runtime", claim: Any, chunks: Iterable[bytes]) -> StoredUpload:
    """Write an upload's bytes to the object its claim took; UploadFailed says how to answer."""
    return UPLOAD_KINDS[claim.kind].store(runtime, claim, chunks)


def _claim_template_upload(runtime: "Runtime", ticket_id: str, payload: dict[str, Any]) -> UploadClaim:
    with runtime.session() as s:
        ref = s.get(TemplateStoreRef, payload["copy"])
        template = s.get(VMTemplate, ref.template_id) if ref is not None else None
        if template is None or template.removed is not None or template.uuid != payload["template"]:
            raise TicketRefused("the template of this upload no longer exists")
        creating = OBJECT_IN_STORE.next_state(ref.state, ObjectInStoreEvent.CreateOnlyRequested) \
            if ref.download_state == DownloadState.NOT_UPLOADED.value else None
        # Conditional, so two POSTs racing with one ticket cannot both win.
        claimed = creating is not None and s.execute(
            update(TemplateStoreRef)
            .where(TemplateStoreRef.id == ref.id, TemplateStoreRef.state == ref.state,
                   TemplateStoreRef.download_state == DownloadState.NOT_UPLOADED.value)
            .values(state=creating, download_state=DownloadState.UPLOAD_IN_PROGRESS.value, updated=runtime.now())
            .execution_options(synchronize_session=False)).rowcount == 1
        if not claimed:
            raise TicketRefused("this upload URL was already used")
        store = s.get(ImageStore, ref.store_id)
        s.expunge_all()
    log.info("upload %s of template %s (%s) started, to store %s", ticket_id, template.name, template.uuid, store.name)
    return UploadClaim(ref.id, template, store)


def _store_template_upload(runtime: "Runtime", claim: UploadClaim, chunks: Iterable[bytes]) -> StoredUpload:
    """Write the uploaded bytes, verified, then finish the copy as a download is finished.
    On any failure nothing is left on the store and the copy is UPLOAD_ERROR with the reason;
    UploadFailed says how to answer the client."""
    template, ref_id = claim.template, claim.ref_id
    driver = runtime.drivers.for_store(claim.store)
    key = dt.install_key(template.account_id, template.id, str(uuidlib.uuid4()), template.format)
    expected = parse_checksum(template.checksum) if template.checksum else None
    try:
        result = write_verified(driver, key, chunks, expected=expected, algorithms=("SHA-512", "SHA-256"),
                                max_bytes=int(runtime.settings.get("max.template.iso.size")) * svc.GIB,
                                progress=upload_heartbeat(runtime, TemplateStoreRef, ref_id))
        svc.update_copy(runtime, ref_id, download_state=DownloadState.UPLOADED.value, download_pct=100)
        template = svc.finish_copy(runtime, ref_id, template, claim.store, driver, key, result.digests, log,
                                   failed_state=DownloadState.UPLOAD_ERROR)
        return StoredUpload(template.uuid, template.name, "Upload Complete")
    except OperationFailed as exc:  # the image was refused; finish_copy recorded why
        raise UploadFailed(400, exc.message) from None
    except BaseException as exc:  # the client may also have gone away mid-way
        status, reason = upload_failure(exc, "max.template.iso.size")
        log.warning("upload to template copy %s failed: %s", ref_id, reason)
        remove_quietly(driver, key)  # published if it failed after the write
        svc.update_copy(runtime, ref_id, ObjectInStoreEvent.OperationFailed,
                        download_state=DownloadState.UPLOAD_ERROR.value, error_text=reason)
        if isinstance(exc, Exception):
            raise UploadFailed(status, reason) from exc
        raise


def stall_limit(runtime: "Runtime") -> timedelta:
    """How long an upload in progress may receive nothing before the upload monitor abandons it:
    upload.operation.timeout, at least a minute (a timeout of 0 only closes the postURL)."""
    return timedelta(minutes=max(int(runtime.settings.get("upload.operation.timeout")), 1))


def upload_heartbeat(runtime: "Runtime", model: Any, ref_id: int) -> Callable[[int], None]:
    """A write_verified progress callback that records now and then (a quarter of stall_limit,
    at most a minute apart, by the runtime clock) that the upload into copy ``ref_id`` of
    ``model`` (TemplateStoreRef or VolumeStoreRef) still receives bytes, in its ``updated``.
    An upload whose process died stops beating, and the upload monitor abandons it."""
    every = min(stall_limit(runtime) / 4, timedelta(minutes=1))
    last = runtime.now()

    def beat(_done: int) -> None:
        nonlocal last
        now = runtime.now()
        if now - last < every:
            return
        last = now
        with runtime.session() as s:  # a short transaction of its own, between two writes
            s.execute(update(model).where(model.id == ref_id,
                                          model.download_state == DownloadState.UPLOAD_IN_PROGRESS.value)
                      .values(updated=now).execution_options(synchronize_session=False))

    return beat


def remove_quietly(driver: "StoreDriver", key: str) -> None:
    try:
        driver.delete(key)
    except StoreError as exc:
        log.warning("%s could not be removed after a failed upload: %s", key, exc)


def upload_failure(exc: BaseException, size_setting: str) -> tuple[int, str]:
    """The HTTP status and reason of a failed upload; ``size_setting`` names the size limit."""
    if isinstance(exc, SizeLimitExceeded):
        return 413, f"The file is larger than the maximum size ({size_setting}): {exc}"
    if isinstance(exc, (TransferError, MalformedUpload)):
        return 400, str(exc)
    if isinstance(exc, StoreError):
        return 503, f"The image store cannot take the upload: {exc}"
    return 400, f"The upload was interrupted: {exc or type(exc).__name__}"


# ---- extract URLs -----------------------------------------------------------------------------

def ready_copy(session: Session, template: VMTemplate, zone_id: int | None) -> tuple[TemplateStoreRef, Zone | None]:
    """A Ready copy of the template (in the zone given, else anywhere) with its zone; 431 if none,
    with CloudStack's message."""
    stmt = (select(TemplateStoreRef, Zone).outerjoin(Zone, Zone.id == TemplateStoreRef.zone_id)
            .where(TemplateStoreRef.template_id == template.id,
                   TemplateStoreRef.state.in_(READABLE_COPY_STATES))
            .order_by(TemplateStoreRef.id).limit(1))
    if zone_id is not None:
        # The zone's own copies first, else a region-wide copy (it serves every zone).
        stmt = (stmt.where(or_(TemplateStoreRef.zone_id == zone_id, TemplateStoreRef.zone_id.is_(None)))
                .order_by(None).order_by(TemplateStoreRef.zone_id.is_(None), TemplateStoreRef.id))
    found = session.execute(stmt).first()
    if found is None:
        raise InvalidParameter(f"The {'ISO' if template.is_iso else 'template'} has not been downloaded", "id")
    return found[0], found[1] if found[1] is not None or zone_id is None else session.get(Zone, zone_id)


def extract(runtime: "Runtime", template_id: int, zone_id: int | None, base_url: str) -> dict[str, Any]:
    """A signed, expiring URL to a Ready copy (of the zone given, else any): the ExtractResponse."""
    if zone_id is not None:
        pull_to_staging(runtime, template_id, zone_id, log)
    with reading(runtime) as s:
        template = s.get(VMTemplate, template_id)
        what = "ISO" if template.is_iso else "template"
        if template.removed is not None:
            raise NotFound(f"Unable to find {what} with specified id {template.uuid}", "id")
        ref, zone = ready_copy(s, template, zone_id)
        account = s.get(Account, template.account_id)
    now = runtime.now()
    expires = extract_expiry(runtime)
    filename = ref.install_path.rsplit("/", 1)[-1]
    url = signed_extract_url(runtime, base_url, TEMPLATE_KIND, {"copy": ref.id, "template": template.uuid},
                             filename, expires)
    log.info("extract URL for %s %s (%s) from store %s, valid until %s", what, template.name, template.uuid,
             ref.store_id, expires.isoformat())
    return {
        "id": template.uuid,
        "name": template.name,
        "extractId": uuidlib.uuid4().hex,
        "accountid": account.uuid,
        "zoneid": zone.uuid if zone else None,
        "zonename": zone.name if zone else None,
        "extractMode": HTTP_DOWNLOAD,
        "url": url,
        "state": URL_CREATED,
        "status": URL_CREATED,
        "uploadpercentage": 100,
        "created": cs_date(now),
    }


class ExtractGone(Exception):
    """The copy behind a genuine extract URL is no longer there."""


@dataclass(frozen=True)
class ExtractSource:
    driver: "StoreDriver"
    key: str
    size: int
    filename: str
    etag: str
    modified: datetime


def extract_expiry(runtime: "Runtime") -> datetime:
    """When an extract URL signed now stops working (extract.url.expiration.interval)."""
    return runtime.now() + timedelta(seconds=runtime.settings.get("extract.url.expiration.interval"))


def signed_extract_url(runtime: "Runtime", base_url: str, kind: str, payload: dict[str, Any], filename: str,
                       expires: datetime) -> str:
    """The GET URL of an object of ``kind`` (a key of EXTRACT_KINDS), valid until ``expires``."""
    token = _signer(runtime).issue_token({**payload, "kind": kind}, expires)
    return f"{base_url.rstrip('/')}/extract/{token}/{filename}"


def open_extract(runtime: "Runtime", token: str) -> ExtractSource:
    """The object an extract URL names; TicketRefused (forged, expired) or ExtractGone."""
    payload = _signer(runtime).verify_token(token, runtime.now())
    opener = EXTRACT_KINDS.get(payload.get("kind", TEMPLATE_KIND))
    if opener is None:
        raise TicketRefused("invalid download URL")
    return opener(runtime, payload)


def _open_template_extract(runtime: "Runtime", payload: dict[str, Any]) -> ExtractSource:
    with reading(runtime) as s:
        ref = s.get(TemplateStoreRef, payload["copy"])
        template = s.get(VMTemplate, ref.template_id) if ref is not None else None
        if (template is None or template.removed is not None or template.uuid != payload["template"]
                or ref.state not in READABLE_COPY_STATES):
            raise ExtractGone(f"template {payload['template']} is no longer on this store")
        store = s.get(ImageStore, ref.store_id)
        s.expunge_all()
    driver = runtime.drivers.for_store(store)
    info = driver.stat(ref.install_path)
    if info is None:
        raise ExtractGone(f"{ref.install_path} is missing from store {store.name}")
    # The content's digest: the same bytes from another store (or a later URL) keep the same ETag.
    etag = template.sha256 or (ref.checksum or "").rsplit("}", 1)[-1] or f"{ref.id}-{info.size}"
    return ExtractSource(driver, ref.install_path, info.size, ref.install_path.rsplit("/", 1)[-1], etag,
                         info.modified)


UPLOAD_KINDS[TEMPLATE_KIND] = UploadKind(_claim_template_upload, _store_template_upload)
EXTRACT_KINDS[TEMPLATE_KIND] = _open_template_extract
