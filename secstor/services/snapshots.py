"""Volume snapshots: the point-in-time copy on primary storage, its deduplicated backup into an
image store (secstor.chunks), revert, volumes made from snapshots, and the policy scheduler.

Every snapshot of a volume lives in ONE image store, under the chunk-store prefix
``snapshots/<account id>/<volume id>`` (docs/layout.md): that prefix is the deduplication
domain, so a new snapshot goes where the volume's chain already is. No store or pool I/O
happens while a database transaction is open (SQLite locks the whole database for writers).
"""

from __future__ import annotations

import logging
import os
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from secstor.chunks import ChunkStore, ManifestCorrupted, backup, collect_garbage, delete_manifest, load_manifest
from secstor.chunks import restore as restore_manifest
from secstor.chunks import repair, scrub
from secstor.db.models import ImageStore, Snapshot, SnapshotPolicy, StoragePool, Volume
from secstor.domain.capacity import stores_for_new_data
from secstor.domain.errors import InvalidParameter, OperationFailed
from secstor.domain.snapshot_policy import (IntervalType, interval_limit_setting, next_run, parse_schedule,
                                            parse_timezone, retention)
from secstor.domain.states import SNAPSHOT, SnapshotEvent, SnapshotState
from secstor.domain.volumes import VolumeEvent, VolumeState
from secstor.jobs.engine import enqueue
from secstor.primary.posix import QCOW2, PoolError, reflink
from secstor.services import volumes as vols
from secstor.services.background import periodic_task
from secstor.services.chain_moves import wait_for_chain_move, wait_while_chain_moves
from secstor.services.staging import driver_if_reachable
from secstor.services.staging import STAGING_ROLE, eviction_interval_seconds
from secstor.services.templates import region_store_to_receive
from secstor.stores.base import StoreError
from secstor.stores.local import copy_file_sparse

if TYPE_CHECKING:
    from secstor.runtime import Runtime

log = logging.getLogger("secstor.snapshots")

CREATE_HANDLER = "snapshot.create"
DELETE_HANDLER = "snapshot.delete"
REVERT_HANDLER = "snapshot.revert"
VOLUME_HANDLER = "snapshot.volume"
GC_HANDLER = "snapshot.gc"
SCRUB_HANDLER = "snapshot.scrub"
PRIMARY, SECONDARY = "primary", "secondary"
MANUAL, RECURRING = "MANUAL", "RECURRING"
SNAPSHOT_DIR = "snapshots"  # on the pool: <pool>/snapshots/<snapshot uuid>
TO_REGION_SETTING = "snapshot.backup.to.region.store"
# States in which a snapshot's content can be read back.
RESTORABLE = (SnapshotState.BackedUp.value,)


def chunk_prefix(account_id: int, volume_id: int) -> str:
    return f"{SNAPSHOT_DIR}/{account_id}/{volume_id}"


def transition(snapshot: Snapshot, event: SnapshotEvent, now) -> None:
    snapshot.state = SNAPSHOT.next_state(snapshot.state, event)
    snapshot.updated = now


def not_ready_refusal(volume: Volume) -> InvalidParameter:
    return InvalidParameter(f"VolumeId: {volume.uuid} is not in Ready state but {volume.state}. "
                            f"Cannot take snapshot.", "volumeid")


# ---- creating ------------------------------------------------------------------------------------

def new_snapshot(session: Session, volume: Volume, *, name: str | None, snapshot_type: str, interval_type: str,
                 policy_id: int | None, now) -> Snapshot:
    """An Allocated snapshot of a Ready volume, which goes Snapshotting until the copy on primary
    is taken (so no revert or second snapshot can change it meanwhile)."""
    if volume.state != VolumeState.Ready.value:
        raise not_ready_refusal(volume)
    vols.transition(volume, VolumeEvent.SnapshotRequested, now)
    snapshot = Snapshot(volume_id=volume.id, account_id=volume.account_id, zone_id=volume.zone_id,
                        snapshot_type=snapshot_type, interval_type=interval_type, policy_id=policy_id,
                        state=SnapshotState.Allocated.value, location_type=PRIMARY, virtual_size=volume.size,
                        pool_id=volume.pool_id, name="", created=now, updated=now)
    session.add(snapshot)
    session.flush()
    snapshot.name = name or f"{volume.name}_{now.strftime('%Y%m%d%H%M%S')}_{snapshot.id}"
    return snapshot


