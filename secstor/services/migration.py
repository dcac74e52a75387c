"""Migrating data objects between image stores (migrateSecondaryStorageData,
migrateResourceToAnotherSecondaryStorage), generic over the kinds of object a store holds.

**Object kinds.** Each kind (templates and ISOs now; snapshots and volumes plug in the same
way) says how to list a store's Ready objects with their size on disk and key prefix, and how
to switch an object's per-store row from one store to another. The mover knows nothing else
about them: it copies every file under the prefix.

**One move, crash-safe at every step** (each step is idempotent; a worker killed anywhere and
a new one resuming from the job's checkpoint continues or ends cleanly):

1. *claim* (one transaction): the destination row is created Allocated→Creating (it shows as
   "downloading", so deleteTemplate refuses meanwhile) and the source row goes
   Ready→Migrating, both stamped with the job's id;
2. *copy* (no transaction open): the destination prefix is emptied (what a dead attempt left),
   then every file is copied with ``copy_verified`` (the image against its stored checksum,
   the small side files against a hash of the source), published atomically;
3. *switch* (one transaction): destination → Ready, source → Destroyed (MigrationSucceeded);
4. the kind tidies the destination (``after_switch``: a snapshot deleted during the copy loses
   the manifest copied for it), the source files are deleted, then the source row.

Before the switch the object is readable on the source, after it on the destination, and
between 3 and 4 on both: never on none. A move that cannot finish (destination full,
checksum mismatch, store down) is undone: partial destination files deleted, its row removed,
the source back to Ready. A worker killed after 3 leaves a Destroyed source row stamped with
the job: the next attempt's claim answers "delete_source" and does 4.

**Cancelling** (cancelAsyncJob) stops the copies in flight at their next chunk and undoes
them; moves already switched are finished; then ``unwind`` settles whatever a dead attempt
left, and the job ends cancelled. Complete's read-only source stays read-only.
"""

from __future__ import annotations

import abc
import json
import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from secstor.db.models import AsyncJob, ImageStore, TemplateStoreRef, VMTemplate, WorkerHeartbeat
from secstor.domain import migration as plan_mod
from secstor.domain import templates as dt
from secstor.domain.errors import InvalidParameter, OperationFailed
from secstor.domain.states import OBJECT_IN_STORE, DownloadState, JobState, ObjectInStoreEvent, ObjectInStoreState
from secstor.movers.checksums import Checksum, MultiHasher, parse_checksum
from secstor.movers.transfer import TransferError, copy_verified
from secstor.services.capacity import measure_store, record_measurement
from secstor.stores.base import ObjectInfo, StoreDriver, StoreError

if TYPE_CHECKING:
    from secstor.jobs.handlers import JobContext
    from secstor.runtime import Runtime

log = logging.getLogger("secstor.migration")

DATA_HANDLER = "migration.data"  # migrateSecondaryStorageData
RESOURCES_HANDLER = "migration.resources"  # migrateResourceToAnotherSecondaryStorage
PLAN_HANDLER = "migration.plan"  # either command with dryrun=true: moves nothing
MOVING_HANDLERS = (DATA_HANDLER, RESOURCES_HANDLER)

POLICIES = {"complete": "COMPLETE", "balance": "BALANCE"}
IN_PROGRESS = "A migrate job is in progress, please try again later..."
NOT_READY = ("Complete migration failed as there are data objects which are not Ready - i.e, they may be in "
             "Migrating, creating, copying, etc. states")
NOT_ALL_MIGRATED = "Not all data objects were migrated"

# Used for the dry run's estimate until a copy has been measured.
DEFAULT_BYTES_PER_SECOND = 100 * 1000 * 1000
# Weight of the newest copy in a worker's running throughput average.
THROUGHPUT_WEIGHT = 0.3
# Files of one move copied at once: a snapshot chain is thousands of 256 KiB chunks, each a
# few round trips, so one after another they leave the link idle.  Small, because each copy
# may hold up to (max_concurrency + 1) S3 parts in memory and sessions multiply it.
FILE_COPIES_PER_MOVE = 4
# How often the job looks for a cancellation request while copies run.
CANCEL_POLL_SECONDS = 1.0

S, E = ObjectInStoreState, ObjectInStoreEvent


# ---- object kinds -----------------------------------------------------------------------------

@dataclass(frozen=True)
class StoredObject:
    """One object Ready on one store, as the mover sees it."""

    kind: str
    id: int
    uuid: str
    name: str
    size_on_disk: int
    prefix: str  # every file of the object lives under "<prefix>/"


@dataclass(frozen=True)
class Claim:
    """What a move still has to do, decided in the claim transaction."""

    step: str  # "copy" | "switch" (destination already Ready) | "delete_source" | "done" | "refused"
    main_key: str | None = None
    checksum: str | None = None
    reason: str | None = None


