"""Volumes moved through image stores: uploadVolume (from a URL), getUploadParamsForVolume (the
signed browser POST), extractVolume (a signed, expiring GET URL), the copy of an Uploaded
volume to primary storage when it is attached, and the expiry of upload and extract URLs.

An uploaded volume lives on an image store (a VolumeStoreRef, key
``volumes/<account id>/<volume id>/<uuid>.<ext>``) until it is attached; it gets there through
the same verified path as a template (hashed while written, the declared checksum and
``storage.max.volume.upload.size`` enforced, the format inspected). A volume on primary storage
is extracted by first copying it to an image store, as CloudStack does: the URL then serves a
stable copy, never a file a running guest writes to.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import tempfile
import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from secstor.api.format import cs_date
from secstor.db.models import (Account, ImageStore, StoragePool, TemplateStoreRef, VirtualMachine, VMTemplate,
                               Volume, VolumeStoreRef, Zone)
from secstor.domain.capacity import stores_for_new_data
from secstor.domain.errors import InvalidParameter, OperationFailed, PermissionDenied
from secstor.domain.states import OBJECT_IN_STORE, DownloadState, ObjectInStoreEvent, ObjectInStoreState
from secstor.domain.volumes import VOLUME, VmState, VolumeEvent, VolumeState
from secstor.movers.checksums import Checksum, parse_checksum
from secstor.movers.download import download_to_store
from secstor.movers.inspect import ImageRejected, inspect_store_object
from secstor.movers.transfer import TransferError, copy_verified, write_verified
from secstor.primary.posix import FORMATS, PosixPool
from secstor.security.tickets import TicketRefused
from secstor.services import templates as tsvc
from secstor.services import transfers
from secstor.services.background import periodic_task
from secstor.services.image_stores import store_reference_check
from secstor.stores.base import StoreError
from secstor.stores.local import LocalDriver

if TYPE_CHECKING:
    from secstor.runtime import Runtime
    from secstor.stores.base import StoreDriver

log = logging.getLogger("secstor.volumes.transfers")

UPLOAD_HANDLER = "volume.upload"
EXTRACT_HANDLER = "volume.extract"
VOLUME_KIND = "volume"
UPLOAD, EXTRACT = "upload", "extract"
UPLOAD_FORMATS = FORMATS  # what a primary pool can hold and an instance can attach
SIZE_SETTING = "storage.max.volume.upload.size"
EXTRACT_REFUSED_RUNNING = ("Invalid state of the volume with specified ID. It should be either detached or the VM "
                           "should be in stopped state.")
UPLOAD_TIMED_OUT = "Upload operation timed out"
# Volume states that show an upload's progress in ``status``.
_UPLOADING = (VolumeState.Uploading.value, VolumeState.UploadInProgress.value)


def volume_key(account_id: int, volume_id: int, fmt: str) -> str:
    """Where a volume's image lives on an image store (docs/layout.md)."""
    return f"volumes/{account_id}/{volume_id}/{uuidlib.uuid4()}.{fmt.lower()}"


def check_upload_format(text: str) -> str:
    fmt = text.strip().upper()
    if fmt not in UPLOAD_FORMATS:
        raise InvalidParameter(f"Image format is incorrect {text}. Supported formats are "
                               f"{', '.join(UPLOAD_FORMATS)}", "format")
    return fmt


def upload_status(volume: Volume, pct: int | None) -> str | None:
    """CloudStack's ``status`` of a volume (VolumeJoinDaoImpl); None for one with no upload."""
    if volume.state in _UPLOADING:
        return "Checking Volume" if (pct or 0) >= 100 else f"{pct or 0}% Uploaded"
    if volume.state == VolumeState.Uploaded.value:
        return "Upload Complete"
    if volume.state in (VolumeState.UploadError.value, VolumeState.UploadAbandoned.value):
        return volume.error_text or volume.state
    return None