def copy_point_in_time(source: Path, fmt: str, target: Path) -> None:
    """A raw copy of the volume taken without copying where the file system allows: reflink,
    else a sparse copy; a qcow2 volume (possibly with a backing file) is flattened to raw."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    tmp.unlink(missing_ok=True)
    if fmt == QCOW2:
        _qemu_convert(source, "qcow2", tmp, "raw")
    elif not reflink(source, tmp):
        copy_file_sparse(source, tmp)
    os.replace(tmp, target)


def _qemu_convert(source: Path, src_fmt: str, target: Path, dst_fmt: str) -> None:
    done = subprocess.run(["qemu-img", "convert", "-q", "-f", src_fmt, "-O", dst_fmt, str(source), str(target)],
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise PoolError(f"qemu-img convert failed: {done.stderr.strip()}")


def _chain_store(runtime: "Runtime", session: Session, snapshot: Snapshot) -> int:
    """The image store holding the volume's snapshots, or (first snapshot) the store placement
    picks: a region-wide store first while ``snapshot.backup.to.region.store`` is true and the
    zone uses the region store (it has a staging store), so the snapshot is usable in every zone;
    else the zone's own stores; the other kind failing that."""
    chained = session.scalars(select(Snapshot.store_id).where(
        Snapshot.volume_id == snapshot.volume_id, Snapshot.store_id.is_not(None), Snapshot.removed.is_(None))
        .order_by(Snapshot.id.desc())).first()
    if chained is not None:
        return chained
    algorithm = runtime.settings.get("image.store.allocation.algorithm")
    threshold = runtime.settings.get("secondary.storage.capacity.threshold")
    stores = list(session.scalars(select(ImageStore).where(
        ImageStore.zone_id == snapshot.zone_id, ImageStore.removed.is_(None)).order_by(ImageStore.id)))
    in_zone = stores_for_new_data(stores, algorithm, threshold)  # role Image only
    region = region_store_to_receive(session, algorithm, threshold)
    uses_region = any(store.role == STAGING_ROLE for store in stores)
    chosen = [region, *in_zone] if uses_region and runtime.settings.get(TO_REGION_SETTING) else [*in_zone, region]
    chosen = [store for store in chosen if store is not None]
    if not chosen:
        raise OperationFailed(f"Unable to find an image store in the zone to back snapshot {snapshot.uuid} up to")
    return chosen[0].id


def _previous_backed_up(session: Session, snapshot: Snapshot, store_id: int) -> str | None:
    """The uuid of the volume's latest snapshot in the store: its manifest gives the chunk size."""
    return session.scalars(select(Snapshot.uuid).where(
        Snapshot.volume_id == snapshot.volume_id, Snapshot.store_id == store_id, Snapshot.id != snapshot.id,
        Snapshot.state == SnapshotState.BackedUp.value, Snapshot.manifest_key.is_not(None))
        .order_by(Snapshot.id.desc())).first()


def chunk_store(runtime: "Runtime", session: Session, store_id: int, prefix: str) -> ChunkStore:
    return ChunkStore(runtime.drivers.for_store(session.get(ImageStore, store_id)), prefix)


