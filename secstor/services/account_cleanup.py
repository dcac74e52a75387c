"""What a deleted account owned goes with it (CloudStack's account clean-up).

deleteAccount stops the account's keys and sessions at once (services/accounts.py) and queues
one clean-up job that removes, in this order, its instances (stopped, destroyed and expunged,
with their ROOT volumes), its snapshots, its remaining volumes, and its templates and ISOs
(every copy on every store). Each step uses the same service code as the matching delete
command, so nothing is removed differently from how a user would remove it.

The job is idempotent: a rerun (after a crash, or a retry) skips what is already gone. An
object that is busy (a snapshot still backing up, a template still downloading, an instance
starting) makes the job retry later instead of pulling the rug from under the running work.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from secstor.db.models import Snapshot, TemplateStoreRef, VirtualMachine, VMTemplate, Volume
from secstor.domain.states import DownloadState, SnapshotState
from secstor.domain.volumes import VmEvent, VmState, VolumeEvent, VolumeState
from secstor.jobs.handlers import RetryableJobError
from secstor.services import instances as inst
from secstor.services import snapshots as snaps
from secstor.services import templates as tsvc
from secstor.services import volumes as vols

if TYPE_CHECKING:
    from secstor.runtime import Runtime

log = logging.getLogger("secstor.accounts.cleanup")

CLEANUP_HANDLER = "account.cleanup"

# States in which another job is still working on the object: wait for it to end.
_BUSY_VM = (VmState.Starting.value, VmState.Expunging.value)
_BUSY_SNAPSHOT = (SnapshotState.Allocated.value, SnapshotState.Creating.value, SnapshotState.CreatedOnPrimary.value,
                  SnapshotState.BackingUp.value, SnapshotState.Copying.value)
_BUSY_DOWNLOAD = (DownloadState.DOWNLOAD_IN_PROGRESS.value, DownloadState.UPLOAD_IN_PROGRESS.value)


@dataclass
class CleanupCounts:
    instances: int = 0
    snapshots: int = 0
    volumes: int = 0
    templates: int = 0


def clean_up_account(runtime: "Runtime", account_id: int, job_log) -> CleanupCounts:
    counts = CleanupCounts()
    busy: list[str] = []
    _remove_instances(runtime, account_id, job_log, counts, busy)
    _remove_snapshots(runtime, account_id, job_log, counts, busy)
    _remove_volumes(runtime, account_id, counts, busy)
    _remove_templates(runtime, account_id, job_log, counts, busy)
    if busy:
        raise RetryableJobError(f"account clean-up waits for work in progress on {', '.join(busy[:5])}")
    job_log.info("account %s cleaned up: %s", account_id, asdict(counts))
    return counts


def _remove_instances(runtime: "Runtime", account_id: int, job_log, counts: CleanupCounts, busy: list[str]) -> None:
    with runtime.session() as s:
        vm_ids = list(s.scalars(select(VirtualMachine.id).where(VirtualMachine.account_id == account_id,
                                                                VirtualMachine.removed.is_(None))))
    for vm_id in vm_ids:
        with runtime.session() as s:
            vm = s.get(VirtualMachine, vm_id)
            if vm.state in _BUSY_VM:
                busy.append(f"instance {vm.uuid}")
                continue
            if vm.state == VmState.Running.value:  # as destroyVirtualMachine: stop first
                inst.transition(vm, VmEvent.StopRequested, runtime.now())
        inst.run_action(runtime, {"action": "destroy", "vm_id": vm_id, "expunge": True}, job_log)
        counts.instances += 1


def _remove_snapshots(runtime: "Runtime", account_id: int, job_log, counts: CleanupCounts, busy: list[str]) -> None:
    with runtime.session() as s:
        rows = s.execute(select(Snapshot.id, Snapshot.uuid, Snapshot.state)
                         .where(Snapshot.account_id == account_id, Snapshot.removed.is_(None))).all()
    for snapshot_id, uuid, state in rows:
        if state in _BUSY_SNAPSHOT:
            busy.append(f"snapshot {uuid}")
            continue
        snaps.delete_snapshot(runtime, snapshot_id, job_log)
        counts.snapshots += 1


def _remove_volumes(runtime: "Runtime", account_id: int, counts: CleanupCounts, busy: list[str]) -> None:
    with runtime.session() as s:
        volume_ids = list(s.scalars(select(Volume.id).where(Volume.account_id == account_id,
                                                            Volume.removed.is_(None))))
    for volume_id in volume_ids:
        # One transaction per volume: expunge removes the file inside it, as deleteVolume does.
        with runtime.session() as s:
            volume = s.get(Volume, volume_id)
            if volume.state == VolumeState.Expunged.value:
                continue
            if volume.vm_id is not None or (not vols.VOLUME.can(volume.state, VolumeEvent.DestroyRequested)
                                            and volume.state != VolumeState.Destroy.value):
                busy.append(f"volume {volume.uuid}")
                continue
            vols.expunge(s, volume, runtime.now())
        counts.volumes += 1


def _remove_templates(runtime: "Runtime", account_id: int, job_log, counts: CleanupCounts, busy: list[str]) -> None:
    with runtime.session() as s:
        rows = s.execute(select(VMTemplate.id, VMTemplate.uuid)
                         .where(VMTemplate.account_id == account_id, VMTemplate.removed.is_(None))).all()
        downloading = set(s.scalars(select(TemplateStoreRef.template_id).where(
            TemplateStoreRef.template_id.in_([r.id for r in rows]),
            TemplateStoreRef.download_state.in_(_BUSY_DOWNLOAD)))) if rows else set()
    for template_id, uuid in rows:
        if template_id in downloading:
            busy.append(f"template {uuid}")
            continue
        tsvc.delete(runtime, template_id, None, job_log)
        counts.templates += 1