def upload_percentages(session: Session, volume_ids: list[int]) -> dict[int, int]:
    """The upload percentage of each volume being uploaded, for its ``status``."""
    if not volume_ids:
        return {}
    rows = session.execute(select(VolumeStoreRef.volume_id, VolumeStoreRef.download_pct)
                           .where(VolumeStoreRef.volume_id.in_(volume_ids), VolumeStoreRef.purpose == UPLOAD))
    return dict(rows.tuples().all())


def _transition(volume: Volume, event: VolumeEvent, now) -> None:
    volume.state = VOLUME.next_state(volume.state, event)
    volume.updated = now


# ---- a new uploaded volume -------------------------------------------------------------------------

def choose_store(session: Session, runtime: "Runtime", zone: Zone, what: str) -> ImageStore:
    """The image store of the zone that receives a volume (never a read-only or full one)."""
    stores = list(session.scalars(select(ImageStore).where(ImageStore.zone_id == zone.id,
                                                           ImageStore.removed.is_(None)).order_by(ImageStore.id)))
    chosen = stores_for_new_data(stores, runtime.settings.get("image.store.allocation.algorithm"),
                                 runtime.settings.get("secondary.storage.capacity.threshold"))
    if not chosen:
        raise OperationFailed(f"Unable to find image store to upload the volume {what} in zone {zone.name}")
    return chosen[0]


def new_uploaded_volume(session: Session, runtime: "Runtime", *, name: str, account_id: int, zone: Zone, fmt: str,
                        url: str | None, checksum: str | None,
                        store: ImageStore | None = None) -> tuple[Volume, VolumeStoreRef]:
    """A volume waiting for its upload (from ``url``, else from a browser POST) and the image
    store copy that receives it (on ``store``, else the one placement chooses)."""
    store = store or choose_store(session, runtime, zone, name)
    now = runtime.now()
    state = VolumeState.UploadNotStarted if url else VolumeState.NotUploaded
    volume = Volume(name=name, account_id=account_id, zone_id=zone.id, volume_type="DATADISK", state=state.value,
                    size=0, format=fmt, created=now, updated=now)
    session.add(volume)
    session.flush()
    ref = VolumeStoreRef(volume_id=volume.id, store_id=store.id, zone_id=zone.id, purpose=UPLOAD,
                         state=ObjectInStoreState.Allocated.value,
                         download_state=(DownloadState.NOT_DOWNLOADED if url else DownloadState.NOT_UPLOADED).value,
                         download_pct=0, url=url, checksum=checksum, created=now, updated=now)
    session.add(ref)
    session.flush()
    log.info("volume %s (%s) awaits its upload to store %s%s", volume.name, volume.uuid, store.name,
             f" from {url}" if url else "")
    return volume, ref


def issue_upload(session: Session, runtime: "Runtime", volume: Volume, ref: VolumeStoreRef) -> dict[str, Any]:
    """The getuploadparams answer for a volume waiting for its browser upload."""
    upload = transfers.new_upload_ticket(runtime, VOLUME_KIND, {"volume": volume.uuid, "copy": ref.id})
    log.info("volume %s (%s) accepts its upload until %s (ticket %s)", volume.name, volume.uuid,
             upload.ticket.expires, upload.ticket_id)
    return upload.answer(volume.uuid)


@dataclass(frozen=True)
class _Upload:
    """What the writing of an upload needs, detached from any session."""

    ref_id: int
    volume_id: int
    volume_uuid: str
    volume_name: str
    key: str
    fmt: str
    expected: Checksum | None
    store: ImageStore


def _begin(session: Session, runtime: "Runtime", ref: VolumeStoreRef, volume: Volume,
           download_state: DownloadState) -> _Upload:
    ref.state = ObjectInStoreState.Creating.value
    ref.download_state, ref.download_pct, ref.error_text, ref.updated = download_state.value, 0, None, runtime.now()
    volume.error_text = None
    store = session.get(ImageStore, ref.store_id)
    session.expunge(store)
    return _Upload(ref.id, volume.id, volume.uuid, volume.name, volume_key(volume.account_id, volume.id, volume.format),
                   volume.format, parse_checksum(ref.checksum) if ref.checksum else None, store)