def take_snapshot(runtime: "Runtime", snapshot_id: int, job_log, on_progress=None) -> None:
    """Run a snapshot to BackedUp from whatever state the last attempt reached; every step can
    run again (the primary copy is remade, the backup rewrites the same manifest atomically)."""
    with runtime.session() as s:
        snap = s.get(Snapshot, snapshot_id)
        volume = s.get(Volume, snap.volume_id)
        pool = s.get(StoragePool, snap.pool_id)
        if snap.state == SnapshotState.Allocated.value:
            transition(snap, SnapshotEvent.CreateRequested, runtime.now())
        state, pool_path, snap_uuid = snap.state, pool.path, snap.uuid
        source, fmt = Path(pool.path) / volume.path, volume.format
    if state == SnapshotState.Creating.value:
        rel = f"{SNAPSHOT_DIR}/{snap_uuid}"
        job_log.info("snapshot %s: copying volume %s on primary to %s", snap_uuid, source, rel)
        copy_point_in_time(source, fmt, Path(pool_path) / rel)
        with runtime.session() as s:
            snap = s.get(Snapshot, snapshot_id)
            snap.primary_path = rel
            transition(snap, SnapshotEvent.OperationSucceeded, runtime.now())
            vols.transition(s.get(Volume, snap.volume_id), VolumeEvent.OperationSucceeded, runtime.now())
            state = snap.state
    if state == SnapshotState.CreatedOnPrimary.value and not runtime.settings.get("snapshot.backup.to.secondary"):
        with runtime.session() as s:
            snap = s.get(Snapshot, snapshot_id)
            copy = Path(pool_path) / snap.primary_path
            snap.physical_size = copy.stat().st_blocks * 512
            transition(snap, SnapshotEvent.OperationNotPerformed, runtime.now())
        job_log.info("snapshot %s kept on primary storage only", snap_uuid)
        return
    if state in (SnapshotState.CreatedOnPrimary.value, SnapshotState.BackingUp.value):
        _back_up(runtime, snapshot_id, job_log, on_progress)
    _drop_primary_copy(runtime, snapshot_id)


def _back_up(runtime: "Runtime", snapshot_id: int, job_log, on_progress) -> None:
    with runtime.session() as s:
        volume_id = s.get(Snapshot, snapshot_id).volume_id
    wait_while_chain_moves(runtime, volume_id, job_log)
    with runtime.session() as s:
        snap = s.get(Snapshot, snapshot_id)
        wait_for_chain_move(s, snap.volume_id)  # a chain being moved: back up where it ends up
        if snap.store_id is None:
            snap.store_id = _chain_store(runtime, s, snap)
        if snap.state != SnapshotState.BackingUp.value:
            transition(snap, SnapshotEvent.BackupToSecondary, runtime.now())
        previous_uuid = _previous_backed_up(s, snap, snap.store_id)
        store = chunk_store(runtime, s, snap.store_id, chunk_prefix(snap.account_id, snap.volume_id))
        copy = Path(s.get(StoragePool, snap.pool_id).path) / snap.primary_path
        snap_uuid = snap.uuid
    previous = None
    if previous_uuid is not None:
        try:
            previous = load_manifest(store, previous_uuid)
        except (ManifestCorrupted, StoreError) as exc:  # costs only the parent link and chunk size
            job_log.warning("snapshot %s: manifest of snapshot %s unreadable: %s", snap_uuid, previous_uuid, exc)
    job_log.info("snapshot %s: backing up under %s", snap_uuid, store.prefix)
    manifest, stats = backup(copy, store, previous, snapshot_id=snap_uuid, grace=gc_grace(runtime),
                             on_progress=on_progress)
    with runtime.session() as s:
        snap = s.get(Snapshot, snapshot_id)
        snap.manifest_key = store.manifest_key(manifest.snapshot_id)
        snap.physical_size = stats.bytes_added
        snap.virtual_size = manifest.volume_size
        snap.location_type = SECONDARY
        transition(snap, SnapshotEvent.OperationSucceeded, runtime.now())
    job_log.info("snapshot %s backed up: %d bytes added (%d new chunks, %d reused) in %.2f s", snap_uuid,
                 stats.bytes_added, stats.chunks_new, stats.chunks_reused, stats.seconds)