class ObjectKind(abc.ABC):
    name: str  # what the planner's MovableObject.kind and the API's "kind" field say
    param: str  # migrateResourceToAnotherSecondaryStorage's parameter naming objects of this kind

    @abc.abstractmethod
    def ready_on_store(self, session: Session, store_id: int, *, balance: bool) -> list[StoredObject]:
        """The objects Ready on the store that may move (``balance``: for a Balance run)."""

    @abc.abstractmethod
    def unsettled_on_store(self, session: Session, store_id: int) -> list[str]:
        """Names of the store's objects being created, copied or migrated."""

    @abc.abstractmethod
    def claim(self, session: Session, object_id: int, src_id: int, dst_id: int, job_id: int, now) -> Claim: ...

    @abc.abstractmethod
    def switch(self, session: Session, object_id: int, src_id: int, dst_id: int, job_id: int, now) -> bool:
        """Destination Ready and source Destroyed, if both are still this job's; else False."""

    @abc.abstractmethod
    def forget_source(self, session: Session, object_id: int, src_id: int, job_id: int) -> None: ...

    @abc.abstractmethod
    def release(self, session: Session, object_id: int, src_id: int, dst_id: int, job_id: int, now) -> bool:
        """Undo a claim: source back to Ready, this job's destination row removed. True when the
        destination files are this job's to delete."""

    @abc.abstractmethod
    def leftovers(self, session: Session, job_id: int) -> list[tuple[int, int, str, str]]:
        """(object id, store id, state, key prefix) of the rows a failed job left mid-move."""

    @abc.abstractmethod
    def owners_of_dirs(self, session: Session, path_parts: list[str], names: list[str]) -> dict[str, dict]:
        """For listImageStoreObjects: entry name -> response fields of the object it belongs to."""

    def by_uuid(self, session: Session, store_id: int) -> dict[str, StoredObject]:
        """The objects migrateResourceToAnotherSecondaryStorage may name, by the UUID it names."""
        return {o.uuid: o for o in self.ready_on_store(session, store_id, balance=False)}

    def measure(self, runtime: "Runtime", store_id: int) -> None:
        """Before planning, with no transaction open: measure what sizes need store I/O."""

    def copy_object(self, src: StoreDriver, dst: StoreDriver, key: str, on_bytes: Callable[[int], None]
                    ) -> int | None:
        """Copy and verify one file the kind knows how to check itself, returning the bytes
        copied; None: the generic way."""
        return None

    def after_switch(self, runtime: "Runtime", object_id: int, job_id: int) -> None:
        """After the switch committed, before the source is deleted (again if a crash cut in):
        undo at the destination what changed at the source while the copy ran."""


KINDS: dict[str, ObjectKind] = {}


def object_kind(kind: ObjectKind) -> ObjectKind:
    KINDS[kind.name] = kind
    return kind


class RefTableKind(ObjectKind):
    """A kind whose copies are rows of a per-store ref table (TemplateStoreRef, VolumeStoreRef)
    going through the OBJECT_IN_STORE machine: the claim checks on the source copy, forgetting the
    source and releasing a failed move are the same for all of them."""

    @abc.abstractmethod
    def _ref(self, session: Session, object_id: int, store_id: int) -> Any:
        """The object's copy on a store, locked for update, or None."""

    @staticmethod
    def _source_verdict(src: Any, dst_ready: bool, job_id: int) -> Claim | None:
        """The claim's answer decided by the source copy alone, or None to go on claiming."""
        if src is None:
            return Claim("done") if dst_ready else Claim("refused", reason="it is no longer on the source store")
        ours = src.job_id == job_id
        if src.state == S.Destroyed.value and ours:
            return Claim("delete_source")
        if not (src.state == S.Ready.value or (src.state == S.Migrating.value and ours)):
            return Claim("refused", reason=f"its copy on the source store is {src.state}")
        return None

    def forget_source(self, session, object_id, src_id, job_id):
        src = self._ref(session, object_id, src_id)
        if src is not None and src.job_id == job_id and src.state == S.Destroyed.value:
            session.delete(src)

    def release(self, session, object_id, src_id, dst_id, job_id, now):
        src, dst = self._ref(session, object_id, src_id), self._ref(session, object_id, dst_id)
        if src is not None and src.job_id == job_id and src.state == S.Migrating.value:
            src.state, src.updated = OBJECT_IN_STORE.next_state(src.state, E.OperationFailed), now
        if dst is not None and dst.job_id == job_id and dst.state == S.Creating.value:
            session.delete(dst)
            return True
        return False