def _percent_writer(runtime: "Runtime", ref_id: int, on_progress: Callable[[int], None]) -> tsvc.PercentWriter:
    def record(pct: int) -> None:
        with runtime.session() as s:
            s.execute(update(VolumeStoreRef).where(VolumeStoreRef.id == ref_id)
                      .values(download_pct=pct, updated=runtime.now()))
    return tsvc.PercentWriter(record, on_progress)


def _finish(runtime: "Runtime", up: _Upload, driver: "StoreDriver", digests: dict[str, str], job_log) -> None:
    """Inspect the written image and mark the volume Uploaded; an image whose content is refused
    is removed and the volume ends in UploadError (OperationFailed raised)."""
    with runtime.session() as s:
        s.execute(update(VolumeStoreRef).where(VolumeStoreRef.id == up.ref_id).values(download_pct=100))
    try:
        info = inspect_store_object(driver, up.key, up.fmt)
    except ImageRejected as exc:
        transfers.remove_quietly(driver, up.key)
        _failed(runtime, up.ref_id, exc.reason)
        raise OperationFailed(exc.reason) from None
    abandoned = None
    with runtime.session() as s:
        ref = s.get(VolumeStoreRef, up.ref_id)
        volume = s.get(Volume, up.volume_id)
        if volume.state in (VolumeState.UploadError.value, VolumeState.UploadAbandoned.value):
            abandoned = volume.error_text or volume.state  # the monitor gave up on it meanwhile
        elif volume.state not in _UPLOADING:  # deleted meanwhile: the sweep removes the image
            job_log.info("volume %s was deleted during its upload", up.volume_uuid)
            return
        else:
            _mark_uploaded(runtime, ref, volume, up, info, digests)
    if abandoned is not None:
        # Tell the uploader the truth: the volume stays failed, so the bytes are not kept.
        transfers.remove_quietly(driver, up.key)
        raise OperationFailed(f"The upload of volume {up.volume_uuid} finished after it was given up: {abandoned}")
    job_log.info("volume %s (%s) uploaded to store %s as %s (%d bytes, virtual size %d)", up.volume_name,
                 up.volume_uuid, up.store.name, up.key, info.physical_size, info.virtual_size)


def _mark_uploaded(runtime: "Runtime", ref: VolumeStoreRef, volume: Volume, up: _Upload, info,
                   digests: dict[str, str]) -> None:
    ref.state = ObjectInStoreState.Ready.value
    ref.download_state, ref.download_pct = DownloadState.DOWNLOADED.value, 100
    ref.install_path, ref.size, ref.physical_size = up.key, info.virtual_size, info.physical_size
    ref.checksum = ref.checksum or str(Checksum("SHA-512", digests["SHA-512"]))
    ref.sha256, ref.updated = digests["SHA-256"], runtime.now()
    volume.size = info.virtual_size
    _transition(volume, VolumeEvent.OperationSucceeded, runtime.now())


def _failed(runtime: "Runtime", ref_id: int, reason: str) -> None:
    """An upload failed: the copy is UPLOAD_ERROR / DOWNLOAD_ERROR, the volume UploadError."""
    with runtime.session() as s:
        ref = s.get(VolumeStoreRef, ref_id)
        volume = s.get(Volume, ref.volume_id) if ref is not None else None
        if volume is None or volume.state not in _UPLOADING + (VolumeState.UploadNotStarted.value,):
            return
        ref.state = ObjectInStoreState.Failed.value
        ref.download_state = (DownloadState.UPLOAD_ERROR if ref.url is None else DownloadState.DOWNLOAD_ERROR).value
        ref.error_text = volume.error_text = reason
        ref.updated = runtime.now()
        _transition(volume, VolumeEvent.OperationFailed, runtime.now())
    log.warning("upload of volume copy %s failed: %s", ref_id, reason)