def _drop_primary_copy(runtime: "Runtime", snapshot_id: int) -> None:
    """Remove the copy on primary of a snapshot now held by an image store (a retry after a crash
    between the backup and this step finds primary_path still set and finishes it)."""
    with runtime.session() as s:
        snap = s.get(Snapshot, snapshot_id)
        if snap.location_type != SECONDARY or not snap.primary_path:
            return
        copy = Path(s.get(StoragePool, snap.pool_id).path) / snap.primary_path
    copy.unlink(missing_ok=True)
    with runtime.session() as s:
        s.get(Snapshot, snapshot_id).primary_path = None


def snapshot_failed(runtime: "Runtime", snapshot_id: int, reason: str) -> None:
    """A create job failed for good: the snapshot goes to Error, its volume back to Ready, and its
    copy on primary is removed (orphan chunks of a half backup are left for GC)."""
    with runtime.session() as s:
        snap = s.get(Snapshot, snapshot_id)
        volume = s.get(Volume, snap.volume_id)
        if volume.state == VolumeState.Snapshotting.value:
            vols.transition(volume, VolumeEvent.OperationFailed, runtime.now())
        # The SNAPSHOT machine reaches Error only from Creating and BackingUp.
        for state, event in ((SnapshotState.Allocated, SnapshotEvent.CreateRequested),
                             (SnapshotState.CreatedOnPrimary, SnapshotEvent.BackupToSecondary),
                             (SnapshotState.Creating, SnapshotEvent.OperationFailed),
                             (SnapshotState.BackingUp, SnapshotEvent.OperationFailed)):
            if snap.state == state.value:
                transition(snap, event, runtime.now())
        if snap.state != SnapshotState.Error.value:
            return  # it finished after all (BackedUp): keep it
        snap.error_text = reason
        copy = Path(s.get(StoragePool, snap.pool_id).path) / snap.primary_path if snap.primary_path else None
        snap.primary_path = None
    if copy is not None:
        copy.unlink(missing_ok=True)
    log.warning("snapshot %s failed: %s", snapshot_id, reason)


# ---- deleting ------------------------------------------------------------------------------------

def delete_snapshot(runtime: "Runtime", snapshot_id: int, job_log) -> None:
    """Forget a snapshot: its manifest (chunks stay for GC: other snapshots may share them) or its
    copy on primary. Never touches another snapshot. The manifest is on the chain's one store
    (zone or region-wide: nothing of a snapshot is cached elsewhere); if that store is away, the
    snapshot goes all the same and keeps its ``manifest_key`` until ``remove_owed_manifests``
    has removed the manifest."""
    with runtime.session() as s:
        snap = s.get(Snapshot, snapshot_id)
        if snap.state == SnapshotState.Destroyed.value:
            return
        if snap.state != SnapshotState.Destroying.value:
            transition(snap, SnapshotEvent.DestroyRequested, runtime.now())
        store_row = s.get(ImageStore, snap.store_id) if snap.manifest_key else None
        copy = Path(s.get(StoragePool, snap.pool_id).path) / snap.primary_path if snap.primary_path else None
        snap_uuid, prefix = snap.uuid, chunk_prefix(snap.account_id, snap.volume_id)
        s.flush()
        s.expunge_all()  # store_row is used after the transaction
    gone = store_row is None or _remove_manifest(runtime, store_row, prefix, snap_uuid, job_log)
    if copy is not None:
        copy.unlink(missing_ok=True)
    with runtime.session() as s:
        snap = s.get(Snapshot, snapshot_id)
        snap.primary_path = None
        if gone:
            snap.manifest_key = None
        transition(snap, SnapshotEvent.OperationSucceeded, runtime.now())
        snap.removed = runtime.now()
    job_log.info("snapshot %s deleted%s", snap_uuid, "" if gone else "; its manifest is removed once its store is back")


