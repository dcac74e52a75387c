"""createTemplate: a new RAW template made from a snapshot's content or from a volume's file.

The template and its copy row are made by the template service (placement: one store of the
source's zone); the job writes the content once through ``write_verified`` (SHA-256 and SHA-512
computed on the way) and finishes the copy like every download (inspection, template.properties,
Ready). A volume is read through a point-in-time copy on its pool (reflink, sparse copy, or
qcow2 flattened to raw), so an instance started meanwhile cannot tear the image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from secstor.chunks import load_manifest, restore_stream
from secstor.db.models import Snapshot, StoragePool, VMTemplate, Volume, Zone
from secstor.domain.errors import OperationFailed
from secstor.domain.states import DownloadState
from secstor.movers.transfer import write_verified
from secstor.primary.posix import PoolError
from secstor.services import snapshots as snaps
from secstor.services import templates as svc

if TYPE_CHECKING:
    from secstor.runtime import Runtime
    from secstor.stores.base import StoreDriver

log = logging.getLogger("secstor.templates.create")

CREATE_HANDLER = "template.create"
READ_SIZE = 1 << 20


def create(session: Session, runtime: "Runtime", spec: svc.NewTemplate, zone: Zone, source: dict[str, int],
           submit_job: Callable[..., Any]) -> tuple[VMTemplate, Any]:
    """The template, its copy on one image store of ``zone`` and the job (returned) that fills
    it from ``source`` ({"snapshot_id": id} or {"volume_id": id}, checked by the caller)."""
    template, (ref,) = svc.create_with_copies(session, runtime, spec, [zone.uuid],
                                              download_state=DownloadState.NOT_DOWNLOADED, single_store=True)
    job = submit_job(CREATE_HANDLER, {"ref_id": ref.id, "template_uuid": template.uuid, **source},
                     instance_type="Template", instance_id=template.uuid)
    session.flush()
    ref.job_id = job.id
    log.info("template %s (%s) to be made from %s by job %s", template.name, template.uuid, source, job.uuid)
    return template, job


def _file_pieces(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while piece := f.read(READ_SIZE):
            yield piece


def _write_file(path: Path, driver: "StoreDriver", key: str, algorithms, progress):
    size = path.stat().st_size
    return write_verified(driver, key, _file_pieces(path), algorithms=algorithms, size_hint=size,
                          progress=lambda done: progress(done, size))


def _snapshot_writer(runtime: "Runtime", snapshot_id: int) -> svc.Fetch:
    """Writes a snapshot's content: its manifest's chunks, or its copy on primary storage."""

    def fetch(driver, key, expected, algorithms, progress):
        with runtime.session() as s:
            snap = s.get(Snapshot, snapshot_id)
            if snap.removed is not None or snap.state not in snaps.RESTORABLE:
                raise OperationFailed(f"Snapshot {snap.uuid} was deleted before the template was made from it")
            store = snaps.chunk_store(runtime, s, snap.store_id, snaps.chunk_prefix(snap.account_id, snap.volume_id)) \
                if snap.manifest_key else None
            primary_copy = None if store else Path(s.get(StoragePool, snap.pool_id).path) / snap.primary_path
            snap_uuid = snap.uuid
        if store is None:
            return _write_file(primary_copy, driver, key, algorithms, progress)
        manifest = load_manifest(store, snap_uuid)
        return write_verified(driver, key, restore_stream(manifest, store), algorithms=algorithms,
                              size_hint=manifest.volume_size,
                              progress=lambda done: progress(done, manifest.volume_size))

    return fetch


def _volume_writer(runtime: "Runtime", volume_id: int, template_uuid: str) -> svc.Fetch:
    """Writes a volume's content, read from a raw point-in-time copy made on its pool."""

    def fetch(driver, key, expected, algorithms, progress):
        with runtime.session() as s:
            volume = s.get(Volume, volume_id)
            if volume.removed is not None or volume.path is None:
                raise OperationFailed(f"Volume {volume.uuid} was deleted before the template was made from it")
            pool_path = Path(s.get(StoragePool, volume.pool_id).path)
            source, fmt, volume_uuid = pool_path / volume.path, volume.format, volume.uuid
        # Named after the template: a retry after a crash overwrites the dead attempt's copy.
        copy = pool_path / snaps.SNAPSHOT_DIR / f"template-{template_uuid}.raw"
        try:
            snaps.copy_point_in_time(source, fmt, copy)
        except (OSError, PoolError) as exc:
            raise OperationFailed(f"Failed to read volume {volume_uuid}: {exc}") from None
        try:
            return _write_file(copy, driver, key, algorithms, progress)
        finally:
            copy.unlink(missing_ok=True)

    return fetch


def fill_template(runtime: "Runtime", params: dict[str, Any], on_progress: Callable[[int], None],
                  on_bytes: Callable[[int, int], None], job_log) -> VMTemplate | None:
    """Write the new template's copy from its source and make it Ready (a retry of a job whose
    copy is Ready returns at once); None if the template was deleted meanwhile."""
    if "snapshot_id" in params:
        fetch = _snapshot_writer(runtime, params["snapshot_id"])
    else:
        fetch = _volume_writer(runtime, params["volume_id"], params["template_uuid"])

    def fetch_reporting_bytes(driver, key, expected, algorithms, progress):
        def both(done: int, total: int | None) -> None:
            progress(done, total)
            on_bytes(done, total or 0)

        return fetch(driver, key, expected, algorithms, both)

    return svc.download_copy(runtime, params["ref_id"], on_progress, job_log, fetch=fetch_reporting_bytes)
