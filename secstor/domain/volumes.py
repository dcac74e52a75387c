"""Volumes and instances: CloudStack's Volume.State and VirtualMachine.State machines, and the
rules that decide what a volume or instance may do next. Plain logic, no I/O."""

from __future__ import annotations

from enum import Enum

from secstor.domain.errors import InvalidParameter
from secstor.domain.states import Machine, _table

GIB = 1 << 30


class VolumeState(str, Enum):
    """CloudStack's Volume.State (the states secstor reaches; upload and snapshot states are
    listed so their features share this one machine)."""

    Allocated = "Allocated"
    Creating = "Creating"
    Ready = "Ready"
    Resizing = "Resizing"
    Snapshotting = "Snapshotting"
    RevertSnapshot = "RevertSnapshot"
    Destroy = "Destroy"
    Expunging = "Expunging"
    Expunged = "Expunged"
    NotUploaded = "NotUploaded"
    UploadNotStarted = "UploadNotStarted"
    UploadOp = "UploadOp"
    Uploading = "Uploading"
    UploadInProgress = "UploadInProgress"
    UploadError = "UploadError"
    UploadAbandoned = "UploadAbandoned"
    Uploaded = "Uploaded"
    Copying = "Copying"  # an Uploaded volume being copied to primary storage


class VolumeEvent(str, Enum):
    CreateRequested = "CreateRequested"
    OperationSucceeded = "OperationSucceeded"
    OperationFailed = "OperationFailed"
    ResizeRequested = "ResizeRequested"
    SnapshotRequested = "SnapshotRequested"
    RevertSnapshotRequested = "RevertSnapshotRequested"
    DestroyRequested = "DestroyRequested"
    ExpungingRequested = "ExpungingRequested"
    UploadRequested = "UploadRequested"
    OperationTimeout = "OperationTimeout"
    CopyRequested = "CopyRequested"


class VmState(str, Enum):
    """CloudStack's VirtualMachine.State (without migration and HA states)."""

    Starting = "Starting"
    Running = "Running"
    Stopping = "Stopping"
    Stopped = "Stopped"
    Destroyed = "Destroyed"
    Expunging = "Expunging"
    Error = "Error"


class VmEvent(str, Enum):
    StartRequested = "StartRequested"
    StopRequested = "StopRequested"
    DestroyRequested = "DestroyRequested"
    ExpungeOperation = "ExpungeOperation"
    OperationSucceeded = "OperationSucceeded"
    OperationFailed = "OperationFailed"
    OperationFailedToError = "OperationFailedToError"


S, E = VolumeState, VolumeEvent
VOLUME = Machine(
    "volume",
    _table(
        {
            S.Allocated: {E.CreateRequested: S.Creating, E.DestroyRequested: S.Destroy,
                          E.ResizeRequested: S.Resizing, E.UploadRequested: S.UploadOp},
            S.Creating: {E.OperationSucceeded: S.Ready, E.OperationFailed: S.Allocated,
                         E.DestroyRequested: S.Destroy},
            S.Ready: {E.ResizeRequested: S.Resizing, E.SnapshotRequested: S.Snapshotting,
                      E.RevertSnapshotRequested: S.RevertSnapshot, E.DestroyRequested: S.Destroy},
            S.Resizing: {E.OperationSucceeded: S.Ready, E.OperationFailed: S.Ready},
            S.Snapshotting: {E.OperationSucceeded: S.Ready, E.OperationFailed: S.Ready},
            S.RevertSnapshot: {E.OperationSucceeded: S.Ready, E.OperationFailed: S.Ready},
            S.Destroy: {E.ExpungingRequested: S.Expunging},
            S.Expunging: {E.OperationSucceeded: S.Expunged, E.OperationFailed: S.Expunging,
                          E.ExpungingRequested: S.Expunging},
            S.NotUploaded: {E.UploadRequested: S.UploadInProgress, E.OperationTimeout: S.UploadAbandoned,
                            E.DestroyRequested: S.Destroy},
            S.UploadNotStarted: {E.UploadRequested: S.Uploading, E.OperationFailed: S.UploadError,
                                 E.DestroyRequested: S.Destroy},
            S.UploadOp: {E.OperationSucceeded: S.Uploaded, E.OperationFailed: S.UploadError,
                         E.DestroyRequested: S.Destroy},
            S.Uploading: {E.OperationSucceeded: S.Uploaded, E.OperationFailed: S.UploadError,
                          E.DestroyRequested: S.Destroy},
            S.UploadInProgress: {E.OperationSucceeded: S.Uploaded, E.OperationFailed: S.UploadError,
                                 E.OperationTimeout: S.UploadError, E.DestroyRequested: S.Destroy},
            S.UploadError: {E.DestroyRequested: S.Destroy},
            S.UploadAbandoned: {E.DestroyRequested: S.Destroy},
            S.Uploaded: {E.CopyRequested: S.Copying, E.DestroyRequested: S.Destroy},
            S.Copying: {E.OperationSucceeded: S.Ready, E.OperationFailed: S.Uploaded},
        }
    ),
)

V, VE = VmState, VmEvent
VM = Machine(
    "virtual machine",
    _table(
        {
            V.Stopped: {VE.StartRequested: V.Starting, VE.DestroyRequested: V.Destroyed,
                        VE.ExpungeOperation: V.Expunging},
            V.Starting: {VE.OperationSucceeded: V.Running, VE.OperationFailed: V.Stopped,
                         VE.OperationFailedToError: V.Error},
            V.Running: {VE.StopRequested: V.Stopping},
            V.Stopping: {VE.OperationSucceeded: V.Stopped, VE.OperationFailed: V.Running},
            V.Destroyed: {VE.ExpungeOperation: V.Expunging},
            V.Error: {VE.DestroyRequested: V.Destroyed, VE.ExpungeOperation: V.Expunging},
        }
    ),
)
del S, E, V, VE

# Volumes that hold a file on primary storage and can be used by an instance.
USABLE_STATES = frozenset({VolumeState.Ready.value})
# Volumes that are gone for the user (listVolumes hides them).
GONE_STATES = frozenset({VolumeState.Expunging.value, VolumeState.Expunged.value})
RESIZE_REFUSAL = "Volume should be in ready or allocated state before attempting a resize"


def gib_to_bytes(gib: int, param: str) -> int:
    """A size parameter in GiB as bytes; 431 naming ``param`` unless it is a positive number."""
    if gib is None or gib <= 0:
        raise InvalidParameter(f"Invalid {param}: a size in GiB greater than 0 is required", param)
    return gib * GIB