def _remove_manifest(runtime: "Runtime", store_row: ImageStore, prefix: str, snap_uuid: str, job_log, *,
                     reachable: bool = False) -> bool:
    """Remove a snapshot's manifest; True once it is surely gone from the store. ``reachable``:
    the store has just passed its probe, so finding nothing to remove means it is gone."""
    try:
        if delete_manifest(ChunkStore(runtime.drivers.for_store(store_row), prefix), snap_uuid):
            return True
    except (StoreError, OSError, ValueError) as exc:  # ValueError: a driver that cannot even be built
        job_log.warning("snapshot %s: manifest not removed from image store %s: %s", snap_uuid, store_row.name, exc)
        return False
    if reachable:
        return True
    # Nothing removed: gone already (a retry), or the store is away (an unmounted export looks empty).
    driver, why = driver_if_reachable(runtime, store_row)
    if driver is None:
        job_log.warning("snapshot %s: image store %s unreachable, manifest removal postponed: %s", snap_uuid,
                        store_row.name, why)
    return driver is not None


def remove_owed_manifests(runtime: "Runtime") -> int:
    """Remove the manifests of deleted snapshots whose store was away (they keep ``manifest_key``);
    the number removed. Each store is probed once per pass; one still away keeps its debts for
    the next pass; a deleted store owes nothing. A chain moved meanwhile carries its removed
    snapshots along (Snapshot.store_id), so the removal follows it."""
    with runtime.session() as s:
        owed = s.execute(select(Snapshot.id, Snapshot.uuid, Snapshot.account_id, Snapshot.volume_id, Snapshot.store_id)
                         .where(Snapshot.removed.is_not(None), Snapshot.manifest_key.is_not(None))
                         .order_by(Snapshot.store_id, Snapshot.id)).all()
        stores = {st.id: st for st in s.scalars(select(ImageStore).where(ImageStore.id.in_({o[4] for o in owed})))}
        s.expunge_all()
    reachable: dict[int, bool] = {}
    done = 0
    for snapshot_id, snap_uuid, account_id, volume_id, store_id in owed:
        store = stores[store_id]
        if store.removed is None:
            if store_id not in reachable:
                reachable[store_id] = driver_if_reachable(runtime, store)[0] is not None
            if not reachable[store_id] or not _remove_manifest(runtime, store, chunk_prefix(account_id, volume_id),
                                                               snap_uuid, log, reachable=True):
                reachable[store_id] = False  # away (again): its other debts wait for the next pass
                continue
        with runtime.session() as s:
            s.get(Snapshot, snapshot_id).manifest_key = None
        done += 1
    return done


@periodic_task("snapshot-owed-manifests", eviction_interval_seconds)
def _periodic_owed_manifests(runtime: "Runtime") -> None:
    remove_owed_manifests(runtime)


# ---- reading back: revert, new volumes -----------------------------------------------------------

def _restore_into(runtime: "Runtime", snapshot_id: int, target: Path, fmt: str) -> int:
    """Write the snapshot's content to ``target`` (made as ``<target>.part``, then renamed) in
    ``fmt``; returns the volume size. Zero slices and holes stay holes."""
    with runtime.session() as s:
        snap = s.get(Snapshot, snapshot_id)
        if snap.manifest_key:
            store = chunk_store(runtime, s, snap.store_id, chunk_prefix(snap.account_id, snap.volume_id))
            primary_copy = None
        else:
            store, primary_copy = None, Path(s.get(StoragePool, snap.pool_id).path) / snap.primary_path
        snap_uuid = snap.uuid
    target.parent.mkdir(parents=True, exist_ok=True)
    raw = target.with_name(target.name + ".raw.part" if fmt == QCOW2 else target.name + ".part")
    if store is not None:
        size = load_and_restore(store, snap_uuid, raw)
    else:
        size = copy_file_sparse(primary_copy, raw)
    if fmt == QCOW2:
        tmp = target.with_name(target.name + ".part")
        try:
            _qemu_convert(raw, "raw", tmp, "qcow2")
        finally:
            raw.unlink(missing_ok=True)
        raw = tmp
    os.replace(raw, target)
    return size


def load_and_restore(store: ChunkStore, snapshot_uuid: str, target: Path) -> int:
    manifest = load_manifest(store, snapshot_uuid)
    restore_manifest(manifest, store, target)
    return manifest.volume_size


