"""The migration registry's object kinds beyond templates: snapshot chains and uploaded volumes
(secstor.services.migration imports this module so they are registered wherever it is used).

**Snapshot chain.** All snapshots of one volume share one chunk store (docs/layout.md): the
prefix ``snapshots/<account id>/<volume id>`` is the deduplication domain, so it moves as one
unit. The claim is a SnapshotChainMove row (one per volume); while it exists as Copying, new
backups of the volume wait (chain_moves.wait_for_chain_move) and the chain's manifests and chunks are
copied, each chunk verified by its SHA-256 id after decompression at the source and again at
the destination. The switch moves every Snapshot.store_id of the volume in one transaction;
then the source prefix is deleted and the row with it. Snapshots deleted meanwhile
(deleteSnapshot does not wait for the move) lose at the destination the manifest copied for
them (``after_switch``).

**Uploaded volume.** A volume uploaded to an image store and not yet attached (VolumeStoreRef,
purpose upload) moves like a template: a per-store row, its image verified against the
checksum recorded at upload. Extract copies are not moved: they expire within hours.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Callable

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from secstor.chunks import ChunkStore, delete_manifest
from secstor.chunks.store import ChunkCorrupted, decode_chunk
from secstor.db.models import ImageStore, Snapshot, SnapshotChainMove, Volume, VolumeStoreRef
from secstor.domain.states import OBJECT_IN_STORE, DownloadState, SnapshotState
from secstor.services.chain_moves import COPYING, SWITCHED
from secstor.services.migration import S, E, Claim, ObjectKind, RefTableKind, StoredObject, object_kind
from secstor.services.snapshots import chunk_prefix
from secstor.services.volume_transfers import UPLOAD
from secstor.stores.base import ObjectNotFound, StoreDriver, StoreError

if TYPE_CHECKING:
    from secstor.runtime import Runtime

log = logging.getLogger("secstor.migration")

_CHUNK_KEY = re.compile(r"/chunks/[0-9a-f]{4}/([0-9a-f]{64})$")
_MANIFEST_KEY = re.compile(r"/manifests/[^/]+$")
# Hosts' clocks differ: a snapshot removed this long before a chain move began still counts as
# removed during it (deleting a manifest that is already gone costs one request).
CLOCK_SKEW = timedelta(minutes=10)


class SnapshotChainKind(ObjectKind):
    """Object id = the volume's id; what the API names: any of its snapshots."""

    name = "snapshot"
    param = "snapshots"

    def __init__(self) -> None:
        # (store id, volume id) -> bytes under the chain's prefix, measured by ``measure`` just
        # before planning (listing a store is I/O: it cannot happen inside the plan's transaction).
        self._measured: dict[tuple[int, int], int] = {}

    def _chains(self, session: Session, store_id: int) -> list[tuple[Volume, int]]:
        """(volume, sum of its snapshots' physical sizes) of every volume with a live BackedUp
        snapshot on the store."""
        live = (select(Snapshot.volume_id).where(Snapshot.store_id == store_id, Snapshot.removed.is_(None),
                                                 Snapshot.state == SnapshotState.BackedUp.value))
        volumes = list(session.scalars(select(Volume).where(Volume.id.in_(live)).order_by(Volume.id)))
        added: dict[int, int] = {}
        for volume_id, size in session.execute(select(Snapshot.volume_id, Snapshot.physical_size).where(
                Snapshot.store_id == store_id, Snapshot.volume_id.in_([v.id for v in volumes]))):
            added[volume_id] = added.get(volume_id, 0) + (size or 0)
        return [(v, added.get(v.id, 0)) for v in volumes]

    def measure(self, runtime: "Runtime", store_id: int) -> None:
        with runtime.session() as s:
            store = s.get(ImageStore, store_id)
            s.expunge(store)
            chains = [(v.id, chunk_prefix(v.account_id, v.id)) for v, _ in self._chains(s, store_id)]
        driver = runtime.drivers.for_store(store)
        for volume_id, prefix in chains:
            self._measured[(store_id, volume_id)] = sum(o.size for o in driver.list(prefix + "/"))

    def ready_on_store(self, session, store_id, *, balance):
        return [StoredObject(self.name, v.id, v.uuid, f"snapshots of volume {v.name}",
                             self._measured.get((store_id, v.id), added), chunk_prefix(v.account_id, v.id))
                for v, added in self._chains(session, store_id)]

    def by_uuid(self, session, store_id):
        chains = {o.id: o for o in self.ready_on_store(session, store_id, balance=False)}
        rows = session.execute(select(Snapshot.uuid, Snapshot.volume_id).where(
            Snapshot.volume_id.in_(chains), Snapshot.removed.is_(None)))
        return {uuid: chains[volume_id] for uuid, volume_id in rows}

    def unsettled_on_store(self, session, store_id):
        rows = session.execute(select(Snapshot.name).where(
            Snapshot.store_id == store_id, Snapshot.removed.is_(None),
            Snapshot.state.in_((SnapshotState.BackingUp.value, SnapshotState.Copying.value)))).all()
        moving = session.execute(select(Volume.name).join(SnapshotChainMove, SnapshotChainMove.volume_id == Volume.id)
                                 .where(SnapshotChainMove.src_store_id == store_id)).all()
        return [r[0] for r in rows] + [f"snapshots of volume {r[0]}" for r in moving]

    def claim(self, session, object_id, src_id, dst_id, job_id, now):
        volume = session.scalars(select(Volume).where(Volume.id == object_id).with_for_update()).first()
        move = session.get(SnapshotChainMove, object_id)
        if move is not None:
            if move.job_id != job_id:
                return Claim("refused", reason="another job is moving its snapshots")
            return Claim("copy" if move.state == COPYING else "delete_source")
        stores = set(session.scalars(select(Snapshot.store_id).where(
            Snapshot.volume_id == object_id, Snapshot.removed.is_(None), Snapshot.store_id.is_not(None))))
        if volume is None or not stores:
            return Claim("refused", reason="it has no snapshots left")
        if stores == {dst_id}:
            return Claim("done")
        if stores != {src_id}:
            return Claim("refused", reason="its snapshots are not all on the source store")
        busy = session.scalar(select(Snapshot.uuid).where(
            Snapshot.volume_id == object_id, Snapshot.removed.is_(None),
            Snapshot.state.in_((SnapshotState.BackingUp.value, SnapshotState.Copying.value))).limit(1))
        if busy is not None:
            return Claim("refused", reason=f"snapshot {busy} is being backed up")
        session.add(SnapshotChainMove(volume_id=object_id, src_store_id=src_id, dst_store_id=dst_id, job_id=job_id,
                                      state=COPYING, created=now))
        session.flush()
        return Claim("copy")

    def copy_object(self, src: StoreDriver, dst: StoreDriver, key: str, on_bytes: Callable[[int], None]
                    ) -> int | None:
        """A chunk is verified by its id: decoded at the source (a damaged chunk is not spread),
        written, read back and decoded at the destination; a manifest is read back and compared.
        A file gone from the source since the listing is skipped: only deleteSnapshot (a
        manifest) and the GC (a chunk no manifest uses) remove files of a chain, and neither
        would be wanted at the destination (``after_switch`` removes a manifest copied before
        its snapshot was deleted)."""
        chunk = _CHUNK_KEY.search(key)
        if chunk is None and _MANIFEST_KEY.search(key) is None:
            return None
        try:
            blob = b"".join(src.open_reader(key))
        except ObjectNotFound:
            log.info("%s left the source store during the move of its chain: not copied", key)
            return 0
        try:
            if chunk is not None:
                decode_chunk(chunk.group(1), blob)
            dst.put(key, [blob], size_hint=len(blob))
            back = b"".join(dst.open_reader(key))
            if chunk is not None:
                decode_chunk(chunk.group(1), back)
            elif back != blob:
                raise StoreError(f"manifest {key} reads back different from what was written")
        except ChunkCorrupted as exc:
            raise StoreError(f"chunk {key}: {exc}") from None
        on_bytes(len(blob))
        return len(blob)

    def after_switch(self, runtime, object_id, job_id):
        """deleteSnapshot during the copy deletes the manifest where the snapshot was then, the
        source, possibly after it was copied: its copy at the destination would keep the chunks
        it uses from the GC forever. Every snapshot of the volume deleted (or being deleted)
        since the move began loses its manifest at the destination; a deletion that starts after
        the switch finds the snapshot there itself."""
        with runtime.session() as s:
            move = s.get(SnapshotChainMove, object_id)
            if move is None or move.job_id != job_id or move.state != SWITCHED:
                return
            volume, store = s.get(Volume, object_id), s.get(ImageStore, move.dst_store_id)
            deleted = list(s.scalars(select(Snapshot.uuid).where(
                Snapshot.volume_id == object_id,
                or_(Snapshot.state.in_((SnapshotState.Destroying.value, SnapshotState.Destroyed.value)),
                    Snapshot.removed.is_not(None)),
                or_(Snapshot.removed.is_(None), Snapshot.removed >= move.created - CLOCK_SKEW))))
            prefix = chunk_prefix(volume.account_id, volume.id)
            s.expunge(store)
        chunks = ChunkStore(runtime.drivers.for_store(store), prefix)
        for snapshot_uuid in deleted:
            if delete_manifest(chunks, snapshot_uuid):
                log.info("manifest of snapshot %s, deleted during the move of its chain, removed from image store %s",
                         snapshot_uuid, store.name)

    def switch(self, session, object_id, src_id, dst_id, job_id, now):
        move = session.get(SnapshotChainMove, object_id, with_for_update=True)
        if move is None or move.job_id != job_id or move.state != COPYING:
            return False
        session.execute(update(Snapshot).where(Snapshot.volume_id == object_id, Snapshot.store_id == src_id)
                        .values(store_id=dst_id))
        move.state = SWITCHED
        return True

    def forget_source(self, session, object_id, src_id, job_id):
        move = session.get(SnapshotChainMove, object_id, with_for_update=True)
        if move is not None and move.job_id == job_id and move.state == SWITCHED:
            session.delete(move)

    def release(self, session, object_id, src_id, dst_id, job_id, now):
        move = session.get(SnapshotChainMove, object_id, with_for_update=True)
        if move is not None and move.job_id == job_id and move.state == COPYING:
            session.delete(move)
            return True
        return False

    def leftovers(self, session, job_id):
        rows = session.execute(select(SnapshotChainMove, Volume.account_id)
                               .join(Volume, Volume.id == SnapshotChainMove.volume_id)
                               .where(SnapshotChainMove.job_id == job_id)).all()
        # In the template kind's terms: a copy in progress is the destination's "Creating"
        # copy to drop; a switched one leaves the source's "Destroyed" copy to remove.
        return [(m.volume_id, m.dst_store_id, S.Creating.value, chunk_prefix(a, m.volume_id)) if m.state == COPYING
                else (m.volume_id, m.src_store_id, S.Destroyed.value, chunk_prefix(a, m.volume_id))
                for m, a in rows]

    def owners_of_dirs(self, session, path_parts, names):
        # snapshots/<account id>/<volume id>/manifests/<snapshot uuid>.json.zst
        if path_parts[:1] != ["snapshots"] or len(path_parts) < 2:
            return {}
        if len(path_parts) == 2:
            ids = [int(n) for n in names if n.isdigit()]
            return {str(v.id): {"volumeid": v.uuid, "volumename": v.name} for v in session.scalars(
                select(Volume).where(Volume.id.in_(ids), Volume.account_id == _int(path_parts[1])))}
        if len(path_parts) == 4 and path_parts[3] == "manifests":
            by_uuid = {n.split(".", 1)[0]: n for n in names}
            return {by_uuid[s.uuid]: {"snapshotid": s.uuid, "snapshotname": s.name} for s in session.scalars(
                select(Snapshot).where(Snapshot.uuid.in_(by_uuid), Snapshot.volume_id == _int(path_parts[2])))}
        return {}