class TemplateKind(RefTableKind):
    """Templates and ISOs (one table): their per-store rows are TemplateStoreRef."""

    name = "template"
    param = "templates"

    def _ref(self, session: Session, template_id: int, store_id: int) -> TemplateStoreRef | None:
        return session.scalars(select(TemplateStoreRef).where(TemplateStoreRef.template_id == template_id,
                                                              TemplateStoreRef.store_id == store_id)
                               .with_for_update()).first()

    def ready_on_store(self, session, store_id, *, balance):
        rows = session.execute(
            select(VMTemplate, TemplateStoreRef).join(TemplateStoreRef, TemplateStoreRef.template_id == VMTemplate.id)
            .where(TemplateStoreRef.store_id == store_id, TemplateStoreRef.state == S.Ready.value,
                   TemplateStoreRef.install_path.is_not(None), VMTemplate.removed.is_(None))
            .order_by(VMTemplate.id)).all()
        objects = []
        for t, ref in rows:
            # A Balance run leaves the copies every store keeps alone: the template sync would
            # only copy them back.
            if balance and dt.replicated(is_public=t.is_public, featured=t.featured, template_type=t.template_type):
                continue
            objects.append(StoredObject(self.name, t.id, t.uuid, t.name, ref.physical_size or ref.size or 0,
                                        dt.install_dir(t.account_id, t.id)))
        return objects

    def unsettled_on_store(self, session, store_id):
        settled = (S.Ready.value, S.Allocated.value, S.Destroying.value, S.Destroyed.value, S.Failed.value)
        busy = (DownloadState.DOWNLOAD_IN_PROGRESS.value, DownloadState.UPLOAD_IN_PROGRESS.value)
        rows = session.execute(
            select(VMTemplate.name, TemplateStoreRef.state, TemplateStoreRef.download_state)
            .join(TemplateStoreRef, TemplateStoreRef.template_id == VMTemplate.id)
            .where(TemplateStoreRef.store_id == store_id)).all()
        return [name for name, state, download in rows if state not in settled or download in busy]

    def claim(self, session, object_id, src_id, dst_id, job_id, now):
        template = session.get(VMTemplate, object_id)
        src, dst = self._ref(session, object_id, src_id), self._ref(session, object_id, dst_id)
        dst_ready = dst is not None and dst.state == S.Ready.value
        if template is None or template.removed is not None:
            return Claim("refused", reason="it was deleted")
        verdict = self._source_verdict(src, dst_ready, job_id)
        if verdict is not None:
            return verdict
        if dst is not None and not dst_ready and not (dst.job_id == job_id and dst.state == S.Creating.value):
            return Claim("refused", reason=f"the destination holds a copy of it that is {dst.state} "
                                           f"({dst.download_state})")
        if src.state == S.Ready.value:
            src.state = OBJECT_IN_STORE.next_state(src.state, E.MigrateDataRequested)
            src.job_id, src.updated = job_id, now
        if dst is None:
            dst = TemplateStoreRef(template_id=object_id, store_id=dst_id, zone_id=session.get(ImageStore, dst_id).zone_id,
                                   state=S.Allocated.value, created=now)
            session.add(dst)
            dst.state = OBJECT_IN_STORE.next_state(dst.state, E.CreateOnlyRequested)
        if not dst_ready:
            dst.download_state, dst.download_pct, dst.error_text = DownloadState.DOWNLOAD_IN_PROGRESS.value, 0, None
            dst.job_id, dst.updated = job_id, now
        session.flush()
        return Claim("switch" if dst_ready else "copy", main_key=src.install_path, checksum=src.checksum)

    def switch(self, session, object_id, src_id, dst_id, job_id, now):
        src, dst = self._ref(session, object_id, src_id), self._ref(session, object_id, dst_id)
        if src is None or src.job_id != job_id or src.state != S.Migrating.value or dst is None:
            return False
        if dst.state != S.Ready.value:
            if dst.job_id != job_id or dst.state != S.Creating.value:
                return False
            dst.state = OBJECT_IN_STORE.next_state(dst.state, E.OperationSucceeded)
            dst.download_state, dst.download_pct = DownloadState.DOWNLOADED.value, 100
            dst.install_path, dst.size, dst.physical_size = src.install_path, src.size, src.physical_size
            dst.checksum, dst.updated = src.checksum, now
        src.state = OBJECT_IN_STORE.next_state(src.state, E.MigrationSucceeded)
        src.updated = now
        return True

    def leftovers(self, session, job_id):
        rows = session.execute(
            select(TemplateStoreRef, VMTemplate.account_id).join(VMTemplate, VMTemplate.id == TemplateStoreRef.template_id)
            .where(TemplateStoreRef.job_id == job_id,
                   TemplateStoreRef.state.in_((S.Migrating.value, S.Destroyed.value, S.Creating.value)))).all()
        return [(r.template_id, r.store_id, r.state, dt.install_dir(account_id, r.template_id)) for r, account_id in rows]

    def owners_of_dirs(self, session, path_parts, names):
        # template/tmpl/<account id>/<template id>[/file]: the template id is the 4th component,
        # either in the path listed or as the entry's own name.
        if path_parts[:2] != ["template", "tmpl"] or len(path_parts) < 3:
            return {}
        ids = {n: path_parts[3] if len(path_parts) >= 4 else n for n in names}
        numeric = {int(v) for v in ids.values() if v.isdigit()}
        if not numeric:
            return {}
        templates = {t.id: t for t in session.scalars(select(VMTemplate).where(VMTemplate.id.in_(numeric)))}
        out = {}
        for entry, tid in ids.items():
            t = templates.get(int(tid)) if tid.isdigit() else None
            if t is not None and str(t.account_id) == path_parts[2]:
                out[entry] = {"templateid": t.uuid, "templatename": t.name, "format": t.format}
        return out