def revert(runtime: "Runtime", snapshot_id: int, job_log) -> int:
    """Put the snapshot's content back into its volume (state RevertSnapshot, set by the API);
    returns the volume's id."""
    with runtime.session() as s:
        snap = s.get(Snapshot, snapshot_id)
        volume = s.get(Volume, snap.volume_id)
        if volume.state != VolumeState.RevertSnapshot.value:
            return volume.id  # a retry of a revert that finished
        target, fmt, volume_id = Path(s.get(StoragePool, volume.pool_id).path) / volume.path, volume.format, volume.id
    job_log.info("reverting volume %s to snapshot %s", volume_id, snapshot_id)
    size = _restore_into(runtime, snapshot_id, target, fmt)
    with runtime.session() as s:
        volume = s.get(Volume, volume_id)
        volume.size = size
        vols.transition(volume, VolumeEvent.OperationSucceeded, runtime.now())
    return volume_id


def revert_failed(runtime: "Runtime", snapshot_id: int, reason: str) -> None:
    with runtime.session() as s:
        volume = s.get(Volume, s.get(Snapshot, snapshot_id).volume_id)
        if volume.state == VolumeState.RevertSnapshot.value:
            vols.transition(volume, VolumeEvent.OperationFailed, runtime.now())
            volume.error_text = reason


def create_volume_content(runtime: "Runtime", volume_id: int, snapshot_id: int, job_log) -> None:
    """The file of a Creating volume made from a snapshot, then the volume is Ready."""
    with runtime.session() as s:
        volume = s.get(Volume, volume_id)
        if volume.state != VolumeState.Creating.value:
            return
        target, fmt = Path(s.get(StoragePool, volume.pool_id).path) / volume.path, volume.format
    job_log.info("volume %s: restoring snapshot %s into %s", volume_id, snapshot_id, target)
    size = _restore_into(runtime, snapshot_id, target, fmt)
    with runtime.session() as s:
        volume = s.get(Volume, volume_id)
        volume.size = size
        vols.transition(volume, VolumeEvent.OperationSucceeded, runtime.now())


# ---- garbage collection and scrub ----------------------------------------------------------------

def gc_grace(runtime: "Runtime") -> timedelta:
    return timedelta(seconds=runtime.settings.get("snapshot.gc.grace"))


def _chunk_stores_of(runtime: "Runtime", store_id: int) -> list[ChunkStore]:
    """One ChunkStore per volume whose snapshots live on the image store."""
    with runtime.session() as s:
        driver = runtime.drivers.for_store(s.get(ImageStore, store_id))
        pairs = s.execute(select(Snapshot.account_id, Snapshot.volume_id).where(Snapshot.store_id == store_id)
                          .distinct()).all()
    return [ChunkStore(driver, chunk_prefix(a, v)) for a, v in sorted(pairs)]


def collect_store_garbage(runtime: "Runtime", store_id: int) -> dict[str, int]:
    totals = {"manifests": 0, "chunksremoved": 0, "bytesremoved": 0, "chunkskept": 0}
    for store in _chunk_stores_of(runtime, store_id):
        stats = collect_garbage(store, grace=gc_grace(runtime))
        totals["manifests"] += stats.manifests
        totals["chunksremoved"] += stats.chunks_removed
        totals["bytesremoved"] += stats.bytes_removed
        totals["chunkskept"] += stats.chunks_referenced + stats.chunks_kept_recent
    return totals


def scrub_store(runtime: "Runtime", store_id: int, *, repair_damage: bool) -> dict[str, Any]:
    """Verify every chunk of the store's snapshots; with ``repair_damage``, copy damaged or missing
    chunks back from another image store holding the same volume's chunks."""
    checked = damaged = repaired = 0
    affected: set[str] = set()
    with runtime.session() as s:
        others = [st for st in s.scalars(select(ImageStore).where(ImageStore.id != store_id,
                                                                  ImageStore.removed.is_(None)))]
        other_drivers = [runtime.drivers.for_store(st) for st in others]
    for store in _chunk_stores_of(runtime, store_id):
        report = scrub(store)
        if repair_damage:
            for driver in other_drivers:
                if not report.ok:
                    repair(store, report, ChunkStore(driver, store.prefix))
        checked += report.chunks_checked
        damaged += len(report.damaged | report.missing)
        repaired += len(report.repaired)
        if not report.ok:
            affected |= report.affected_snapshots
    return {"chunkschecked": checked, "chunksdamaged": damaged, "chunksrepaired": repaired,
            "damagedsnapshots": sorted(affected), "ok": not affected and damaged == repaired}


