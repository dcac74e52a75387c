"""Snapshots across zones through a region-wide image store (copySnapshot, CloudStack 4.19).

A volume's snapshots live in one store, its deduplication domain (secstor.services.snapshots).
When that store is region-wide, every zone reads the snapshots from it directly (each chunk is
checked against its SHA-256 as it is read, so no staging copy is needed): such a snapshot is
available in every live zone, as a template's region-wide copy is. A chain on a zone's own store
is available in that zone only; copying one of its snapshots to another zone moves the whole
chain (every snapshot of the volume) into a region-wide store with the migration mover, so the
volume keeps one deduplication domain and the move has migration's claim, verification and
crash recovery. Nothing per zone is recorded: availability follows from where the chain is.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from sqlalchemy import and_, or_, select, union_all
from sqlalchemy.orm import Session

from secstor.db.models import ImageStore, Snapshot, Volume, Zone
from secstor.domain.errors import OperationFailed
from secstor.domain.states import SnapshotState
from secstor.services import migration as mig
from secstor.services.snapshots import SECONDARY, chunk_prefix
from secstor.services.templates import region_store_to_receive

if TYPE_CHECKING:
    from secstor.runtime import Runtime

log = logging.getLogger("secstor.snapshots")

COPY_HANDLER = "snapshot.copy"
COPY_QUEUE = "copy"


def _region_store_ids():
    return select(ImageStore.id).where(ImageStore.zone_id.is_(None))


def region_wide():
    """SQL condition: the snapshot is backed up into a region-wide store."""
    return and_(Snapshot.location_type == SECONDARY, Snapshot.store_id.in_(_region_store_ids()))


def available_in(zone_id: int):
    """SQL condition: the snapshot can be used in the zone (its own, or any for a region-wide one)."""
    return or_(Snapshot.zone_id == zone_id, region_wide())


def snapshot_zones():
    """(snapshot_id, zone_id) of every zone each snapshot is available in."""
    own = select(Snapshot.id.label("snapshot_id"), Snapshot.zone_id.label("zone_id"))
    region = (select(Snapshot.id, Zone.id).join(Zone, and_(Zone.removed.is_(None), Zone.id != Snapshot.zone_id))
              .where(region_wide()))
    return union_all(own, region).subquery("snapshot_zones")


def is_available_in(session: Session, snap: Snapshot, zone_id: int) -> bool:
    return session.scalar(select(Snapshot.id).where(Snapshot.id == snap.id, available_in(zone_id))) is not None


def region_store_for(runtime: "Runtime", session: Session) -> ImageStore | None:
    return region_store_to_receive(session, runtime.settings.get("image.store.allocation.algorithm"),
                                   runtime.settings.get("secondary.storage.capacity.threshold"))


def copy_refusal(runtime: "Runtime", session: Session, snap: Snapshot) -> str | None:
    """Why the snapshot cannot be made available in other zones now, or None."""
    store = session.get(ImageStore, snap.store_id)
    if store.zone_id is None or region_store_for(runtime, session) is not None:
        return None
    return (f"Snapshot {snap.uuid} is on image store {store.name} of its zone only, and no region-wide image store "
            f"can take it: copying snapshots to other zones needs one")


def copy_snapshot(runtime: "Runtime", job_id: int, snapshot_id: int, on_bytes: Callable[[int], None],
                  lost: Callable[[], bool], job_log) -> None:
    """Make the snapshot usable in every zone: nothing to do if its chain is on a region-wide
    store, else the chain moves there. Run again after a crash, it resumes the move (the chain's
    claim carries this job's id) or finds it done."""
    with runtime.session() as s:
        snap = s.get(Snapshot, snapshot_id)
        if snap.removed is not None or snap.state != SnapshotState.BackedUp.value:
            raise OperationFailed(f"Snapshot {snap.uuid} was deleted before it could be copied")
        src = s.get(ImageStore, snap.store_id)
        if src.zone_id is None:
            job_log.info("snapshot %s is on region-wide image store %s: available in every zone already",
                         snap.uuid, src.name)
            return
        dst = region_store_for(runtime, s)
        if dst is None:
            raise OperationFailed(copy_refusal(runtime, s, snap))
        volume = s.get(Volume, snap.volume_id)
        move = {"kind": "snapshot", "id": volume.id, "from": src.id, "to": dst.id,
                "prefix": chunk_prefix(volume.account_id, volume.id)}
        name, snap_uuid = f"snapshots of volume {volume.name}", snap.uuid
        stores = {src.id: src, dst.id: dst}
        s.expunge_all()
    job_log.info("snapshot %s: moving the snapshots of its volume from image store %s to region-wide store %s",
                 snap_uuid, src.name, dst.name)
    outcome = mig.Mover(runtime, job_id, stores, on_bytes, lost, job_log).move(move, name)
    if not outcome.moved:
        raise OperationFailed(f"Failed to copy snapshot {snap_uuid}: {outcome.reason}")
    mig.unwind(runtime, job_id)  # a source the move could not clean up gets another try


def copy_failed(runtime: "Runtime", job_id: int) -> None:
    """A copy job failed for good: its half-done chain move is undone (or finished if switched)."""
    mig.unwind(runtime, job_id)