def _max_bytes(runtime: "Runtime") -> int:
    return int(runtime.settings.get(SIZE_SETTING)) * tsvc.GIB


# ---- uploadVolume: the download job ---------------------------------------------------------------

def download_volume(runtime: "Runtime", ref_id: int, on_progress: Callable[[int], None], job_log) -> int | None:
    """Download, verify and inspect an uploadVolume's image; the volume's id, or None if it is
    gone. Raises OperationFailed after recording UploadError."""
    with runtime.session() as s:
        ref = s.get(VolumeStoreRef, ref_id)
        volume = s.get(Volume, ref.volume_id) if ref is not None else None
        if volume is None or volume.removed is not None:
            return None
        if volume.state == VolumeState.UploadNotStarted.value:
            _transition(volume, VolumeEvent.UploadRequested, runtime.now())
        elif volume.state != VolumeState.Uploading.value:  # done, or failed, already
            return volume.id
        up = _begin(s, runtime, ref, volume, DownloadState.DOWNLOAD_IN_PROGRESS)
        url = ref.url
    driver = runtime.drivers.for_store(up.store)
    # An attempt that died may have published an image under another name: start afresh.
    driver.delete_prefix(up.key.rsplit("/", 1)[0] + "/")
    job_log.info("downloading volume %s (%s) from %s to store %s as %s", up.volume_name, up.volume_uuid, url,
                 up.store.name, up.key)
    options = dataclasses.replace(tsvc.download_options(runtime), max_bytes=_max_bytes(runtime))
    try:
        result = download_to_store(url, driver, up.key, expected=up.expected, algorithms=("SHA-512", "SHA-256"),
                                   options=options, progress=_percent_writer(runtime, ref_id, on_progress))
    except (TransferError, StoreError) as exc:
        _failed(runtime, ref_id, str(exc))
        raise OperationFailed(str(exc)) from None
    _finish(runtime, up, driver, result.digests, job_log)
    return up.volume_id


def download_failed_for_good(runtime: "Runtime", ref_id: int, reason: str) -> None:
    """The job died without recording why (a crash, its last attempt's worker killed)."""
    _failed(runtime, ref_id, reason)


# ---- getUploadParamsForVolume: the POST ------------------------------------------------------------

@dataclass(frozen=True)
class VolumeClaim:
    up: _Upload
    kind: str = VOLUME_KIND


def _claim(runtime: "Runtime", ticket_id: str, payload: dict[str, Any]) -> VolumeClaim:
    with runtime.session() as s:
        ref = s.get(VolumeStoreRef, payload["copy"])
        volume = s.get(Volume, ref.volume_id) if ref is not None else None
        if volume is None or volume.removed is not None or volume.uuid != payload["volume"]:
            raise TicketRefused("the volume of this upload no longer exists")
        # Conditional, so two POSTs racing with one ticket cannot both win.
        claimed = s.execute(
            update(Volume).where(Volume.id == volume.id, Volume.state == VolumeState.NotUploaded.value)
            .values(state=VOLUME.next_state(VolumeState.NotUploaded.value, VolumeEvent.UploadRequested),
                    updated=runtime.now())
            .execution_options(synchronize_session=False)).rowcount == 1
        if not claimed:
            raise TicketRefused("this upload URL was already used")
        s.refresh(volume)
        up = _begin(s, runtime, ref, volume, DownloadState.UPLOAD_IN_PROGRESS)
    log.info("upload %s of volume %s (%s) started, to store %s", ticket_id, up.volume_name, up.volume_uuid,
             up.store.name)
    return VolumeClaim(up)


