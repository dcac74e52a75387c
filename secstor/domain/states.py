"""State machines for every stateful kind, as CloudStack defines them.

Every state change in secstor goes through ``Machine.next_state`` so that an impossible
transition fails loudly instead of silently corrupting a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from secstor.domain.errors import IllegalTransition


class ObjectInStoreState(str, Enum):
    """One copy of a data object on one store (CloudStack's ObjectInDataStoreStateMachine)."""

    Allocated = "Allocated"
    Creating = "Creating"
    Ready = "Ready"
    Copying = "Copying"
    Migrating = "Migrating"
    Destroying = "Destroying"
    Destroyed = "Destroyed"
    Failed = "Failed"


# Copies a reader (deploy, copyTemplate, extract, the listing's isready) may use: a copy being
# migrated stays whole on its source until the switch, so a long migration does not make the
# templates it moves unusable. Readers open the copy's current store, before or after the switch.
READABLE_COPY_STATES = (ObjectInStoreState.Ready.value, ObjectInStoreState.Migrating.value)


class ObjectInStoreEvent(str, Enum):
    CreateOnlyRequested = "CreateOnlyRequested"
    DestroyRequested = "DestroyRequested"
    OperationSucceeded = "OperationSucceeded"
    OperationFailed = "OperationFailed"
    CopyRequested = "CopyRequested"
    MigrateDataRequested = "MigrateDataRequested"
    MigrationSucceeded = "MigrationSucceeded"
    MigrationFailed = "MigrationFailed"


class DownloadState(str, Enum):
    """CloudStack's VMTemplateStorageResourceAssoc.Status."""

    NOT_DOWNLOADED = "NOT_DOWNLOADED"
    DOWNLOAD_IN_PROGRESS = "DOWNLOAD_IN_PROGRESS"
    DOWNLOADED = "DOWNLOADED"
    DOWNLOAD_ERROR = "DOWNLOAD_ERROR"
    ABANDONED = "ABANDONED"
    UPLOADED = "UPLOADED"
    NOT_UPLOADED = "NOT_UPLOADED"
    UPLOAD_ERROR = "UPLOAD_ERROR"
    UPLOAD_IN_PROGRESS = "UPLOAD_IN_PROGRESS"


class SnapshotState(str, Enum):
    Allocated = "Allocated"
    Creating = "Creating"
    CreatedOnPrimary = "CreatedOnPrimary"
    BackingUp = "BackingUp"
    BackedUp = "BackedUp"
    Copying = "Copying"
    Destroying = "Destroying"
    Destroyed = "Destroyed"
    Error = "Error"


class SnapshotEvent(str, Enum):
    CreateRequested = "CreateRequested"
    OperationNotPerformed = "OperationNotPerformed"
    BackupToSecondary = "BackupToSecondary"
    DestroyRequested = "DestroyRequested"
    CopyingRequested = "CopyingRequested"
    OperationSucceeded = "OperationSucceeded"
    OperationFailed = "OperationFailed"


class JobState(str, Enum):
    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class JobEvent(str, Enum):
    Claimed = "Claimed"
    Succeeded = "Succeeded"
    Failed = "Failed"
    Retry = "Retry"  # lease expired or a retryable failure: back to the queue
    Cancelled = "Cancelled"


@dataclass(frozen=True)
class Machine:
    name: str
    transitions: dict[tuple[str, str], str]

    def next_state(self, current: str | Enum, event: str | Enum) -> str:
        cur = current.value if isinstance(current, Enum) else current
        ev = event.value if isinstance(event, Enum) else event
        try:
            return self.transitions[(cur, ev)]
        except KeyError:
            raise IllegalTransition(f"{self.name}: no transition from {cur} on {ev}") from None

    def can(self, current: str | Enum, event: str | Enum) -> bool:
        cur = current.value if isinstance(current, Enum) else current
        ev = event.value if isinstance(event, Enum) else event
        return (cur, ev) in self.transitions


def _table(rows: dict[Enum, dict[Enum, Enum]]) -> dict[tuple[str, str], str]:
    return {(src.value, ev.value): dst.value for src, evs in rows.items() for ev, dst in evs.items()}


S, E = ObjectInStoreState, ObjectInStoreEvent
OBJECT_IN_STORE = Machine(
    "object-in-store",
    _table(
        {
            S.Allocated: {
                E.CreateOnlyRequested: S.Creating,
                E.DestroyRequested: S.Destroying,
                E.OperationFailed: S.Failed,
                E.OperationSucceeded: S.Ready,
                E.MigrateDataRequested: S.Migrating,
            },
            S.Creating: {E.OperationFailed: S.Allocated, E.OperationSucceeded: S.Ready, E.DestroyRequested: S.Destroying},
            S.Ready: {
                E.CopyRequested: S.Copying,
                E.DestroyRequested: S.Destroying,
                E.OperationSucceeded: S.Ready,
                E.MigrateDataRequested: S.Migrating,
            },
            S.Copying: {E.OperationSucceeded: S.Ready, E.OperationFailed: S.Ready},
            S.Migrating: {
                E.MigrationFailed: S.Failed,
                E.MigrationSucceeded: S.Destroyed,
                E.OperationSucceeded: S.Ready,
                E.OperationFailed: S.Ready,
            },
            S.Destroying: {E.DestroyRequested: S.Destroying, E.OperationFailed: S.Destroying, E.OperationSucceeded: S.Destroyed},
            S.Failed: {E.DestroyRequested: S.Destroying},
        }
    ),
)

T, V = SnapshotState, SnapshotEvent
SNAPSHOT = Machine(
    "snapshot",
    _table(
        {
            T.Allocated: {V.CreateRequested: T.Creating},
            T.Creating: {V.OperationSucceeded: T.CreatedOnPrimary, V.OperationNotPerformed: T.BackedUp, V.OperationFailed: T.Error},
            T.CreatedOnPrimary: {V.BackupToSecondary: T.BackingUp, V.OperationNotPerformed: T.BackedUp},
            T.BackingUp: {
                V.OperationSucceeded: T.BackedUp,
                V.OperationFailed: T.Error,
                V.OperationNotPerformed: T.BackedUp,
                V.BackupToSecondary: T.BackingUp,
            },
            T.BackedUp: {V.DestroyRequested: T.Destroying, V.CopyingRequested: T.Copying, V.BackupToSecondary: T.BackingUp},
            T.Copying: {V.OperationSucceeded: T.BackedUp, V.OperationFailed: T.BackedUp},
            T.Destroying: {V.OperationSucceeded: T.Destroyed, V.OperationFailed: T.BackedUp, V.DestroyRequested: T.Destroying},
            T.Error: {V.DestroyRequested: T.Destroying},
        }
    ),
)

J, JE = JobState, JobEvent
JOB = Machine(
    "job",
    _table(
        {
            J.pending: {JE.Claimed: J.running, JE.Cancelled: J.cancelled, JE.Failed: J.failed},
            J.running: {
                JE.Succeeded: J.succeeded,
                JE.Failed: J.failed,
                JE.Retry: J.pending,
                JE.Claimed: J.running,  # a lease taken over from a dead worker
                JE.Cancelled: J.cancelled,
            },
        }
    ),
)

# CloudStack's jobstatus numbers (JobInfo.Status ordinal).
JOBSTATUS = {J.pending.value: 0, J.running.value: 0, J.succeeded.value: 1, J.failed.value: 2, J.cancelled.value: 3}
del S, E, T, V, J, JE