object_kind(TemplateKind())


# ---- validation and planning ------------------------------------------------------------------

def parse_policy(text: str | None) -> str:
    policy = POLICIES.get((text or "complete").strip().lower())
    if policy is None:
        raise OperationFailed("Not a valid migration policy")
    return policy


def store_state(store: ImageStore) -> plan_mod.StoreState:
    return plan_mod.StoreState(store.id, store.total_bytes, store.used_bytes, readonly=store.readonly,
                               role=store.role, zone_id=store.zone_id, name=store.name)


def source_store(session: Session, uuid: str, param: str = "srcpool") -> ImageStore:
    store = session.scalars(select(ImageStore).where(ImageStore.uuid == uuid, ImageStore.removed.is_(None))).first()
    if store is None:
        raise InvalidParameter(f"Unable to find image store with specified {param} {uuid}", param)
    if store.role != "Image":
        raise InvalidParameter(f"Image store {store.name} has role {store.role}: only Image stores can be migrated "
                               f"from", param)
    return store


def valid_destinations(session: Session, src: ImageStore, uuids: list[str]) -> list[ImageStore]:
    """The usable destinations (CloudStack skips the others silently; we log why); none → 431."""
    rows = {s.uuid: s for s in session.scalars(select(ImageStore).where(ImageStore.uuid.in_(uuids),
                                                                        ImageStore.removed.is_(None)))}
    requested = {u: (store_state(rows[u]) if u in rows else None) for u in uuids}
    valid, skipped = plan_mod.validate_destinations(store_state(src), requested)
    for requested_id, reason in skipped:
        log.info("migration from image store %s: destination %s skipped: %s", src.uuid, requested_id, reason)
    if not valid:
        raise InvalidParameter(plan_mod.NO_VALID_DESTINATION, "destpools")
    by_id = {s.id: s for s in rows.values()}
    return [by_id[v.id] for v in valid]


# What migrateResourceToAnotherSecondaryStorage calls each kind's objects in its errors.
_WHAT = {"templates": "template", "snapshots": "snapshot", "volumes": "volume"}


def targeted_objects(session: Session, src: ImageStore, requested: dict[str, list[str]]
                     ) -> dict[tuple[str, int], StoredObject]:
    """The named objects (parameter name -> UUIDs), each Ready on ``src``; 431 naming the
    parameter for any other. A parameter of a kind this installation does not hold yet
    (snapshots, volumes) names objects that cannot exist."""
    kinds = {k.param: k for k in KINDS.values()}
    out: dict[tuple[str, int], StoredObject] = {}
    for param, uuids in requested.items():
        kind = kinds.get(param)
        ready = kind.by_uuid(session, src.id) if kind else {}
        for uuid in uuids:
            obj = ready.get(uuid)
            if obj is None:
                raise InvalidParameter(f"Unable to find a Ready {_WHAT.get(param, param)} with id {uuid} on image "
                                       f"store {src.name}", param)
            out[(obj.kind, obj.id)] = obj
    return out


def refresh_capacities(runtime: "Runtime", store_ids: list[int]) -> None:
    """A fresh capacity scan of the stores taking part (I/O: no transaction open)."""
    for store_id in store_ids:
        with runtime.session() as s:
            store = s.get(ImageStore, store_id)
            s.expunge(store)
        m = measure_store(runtime, store)
        with runtime.session() as s:
            record_measurement(s, runtime, store_id, m)
        for kind in KINDS.values():
            kind.measure(runtime, store_id)


def measured_throughput(session: Session) -> int | None:
    """The copy throughput the most recently active worker measured (bytes/s), or None."""
    return session.scalar(select(WorkerHeartbeat.bytes_per_second).where(WorkerHeartbeat.bytes_per_second > 0)
                          .order_by(WorkerHeartbeat.last_seen.desc()).limit(1))


@dataclass
class MovePlan:
    """A plan the executor can run and checkpoint: each move names its object, kind and stores."""

    policy: str
    moves: list[dict[str, Any]]
    plan: plan_mod.Plan
    stores: dict[int, ImageStore]
    objects: dict[tuple[str, int], StoredObject]

    def to_checkpoint(self) -> dict[str, Any]:
        return {"moves": self.moves, "message": self.plan.message, "success": self.plan.success,
                "notmoved": [self._not_moved(o, reason) for o, reason in self.plan.not_moved]}

    def _not_moved(self, obj: plan_mod.MovableObject, reason: str) -> dict[str, Any]:
        kind, object_id = obj.kind, obj.id
        stored = self.objects[(kind, object_id)]
        return {"kind": kind, "id": stored.uuid, "name": stored.name, "reason": reason}