def _store(runtime: "Runtime", claim: VolumeClaim, chunks: Iterable[bytes]) -> transfers.StoredUpload:
    up = claim.up
    driver = runtime.drivers.for_store(up.store)
    try:
        result = write_verified(driver, up.key, chunks, expected=up.expected, algorithms=("SHA-512", "SHA-256"),
                                max_bytes=_max_bytes(runtime),
                                progress=transfers.upload_heartbeat(runtime, VolumeStoreRef, up.ref_id))
        _finish(runtime, up, driver, result.digests, log)
    except OperationFailed as exc:  # the image was refused; _finish recorded why
        raise transfers.UploadFailed(400, exc.message) from None
    except BaseException as exc:  # the client may also have gone away mid-way
        status, reason = transfers.upload_failure(exc, SIZE_SETTING)
        transfers.remove_quietly(driver, up.key)
        _failed(runtime, up.ref_id, reason)
        if isinstance(exc, Exception):
            raise transfers.UploadFailed(status, reason) from exc
        raise
    return transfers.StoredUpload(up.volume_uuid, up.volume_name, "Upload Complete")


# ---- extractVolume --------------------------------------------------------------------------------

def check_extractable(session: Session, volume: Volume, *, admin: bool) -> None:
    """CloudStack's refusals, checked when extractVolume is called (431 / 531)."""
    if volume.state not in (VolumeState.Ready.value, VolumeState.Uploaded.value):
        raise InvalidParameter(f"Volume {volume.uuid} is in state {volume.state}: only a Ready or Uploaded volume "
                               f"can be extracted", "id")
    if volume.vm_id is not None:
        vm = session.get(VirtualMachine, volume.vm_id)
        if vm.state != VmState.Stopped.value:
            raise PermissionDenied(EXTRACT_REFUSED_RUNNING)
    if volume.volume_type == "ROOT" and not admin and volume.template_id is not None:
        template = session.get(VMTemplate, volume.template_id)
        if not template.extractable:
            raise PermissionDenied(f"The volume:{volume.uuid} is not allowed to be extracted")


def _uploaded_copy(session: Session, volume_id: int) -> VolumeStoreRef | None:
    return session.scalars(select(VolumeStoreRef).where(
        VolumeStoreRef.volume_id == volume_id, VolumeStoreRef.purpose == UPLOAD,
        VolumeStoreRef.state == ObjectInStoreState.Ready.value)).first()


def extract(runtime: "Runtime", volume_id: int, base_url: str, job_log) -> dict[str, Any]:
    """A signed, expiring URL to the volume's image: its uploaded copy, or a copy of its pool
    file made now on an image store of its zone (removed once the URL has expired)."""
    expires = transfers.extract_expiry(runtime)
    with runtime.session() as s:
        volume = s.get(Volume, volume_id)
        check_extractable(s, volume, admin=True)  # still so now that the job runs
        ref = _uploaded_copy(s, volume.id)
        if ref is None:
            pool = s.get(StoragePool, volume.pool_id)
            store = choose_store(s, runtime, s.get(Zone, volume.zone_id), volume.name)
            ref = VolumeStoreRef(volume_id=volume.id, store_id=store.id, zone_id=volume.zone_id, purpose=EXTRACT,
                                 state=ObjectInStoreState.Creating.value,
                                 download_state=DownloadState.DOWNLOAD_IN_PROGRESS.value, download_pct=0,
                                 expires=expires, created=runtime.now())
            s.add(ref)
            s.flush()
            copy_from = (pool.path, volume.path, volume.format, store)
            s.expunge(store)
        else:
            copy_from = None
        ref_id, key = ref.id, ref.install_path
        vol_uuid, vol_name, vol_account, vol_fmt = volume.uuid, volume.name, volume.account_id, volume.format
        zone = s.get(Zone, volume.zone_id)
        zone_uuid, zone_name = zone.uuid, zone.name
        account_uuid = s.get(Account, volume.account_id).uuid
    if copy_from is not None:
        key = volume_key(vol_account, volume_id, vol_fmt)
        _copy_pool_file(runtime, ref_id, *copy_from, key, job_log)
    url = transfers.signed_extract_url(runtime, base_url, VOLUME_KIND, {"copy": ref_id, "volume": vol_uuid},
                                       key.rsplit("/", 1)[-1], expires)
    job_log.info("extract URL for volume %s (%s) from volume copy %s, valid until %s", vol_name, vol_uuid, ref_id,
                 expires.isoformat())
    return {
        "id": vol_uuid,
        "name": vol_name,
        "extractId": uuidlib.uuid4().hex,
        "accountid": account_uuid,
        "zoneid": zone_uuid,
        "zonename": zone_name,
        "extractMode": transfers.HTTP_DOWNLOAD,
        "url": url,
        "state": transfers.URL_CREATED,
        "status": transfers.URL_CREATED,
        "storagetype": "Image",
        "uploadpercentage": 100,
        "created": cs_date(runtime.now()),
    }