@periodic_task("snapshot-gc", lambda rt: float(rt.settings.get("snapshot.gc.interval")))
def _periodic_gc(runtime: "Runtime") -> None:
    with runtime.session() as s:
        store_ids = list(s.scalars(select(Snapshot.store_id).where(Snapshot.store_id.is_not(None)).distinct()))
    for store_id in store_ids:
        try:
            collect_store_garbage(runtime, store_id)
        except (StoreError, OSError) as exc:  # the others still get their GC
            log.warning("snapshot GC of image store %s failed: %s", store_id, exc)


# ---- policies ------------------------------------------------------------------------------------

def policy_next_run(policy: SnapshotPolicy, after) -> Any:
    interval = IntervalType(policy.interval_type)
    return next_run(parse_schedule(interval, policy.schedule), parse_timezone(policy.timezone), after)


def run_due_policies(runtime: "Runtime") -> list[int]:
    """Take the snapshots of every policy due at ``runtime.now()``; returns the snapshot ids.
    A policy is claimed by moving its next_run_at forward with a compare-and-set, so two
    schedulers never both take one run."""
    now = runtime.now()
    with runtime.session() as s:
        due = list(s.execute(select(SnapshotPolicy.id, SnapshotPolicy.next_run_at).where(
            SnapshotPolicy.removed.is_(None), SnapshotPolicy.next_run_at <= now).order_by(SnapshotPolicy.id)))
    taken = []
    for policy_id, planned in due:
        with runtime.session() as s:
            policy = s.get(SnapshotPolicy, policy_id)
            claimed = s.execute(update(SnapshotPolicy).where(
                SnapshotPolicy.id == policy_id, SnapshotPolicy.next_run_at == planned)
                .values(next_run_at=policy_next_run(policy, now))).rowcount
            if not claimed:
                continue
            volume = s.get(Volume, policy.volume_id)
            if volume.state != VolumeState.Ready.value:
                log.warning("snapshot policy %s: volume %s is %s, run of %s skipped", policy.uuid, volume.uuid,
                            volume.state, planned)
                continue
            snap = new_snapshot(s, volume, name=None, snapshot_type=RECURRING, interval_type=policy.interval_type,
                                policy_id=policy.id, now=now)
            enqueue(s, cmd="createSnapshot", handler=CREATE_HANDLER, params={"snapshot_id": snap.id},
                    account_id=volume.account_id, user_id=None, instance_type="Snapshot", instance_id=snap.uuid,
                    now=now)
            log.info("snapshot policy %s: snapshot %s of volume %s for the run of %s", policy.uuid, snap.uuid,
                     volume.uuid, planned)
            taken.append(snap.id)
    return taken


def prune_policy(runtime: "Runtime", policy_id: int, job_log) -> None:
    """Delete a policy's oldest BackedUp snapshots beyond min(maxsnaps, snapshot.max.<interval>)."""
    with runtime.session() as s:
        policy = s.get(SnapshotPolicy, policy_id)
        keep = retention(policy.max_snaps,
                         runtime.settings.get(interval_limit_setting(IntervalType(policy.interval_type))))
        ids = list(s.scalars(select(Snapshot.id).where(
            Snapshot.policy_id == policy_id, Snapshot.removed.is_(None),
            Snapshot.state == SnapshotState.BackedUp.value).order_by(Snapshot.id.desc())))
    for old in ids[keep:]:
        delete_snapshot(runtime, old, job_log)


@periodic_task("snapshot-policies", lambda rt: float(rt.settings.get("snapshot.policy.check.interval")))
def _periodic_policies(runtime: "Runtime") -> None:
    run_due_policies(runtime)