def _movables(session: Session, src_id: int, *, balance: bool) -> dict[tuple[str, int], StoredObject]:
    return {(k.name, o.id): o for k in KINDS.values() for o in k.ready_on_store(session, src_id, balance=balance)}


def make_plan(session: Session, runtime: "Runtime", policy: str, src: ImageStore, dests: list[ImageStore],
              only: dict[tuple[str, int], StoredObject] | None = None) -> MovePlan:
    """Plan with the stores' current capacities (the caller scanned them just before).
    ``only``: a targeted move of these objects to the one destination, with no policy."""
    stores = {s.id: s for s in (src, *dests)}
    if only is not None:
        objects = only
        dst = dests[0]
        moves = [plan_mod.Move(o.id, o.kind, src.id, dst.id, o.size_on_disk) for o in objects.values()]
        states = [store_state(src), store_state(dst)]
        measured = all(s.measured for s in states)
        before = plan_mod.imbalance(states) if measured else 0.0
        plan = plan_mod.Plan(moves, before, before, plan_mod.MIGRATION_COMPLETED, True)
        if measured:
            free = {s.id: s.free_bytes for s in states}
            free[src.id] += plan.bytes_moved
            free[dst.id] -= plan.bytes_moved
            plan.imbalance_after = plan_mod.imbalance(
                [plan_mod.StoreState(s.id, s.total_bytes, s.total_bytes - free[s.id]) for s in states])
    else:
        objects = _movables(session, src.id, balance=policy == "BALANCE")
        movable = [plan_mod.MovableObject(o.id, o.kind, o.size_on_disk, src.id) for o in objects.values()]
        src_state, dest_states = store_state(src), [store_state(d) for d in dests]
        if not src_state.measured:
            raise OperationFailed("Stats Collector hasn't yet collected metrics from the Image store, kindly try "
                                  "again later")
        capacity_threshold = float(runtime.settings.get("secondary.storage.capacity.threshold"))
        if policy == "COMPLETE":
            plan = plan_mod.plan_complete(src_state, dest_states, movable, capacity_threshold)
        else:
            plan = plan_mod.plan_balance(src_state, dest_states, movable,
                                         float(runtime.settings.get("image.store.imbalance.threshold")),
                                         capacity_threshold)
    moves = [{"kind": m.kind, "id": m.object_id, "from": m.from_store, "to": m.to_store, "bytes": m.bytes}
             for m in plan.moves]
    return MovePlan(policy, moves, plan, stores, objects)


def plan_response(session: Session, mp: MovePlan) -> dict[str, Any]:
    """The dry run's answer: what would move where, and how long it would take."""
    throughput = measured_throughput(session)
    rate = throughput or DEFAULT_BYTES_PER_SECOND
    stores = mp.stores
    return {
        "dryrun": True,
        "migrationtype": mp.policy,
        "message": mp.plan.message,
        "success": mp.plan.success,
        "imbalancebefore": round(mp.plan.imbalance_before, 6),
        "imbalanceafter": round(mp.plan.imbalance_after, 6),
        "objectstotal": len(mp.moves),
        "bytestotal": mp.plan.bytes_moved,
        "throughputbytespersecond": rate,
        "throughputmeasured": throughput is not None,
        "estimatedseconds": round(mp.plan.estimate_seconds(rate), 3),
        "moves": [{"kind": m["kind"], "id": mp.objects[(m["kind"], m["id"])].uuid,
                   "name": mp.objects[(m["kind"], m["id"])].name, "from": stores[m["from"]].uuid,
                   "fromname": stores[m["from"]].name, "to": stores[m["to"]].uuid, "toname": stores[m["to"]].name,
                   "bytes": m["bytes"]} for m in mp.moves],
        "notmoved": mp.to_checkpoint()["notmoved"],
    }


# ---- one at a time ----------------------------------------------------------------------------

def earlier_migration_running(session: Session, job_id: int) -> bool:
    """Whether an older moving migration job is queued or running: the oldest one goes on, the
    others answer IN_PROGRESS (deciding by age means two jobs can never refuse each other)."""
    return session.scalar(select(AsyncJob.id).where(
        AsyncJob.handler.in_(MOVING_HANDLERS), AsyncJob.id < job_id,
        AsyncJob.state.in_((JobState.pending.value, JobState.running.value))).limit(1)) is not None


# ---- moving one object ------------------------------------------------------------------------