def _copy_pool_file(runtime: "Runtime", ref_id: int, pool_path: str, rel: str, fmt: str, store: ImageStore,
                    key: str, job_log) -> None:
    """Copy a volume's file to the store, hashed while written. A qcow2 volume may name a
    template's cached copy as its backing file: it is flattened first, so the image stands alone."""
    driver = runtime.drivers.for_store(store)
    try:
        with tempfile.TemporaryDirectory(dir=pool_path, prefix=".extract-") as tmp:
            source_dir, source_rel = pool_path, rel
            if fmt == "QCOW2":
                flat = Path(tmp) / "flat.qcow2"
                subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(PosixPool(pool_path).file(rel)),
                                str(flat)], check=True, capture_output=True, timeout=3600)
                source_dir, source_rel = tmp, flat.name
            source = LocalDriver(source_dir)
            result = write_verified(driver, key, source.open_reader(source_rel), algorithms=("SHA-256",))
    except (OSError, subprocess.SubprocessError, TransferError, StoreError) as exc:
        with runtime.session() as s:
            s.execute(update(VolumeStoreRef).where(VolumeStoreRef.id == ref_id)
                      .values(state=ObjectInStoreState.Failed.value, error_text=str(exc)))
        raise OperationFailed(f"Copying the volume to image store {store.name} failed: {exc}") from None
    with runtime.session() as s:
        s.execute(update(VolumeStoreRef).where(VolumeStoreRef.id == ref_id).values(
            state=ObjectInStoreState.Ready.value, download_state=DownloadState.DOWNLOADED.value, download_pct=100,
            install_path=key, physical_size=result.size, sha256=result.digests["SHA-256"], updated=runtime.now()))
    job_log.info("volume copy %s: %s/%s copied to store %s as %s (%d bytes)", ref_id, pool_path, rel, store.name,
                 key, result.size)


def _open_extract(runtime: "Runtime", payload: dict[str, Any]) -> transfers.ExtractSource:
    with transfers.reading(runtime) as s:
        ref = s.get(VolumeStoreRef, payload["copy"])
        volume = s.get(Volume, ref.volume_id) if ref is not None else None
        if (volume is None or volume.removed is not None or volume.uuid != payload["volume"]
                or ref.state != ObjectInStoreState.Ready.value):
            raise transfers.ExtractGone(f"volume {payload['volume']} is no longer on this store")
        store = s.get(ImageStore, ref.store_id)
        s.expunge_all()
    driver = runtime.drivers.for_store(store)
    info = driver.stat(ref.install_path)
    if info is None:
        raise transfers.ExtractGone(f"{ref.install_path} is missing from store {store.name}")
    filename = ref.install_path.rsplit("/", 1)[-1]
    return transfers.ExtractSource(driver, ref.install_path, info.size, filename, ref.sha256 or f"v{ref.id}",
                                   info.modified)


# ---- attach: an Uploaded volume goes to primary storage -------------------------------------------