def _int(text: str) -> int:
    return int(text) if text.isdigit() else -1


class UploadedVolumeKind(RefTableKind):
    """Uploaded volumes waiting on an image store to be attached: their VolumeStoreRef (purpose
    upload) is the per-store row, as TemplateStoreRef is for templates."""

    name = "volume"
    param = "volumes"

    def _ref(self, session: Session, volume_id: int, store_id: int) -> VolumeStoreRef | None:
        return session.scalars(select(VolumeStoreRef).where(
            VolumeStoreRef.volume_id == volume_id, VolumeStoreRef.store_id == store_id,
            VolumeStoreRef.purpose == UPLOAD).with_for_update()).first()

    def ready_on_store(self, session, store_id, *, balance):
        rows = session.execute(select(Volume, VolumeStoreRef).join(VolumeStoreRef, VolumeStoreRef.volume_id == Volume.id)
                               .where(VolumeStoreRef.store_id == store_id, VolumeStoreRef.purpose == UPLOAD,
                                      VolumeStoreRef.state == S.Ready.value, VolumeStoreRef.install_path.is_not(None),
                                      Volume.removed.is_(None)).order_by(Volume.id)).all()
        return [StoredObject(self.name, v.id, v.uuid, v.name, ref.physical_size or ref.size or 0,
                             ref.install_path.rsplit("/", 1)[0]) for v, ref in rows]

    def unsettled_on_store(self, session, store_id):
        busy = (DownloadState.DOWNLOAD_IN_PROGRESS.value, DownloadState.UPLOAD_IN_PROGRESS.value)
        rows = session.execute(select(Volume.name, VolumeStoreRef.state, VolumeStoreRef.download_state)
                               .join(VolumeStoreRef, VolumeStoreRef.volume_id == Volume.id)
                               .where(VolumeStoreRef.store_id == store_id, VolumeStoreRef.purpose == UPLOAD)).all()
        settled = (S.Ready.value, S.Allocated.value, S.Destroyed.value, S.Failed.value)
        return [n for n, state, download in rows if state not in settled or download in busy]

    def claim(self, session, object_id, src_id, dst_id, job_id, now):
        volume = session.get(Volume, object_id)
        src, dst = self._ref(session, object_id, src_id), self._ref(session, object_id, dst_id)
        if volume is None or volume.removed is not None:
            return Claim("refused", reason="it was deleted")
        verdict = self._source_verdict(src, dst is not None and dst.state == S.Ready.value, job_id)
        if verdict is not None:
            return verdict
        others = session.scalar(select(VolumeStoreRef.id).where(
            VolumeStoreRef.volume_id == object_id, VolumeStoreRef.id != src.id,
            VolumeStoreRef.id != (dst.id if dst is not None else -1)).limit(1))
        if others is not None:  # an extract copy shares the volume's directory
            return Claim("refused", reason="an extract copy of it exists")
        if dst is not None and not (dst.job_id == job_id and dst.state == S.Creating.value):
            return Claim("refused", reason=f"the destination holds a copy of it that is {dst.state}")
        if src.state == S.Ready.value:
            src.state = OBJECT_IN_STORE.next_state(src.state, E.MigrateDataRequested)
            src.job_id, src.updated = job_id, now
        if dst is None:
            dst = VolumeStoreRef(volume_id=object_id, store_id=dst_id, zone_id=src.zone_id, purpose=UPLOAD,
                                 state=S.Allocated.value, download_state=DownloadState.DOWNLOAD_IN_PROGRESS.value,
                                 download_pct=0, created=now)
            session.add(dst)
            dst.state = OBJECT_IN_STORE.next_state(dst.state, E.CreateOnlyRequested)
        dst.job_id, dst.updated = job_id, now
        session.flush()
        return Claim("copy", main_key=src.install_path, checksum=src.checksum)

    def switch(self, session, object_id, src_id, dst_id, job_id, now):
        src, dst = self._ref(session, object_id, src_id), self._ref(session, object_id, dst_id)
        if src is None or src.job_id != job_id or src.state != S.Migrating.value or dst is None \
                or dst.job_id != job_id or dst.state != S.Creating.value:
            return False
        dst.state = OBJECT_IN_STORE.next_state(dst.state, E.OperationSucceeded)
        dst.download_state, dst.download_pct = DownloadState.DOWNLOADED.value, 100
        for column in ("install_path", "size", "physical_size", "checksum", "sha256", "url"):
            setattr(dst, column, getattr(src, column))
        dst.updated = now
        src.state, src.updated = OBJECT_IN_STORE.next_state(src.state, E.MigrationSucceeded), now
        return True

    def leftovers(self, session, job_id):
        rows = session.execute(select(VolumeStoreRef, Volume.account_id)
                               .join(Volume, Volume.id == VolumeStoreRef.volume_id)
                               .where(VolumeStoreRef.job_id == job_id, VolumeStoreRef.purpose == UPLOAD,
                                      VolumeStoreRef.state.in_((S.Migrating.value, S.Destroyed.value,
                                                                S.Creating.value)))).all()
        return [(r.volume_id, r.store_id, r.state, f"volumes/{a}/{r.volume_id}") for r, a in rows]

    def owners_of_dirs(self, session, path_parts, names):
        # volumes/<account id>/<volume id>[/file]
        if path_parts[:1] != ["volumes"] or len(path_parts) < 2:
            return {}
        ids = {n: path_parts[2] if len(path_parts) >= 3 else n for n in names}
        numeric = [int(v) for v in ids.values() if v.isdigit()]
        volumes = {v.id: v for v in session.scalars(select(Volume).where(
            Volume.id.in_(numeric), Volume.account_id == _int(path_parts[1])))}
        return {entry: {"volumeid": volumes[int(v)].uuid, "volumename": volumes[int(v)].name}
                for entry, v in ids.items() if v.isdigit() and int(v) in volumes}


object_kind(SnapshotChainKind())
object_kind(UploadedVolumeKind())