@dataclass
class Outcome:
    moved: bool
    reason: str | None = None
    copied_bytes: int = 0
    seconds: float = 0.0
    cancelled: bool = False  # undone because the job was cancelled: not a result of its own
    untidy: bool = False  # moved, but its source copy could not be removed yet


def _source_checksum(driver: StoreDriver, key: str) -> Checksum:
    """What a side file without a recorded checksum (template.properties) is verified against."""
    hasher = MultiHasher(["SHA-256"])
    for chunk in driver.open_reader(key):
        hasher.update(chunk)
    return Checksum("SHA-256", hasher.hexdigests()["SHA-256"])


class Mover:
    """Runs the moves of one job attempt; ``on_bytes(n)`` reports copied bytes as they go (and
    may raise ``Cancelled`` to stop the copies in flight: their moves are undone)."""

    def __init__(self, runtime: "Runtime", job_id: int, stores: dict[int, ImageStore],
                 on_bytes: Callable[[int], None], lost: Callable[[], bool], job_log):
        self.runtime, self.job_id, self.stores = runtime, job_id, stores
        self.on_bytes, self.lost, self.log = on_bytes, lost, job_log

    def _driver(self, store_id: int) -> StoreDriver:
        return self.runtime.drivers.for_store(self.stores[store_id])

    def _tx(self, fn: Callable[[Session], Any]) -> Any:
        with self.runtime.session() as s:
            return fn(s)

    def move(self, move: dict[str, Any], name: str) -> Outcome:
        kind = KINDS[move["kind"]]
        oid, src_id, dst_id = move["id"], move["from"], move["to"]
        what = f"{kind.name} {name} ({move.get('uuid', oid)})"
        claim = self._tx(lambda s: kind.claim(s, oid, src_id, dst_id, self.job_id, self.runtime.now()))
        if claim.step == "refused":
            self.log.info("%s not moved: %s", what, claim.reason)
            return Outcome(False, claim.reason)
        if claim.step == "done":
            return Outcome(True)
        src, dst = self._driver(src_id), self._driver(dst_id)
        prefix = move["prefix"] + "/"
        started, copied = time.monotonic(), 0
        if claim.step == "copy":
            try:
                copied = self._copy(kind, src, dst, prefix, claim)
            except Cancelled:
                self._undo(kind, oid, src_id, dst_id, dst, prefix)
                self.log.info("%s not moved: the migration was cancelled during its copy", what)
                return Outcome(False, CANCELLED_REASON, cancelled=True)
            except (TransferError, StoreError, OSError) as exc:
                self._undo(kind, oid, src_id, dst_id, dst, prefix)
                reason = f"copy to image store {self.stores[dst_id].name} failed: {exc}"
                self.log.warning("%s not moved: %s", what, reason)
                return Outcome(False, reason)
        if claim.step in ("copy", "switch"):
            if self.lost():  # another worker owns the job now: it decides this move
                raise _Stop()
            if not self._switch(kind, oid, src_id, dst_id):
                self._undo(kind, oid, src_id, dst_id, dst, prefix)
                return Outcome(False, "it changed while it was being copied")
        removed = self._finish(kind, oid, src_id, prefix)
        self.log.info("%s moved from image store %s to %s (%d bytes copied, %s)", what, self.stores[src_id].name,
                      self.stores[dst_id].name, copied,
                      "source copy left for the job's end to remove" if removed is None
                      else f"{removed} source files removed")
        return Outcome(True, copied_bytes=copied, seconds=time.monotonic() - started, untidy=removed is None)

    def _switch(self, kind: ObjectKind, oid: int, src_id: int, dst_id: int) -> bool:
        """The one step that moves the object: committed, it is the destination's."""
        return self._tx(lambda s: kind.switch(s, oid, src_id, dst_id, self.job_id, self.runtime.now()))

    def _finish(self, kind: ObjectKind, oid: int, src_id: int, prefix: str) -> int | None:
        """After the switch (also when a later attempt or ``unwind`` finds it switched): tidy the
        destination, delete the source's files, forget the source. Returns the number of source
        files removed, or None when the source could not be reached: its row stays Destroyed for
        ``unwind`` to try again, the object itself is safely on the destination."""
        try:
            kind.after_switch(self.runtime, oid, self.job_id)
            removed = self._driver(src_id).delete_prefix(prefix)
        except (StoreError, OSError) as exc:
            self.log.warning("the move of %s from image store %s is not tidied up yet: %s", prefix,
                             self.stores[src_id].name, exc)
            return None
        self._tx(lambda s: kind.forget_source(s, oid, src_id, self.job_id))
        return removed

    def _copy(self, kind: ObjectKind, src: StoreDriver, dst: StoreDriver, prefix: str, claim: Claim) -> int:
        dst.delete_prefix(prefix)  # the destination row is this job's: anything there is a dead attempt's
        files = list(src.list(prefix))
        if len(files) <= 1:
            return sum(self._copy_file(kind, src, dst, info, claim) for info in files)
        with ThreadPoolExecutor(min(FILE_COPIES_PER_MOVE, len(files)), thread_name_prefix="migrate-file") as pool:
            futures = [pool.submit(self._copy_file, kind, src, dst, info, claim) for info in files]
            try:
                return sum(f.result() for f in futures)
            except BaseException:
                for f in futures:
                    f.cancel()  # the move has failed: copy nothing more (the pool waits for running ones)
                raise

    def _copy_file(self, kind: ObjectKind, src: StoreDriver, dst: StoreDriver, info: ObjectInfo, claim: Claim) -> int:
        copied = kind.copy_object(src, dst, info.key, self.on_bytes)
        if copied is not None:
            return copied
        if info.key == claim.main_key and claim.checksum:
            expected = parse_checksum(claim.checksum)
        else:
            expected = _source_checksum(src, info.key)
        done = [0]

        def progress(n: int) -> None:
            self.on_bytes(n - done[0])
            done[0] = n

        copy_verified(src, info.key, dst, info.key, expected=expected, progress=progress)
        return info.size

    def _undo(self, kind: ObjectKind, oid: int, src_id: int, dst_id: int, dst: StoreDriver, prefix: str) -> None:
        if self._tx(lambda s: kind.release(s, oid, src_id, dst_id, self.job_id, self.runtime.now())):
            try:
                dst.delete_prefix(prefix)
            except (StoreError, OSError) as exc:
                self.log.warning("partial copy under %s on image store %s not removed: %s", prefix,
                                 self.stores[dst_id].name, exc)