def copy_to_pool(runtime: "Runtime", volume_id: int, job_log) -> None:
    """Copy a Copying volume's uploaded image to the pool chosen for it (verified against its
    checksum) and mark it Ready; its image store copy is then removed."""
    with runtime.session() as s:
        volume = s.get(Volume, volume_id)
        if volume.state != VolumeState.Copying.value:
            return
        ref = _uploaded_copy(s, volume_id)
        pool = s.get(StoragePool, volume.pool_id)
        store = s.get(ImageStore, ref.store_id)
        s.expunge(store)
        key, checksum, pool_path, rel, vol_uuid = ref.install_path, ref.checksum, pool.path, volume.path, volume.uuid
    try:
        copy_verified(runtime.drivers.for_store(store), key, LocalDriver(pool_path), rel,
                      expected=parse_checksum(checksum))
    except (TransferError, StoreError, OSError) as exc:
        raise OperationFailed(f"Copying volume {vol_uuid} to primary storage failed: {exc}") from None
    with runtime.session() as s:
        volume = s.get(Volume, volume_id)
        _transition(volume, VolumeEvent.OperationSucceeded, runtime.now())
        ref = _uploaded_copy(s, volume_id)
        ref.state, ref.expires = ObjectInStoreState.Destroying.value, runtime.now()  # removed by the sweep
    job_log.info("uploaded volume %s copied to %s/%s: Ready", vol_uuid, pool_path, rel)


def copy_to_pool_failed(runtime: "Runtime", volume_id: int, reason: str) -> None:
    """The volume stays Uploaded (its image is still on the store), with the reason."""
    with runtime.session() as s:
        volume = s.get(Volume, volume_id)
        if volume is not None and volume.state == VolumeState.Copying.value:
            _transition(volume, VolumeEvent.OperationFailed, runtime.now())
            volume.pool_id = volume.path = None
            volume.vm_id = volume.device_id = None
            volume.error_text = reason


# ---- expiry: abandoned uploads, expired extract copies, copies of deleted volumes ------------------

def abandon_expired_uploads(runtime: "Runtime") -> int:
    """CloudStack's upload monitor. Uploads never started before their postURL expired
    (upload.operation.timeout): template copies become ABANDONED, volumes UploadAbandoned.
    Uploads started but receiving nothing for as long (transfers.stall_limit: the process
    receiving it died, or the client stopped sending): template copies become ABANDONED, volumes
    UploadError (CloudStack's OperationTimeout from UploadInProgress). Either way they stay
    listed with the reason until deleted (or, a template copy, reset). A live upload refreshes
    its copy's ``updated`` as bytes arrive (transfers.upload_heartbeat). Returns how many were marked."""
    now = runtime.now()
    deadline = now - timedelta(minutes=runtime.settings.get("upload.operation.timeout"))
    limit = transfers.stall_limit(runtime)
    silent_since = now - limit
    stalled = f"no data was received for {limit.total_seconds() / 60:g} minutes, so the upload was abandoned"
    T, R, V = TemplateStoreRef, VolumeStoreRef, Volume
    waiting, receiving = DownloadState.NOT_UPLOADED.value, DownloadState.UPLOAD_IN_PROGRESS.value
    marked = 0
    with runtime.session() as s:

        def changed(stmt) -> bool:
            # Compare-and-set, as the claims are: a claim or heartbeat committed meanwhile wins.
            return s.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1

        for ref_id, template_id, state, download_state in s.execute(
                select(T.id, T.template_id, T.state, T.download_state)
                .where(((T.download_state == waiting) & (T.created < deadline))
                       | ((T.download_state == receiving) & (T.updated < silent_since)))).all():
            started = download_state == receiving
            if changed(update(T).where(T.id == ref_id, T.state == state, T.download_state == download_state,
                                       T.updated < silent_since if started else T.created < deadline)
                       .values(state=OBJECT_IN_STORE.next_state(state, ObjectInStoreEvent.OperationFailed),
                               download_state=DownloadState.ABANDONED.value, updated=now,
                               error_text=f"{UPLOAD_TIMED_OUT}: " + (
                                   stalled if started else "nothing was uploaded before the upload URL expired"))):
                log.info("template copy %s (template %s): upload abandoned (%s)", ref_id, template_id,
                         "stalled" if started else "never started")
                marked += 1
        for ref_id, volume_id, volume_uuid, volume_name, state in s.execute(
                select(R.id, V.id, V.uuid, V.name, V.state).join(V, V.id == R.volume_id)
                .where(R.purpose == UPLOAD,
                       ((V.state == VolumeState.NotUploaded.value) & (R.created < deadline))
                       | ((V.state == VolumeState.UploadInProgress.value) & (R.download_state == receiving)
                          & (R.updated < silent_since)))).all():
            started = state == VolumeState.UploadInProgress.value
            reason = f"{UPLOAD_TIMED_OUT} for volume {volume_uuid}" + (f": {stalled}" if started else "")
            ref = update(R).where(R.id == ref_id).values(state=ObjectInStoreState.Failed.value, updated=now,
                                                         download_state=DownloadState.ABANDONED.value,
                                                         error_text=reason)
            volume = (update(V).where(V.id == volume_id, V.state == state)
                      .values(state=VOLUME.next_state(state, VolumeEvent.OperationTimeout), updated=now,
                              error_text=reason))
            # The copy decides a started upload (its heartbeat), the volume one never started (its claim).
            first, then = ((ref.where(R.download_state == receiving, R.updated < silent_since), volume) if started
                           else (volume, ref))
            if changed(first) and changed(then):
                log.info("volume %s (%s): upload abandoned (%s)", volume_name, volume_uuid,
                         "stalled" if started else "never started")
                marked += 1
    return marked


def remove_stale_copies(runtime: "Runtime") -> int:
    """Remove from their stores the extract copies whose URL expired, the copies of volumes
    deleted since, and uploaded images already copied to primary. Returns how many."""
    now = runtime.now()
    with runtime.session() as s:
        stale = s.execute(select(VolumeStoreRef.id, VolumeStoreRef.install_path, ImageStore)
                          .join(Volume, Volume.id == VolumeStoreRef.volume_id)
                          .join(ImageStore, ImageStore.id == VolumeStoreRef.store_id)
                          .where((Volume.removed.is_not(None))
                                 | ((VolumeStoreRef.purpose == EXTRACT) & (VolumeStoreRef.expires < now)
                                    & (VolumeStoreRef.state != ObjectInStoreState.Creating.value))
                                 | (VolumeStoreRef.state == ObjectInStoreState.Destroying.value))).all()
        s.expunge_all()
    removed = 0
    for ref_id, key, store in stale:
        try:
            if key:
                runtime.drivers.for_store(store).delete_prefix(key.rsplit("/", 1)[0] + "/")
        except StoreError as exc:
            log.warning("volume copy %s could not be removed from store %s: %s", ref_id, store.name, exc)
            continue
        with runtime.session() as s:
            s.execute(VolumeStoreRef.__table__.delete().where(VolumeStoreRef.id == ref_id))
        removed += 1
    return removed


def monitor_interval_seconds(runtime: "Runtime") -> float:
    return 60.0 * float(runtime.settings.get("upload.monitoring.interval"))


@periodic_task("upload-monitor", monitor_interval_seconds)
def _periodic_upload_monitor(runtime: "Runtime") -> None:
    abandon_expired_uploads(runtime)
    remove_stale_copies(runtime)


@store_reference_check
def _holds_volumes(session: Session, runtime: "Runtime", store: ImageStore) -> str | None:
    held = session.scalar(select(VolumeStoreRef.id).join(Volume, Volume.id == VolumeStoreRef.volume_id)
                          .where(VolumeStoreRef.store_id == store.id, VolumeStoreRef.purpose == UPLOAD,
                                 Volume.removed.is_(None)).limit(1))
    return "Cannot delete image store with active volumes backup!" if held is not None else None


transfers.UPLOAD_KINDS[VOLUME_KIND] = transfers.UploadKind(_claim, _store)
transfers.EXTRACT_KINDS[VOLUME_KIND] = _open_extract