class _Stop(Exception):
    """This worker lost the job: stop without touching anything more."""


class Cancelled(Exception):
    """The job was cancelled: a copy in flight stops and its move is undone."""


CANCELLED_REASON = "the migration was cancelled"


def unwind(runtime: "Runtime", job_id: int) -> None:
    """Settle every move the job left half-way, so each object is Ready on exactly one store:
    switched ones are finished (the source's files removed), the others undone (the partial
    destination copy removed, the source back to Ready). Run when a moving job has failed for
    good, was cancelled, or has ended (a source that could not be cleaned gets another try).
    Each move is settled on its own: a store that fails leaves the others settled."""
    with runtime.session() as s:
        rows = [(kind, *row) for kind in KINDS.values() for row in kind.leftovers(s, job_id)]
        stores = {st.id: st for st in s.scalars(select(ImageStore))}
        s.expunge_all()
    mover = Mover(runtime, job_id, stores, lambda n: None, lambda: False, log)
    unsettled = 0
    for kind, oid, store_id, state, prefix in rows:
        prefix += "/"
        try:
            if state == S.Destroyed.value:  # switched: only the source's files are left to remove
                unsettled += mover._finish(kind, oid, store_id, prefix) is None
            elif state == S.Creating.value:
                mover._tx(lambda s: _drop_creating(s, kind, oid, store_id, job_id))
                runtime.drivers.for_store(stores[store_id]).delete_prefix(prefix)
            else:  # Migrating source of an unfinished move
                mover._tx(lambda s: kind.release(s, oid, store_id, -1, job_id, runtime.now()))
        except (StoreError, OSError) as exc:
            unsettled += 1
            log.warning("migration job %s: %s under %s on image store %s not cleaned up: %s", job_id, kind.name,
                        prefix, stores[store_id].name, exc)
    if rows:
        log.info("migration job %s: %d half-done moves settled, %d left", job_id, len(rows) - unsettled, unsettled)


def _drop_creating(session: Session, kind: ObjectKind, oid: int, store_id: int, job_id: int) -> None:
    kind.release(session, oid, -1, store_id, job_id, None)


# ---- the job ----------------------------------------------------------------------------------

@dataclass
class _Counters:
    objects_total: int
    bytes_total: int
    objects_done: int = 0
    bytes_done: int = 0
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def result_body(policy: str, message: str, success: bool, not_moved: list[dict] | None = None) -> dict[str, Any]:
    body = {"message": message, "migrationtype": policy, "success": success}
    if not_moved:
        body["notmigrated"] = not_moved
    return body


def _record_throughput(runtime: "Runtime", worker_id: str, outcome: Outcome) -> None:
    if outcome.copied_bytes < (1 << 20) or outcome.seconds <= 0:
        return  # too small to say anything about throughput
    rate = outcome.copied_bytes / outcome.seconds
    with runtime.session() as s:
        row = s.get(WorkerHeartbeat, worker_id)
        if row is not None:
            old = row.bytes_per_second
            row.bytes_per_second = int(rate if not old else old + THROUGHPUT_WEIGHT * (rate - old))


def run_moves(jctx: "JobContext", policy: str, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Execute (or resume) a checkpointed plan with up to ``secstorage.max.migrate.sessions``
    copies at once; returns the job result body."""
    runtime = jctx.runtime
    moves = checkpoint["moves"]
    finished: dict[str, Any] = dict(checkpoint.get("finished", {}))  # move index -> None (moved) | reason
    with runtime.session() as s:
        stores = {st.id: st for st in s.scalars(select(ImageStore).where(ImageStore.id.in_(
            {m["from"] for m in moves} | {m["to"] for m in moves})))}
        s.expunge_all()
    counters = _Counters(len(moves), sum(m["bytes"] for m in moves))
    for index, m in enumerate(moves):
        if str(index) in finished:
            counters.objects_done += 1
            counters.bytes_done += m["bytes"]

    def report() -> None:
        with counters.lock:
            done, total = counters.bytes_done + counters.in_flight, counters.bytes_total
            objs = counters.objects_done
        pct = min(99, int(100 * (done / total if total else objs / max(counters.objects_total, 1))))
        jctx.progress(pct, objectsdone=objs, objectstotal=counters.objects_total, bytesdone=min(done, total),
                      bytestotal=total)

    cancelling = threading.Event()  # set once cancellation is seen: copies in flight stop

    def on_bytes(n: int) -> None:
        # (a lost lease is not a cancellation: the new owner decides the moves; report() stops us)
        if cancelling.is_set() or (jctx.cancelled() and not jctx.lost):
            cancelling.set()
            raise Cancelled()
        with counters.lock:
            counters.in_flight += n
        report()

    mover = Mover(runtime, jctx.job_id, stores, on_bytes, lambda: jctx.lost, jctx.log)
    sessions = int(runtime.settings.get("secstorage.max.migrate.sessions"))
    pending = [i for i in range(len(moves)) if str(i) not in finished]
    report()
    with ThreadPoolExecutor(max_workers=sessions, thread_name_prefix=f"migrate-{jctx.job_uuid[:8]}") as pool:
        running: dict = {}
        stopping = untidy = False
        while True:
            # (cancelled() is also true once the lease is lost; a cancellation that comes when
            # every move is done changes nothing)
            if not stopping and (cancelling.is_set() or ((pending or running) and jctx.cancelled())):
                stopping = True
                if not jctx.lost:
                    cancelling.set()
            while pending and len(running) < sessions and not stopping:
                index = pending.pop(0)
                running[pool.submit(mover.move, moves[index], moves[index]["name"])] = index
            if not running:
                break
            done, _ = wait(running, timeout=CANCEL_POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                index = running.pop(future)
                try:
                    outcome = future.result()
                except _Stop:
                    stopping = True
                    continue
                if outcome.cancelled:
                    continue
                untidy |= outcome.untidy
                with counters.lock:
                    counters.objects_done += 1
                    counters.bytes_done += moves[index]["bytes"]
                    counters.in_flight = max(0, counters.in_flight - outcome.copied_bytes)
                finished[str(index)] = None if outcome.moved else outcome.reason
                _record_throughput(runtime, jctx.lease.owner, outcome)
                jctx.save_checkpoint({**checkpoint, "finished": finished})
                report()
    if stopping:
        if not jctx.lost:
            # Cancelled: what this attempt or a dead one left half-way is settled now, under
            # the lease (no failure hook runs for a cancelled job).
            unwind(runtime, jctx.job_id)
        jctx.raise_if_cancelled()  # LeaseLost instead when another worker owns the job
    if untidy and not jctx.lost:
        unwind(runtime, jctx.job_id)  # another try at the source copies that could not be removed
    jctx.flush_progress()
    moved = sum(1 for v in finished.values() if v is None)
    failures = [{"kind": moves[int(i)]["kind"], "id": moves[int(i)]["uuid"], "name": moves[int(i)]["name"],
                 "reason": reason} for i, reason in sorted(finished.items(), key=lambda kv: int(kv[0]))
                if reason is not None]
    not_moved = checkpoint.get("notmoved", []) + failures
    success = checkpoint["success"] and not failures
    base = checkpoint["message"]
    if failures and checkpoint["success"]:
        base = NOT_ALL_MIGRATED + ": " + "; ".join(f"{f['name']} ({f['reason']})" for f in failures)
    jctx.progress(100, objectsdone=counters.objects_total, objectstotal=counters.objects_total,
                  bytesdone=counters.bytes_total, bytestotal=counters.bytes_total)
    return result_body(policy, f"{base}. successful migrations: {moved}", success, not_moved)


def checkpoint_of(mp: MovePlan) -> dict[str, Any]:
    """The plan as the job keeps it: enough to resume on any worker without planning again."""
    cp = mp.to_checkpoint()
    for m in cp["moves"]:
        obj = mp.objects[(m["kind"], m["id"])]
        m.update(uuid=obj.uuid, name=obj.name, prefix=obj.prefix)
    return cp


def dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True)


# The other kinds register themselves; they build on the classes above.
from secstor.services import migration_kinds  # noqa: E402,F401
