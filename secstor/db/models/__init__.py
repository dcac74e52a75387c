"""All tables. Import from here so that Alembic and the service see one metadata."""

from secstor.db.base import Base
from secstor.db.models.accounts import Account, ApiSession, Domain, User
from secstor.db.models.chain_moves import SnapshotChainMove
from secstor.db.models.infra import ImageStore, StoragePool, Zone
from secstor.db.models.jobs import AsyncJob
from secstor.db.models.ops import Alert, ConfigurationValue, WorkerHeartbeat
from secstor.db.models.snapshots import Snapshot, SnapshotPolicy
from secstor.db.models.staging import PendingStoreDeletion
from secstor.db.models.template_permissions import LaunchPermission
from secstor.db.models.templates import TemplateStoreRef, VMTemplate
from secstor.db.models.volume_transfers import VolumeStoreRef
from secstor.db.models.volumes import DiskOffering, TemplatePoolCache, VirtualMachine, Volume

__all__ = [
    "DiskOffering",
    "Base",
    "Account",
    "ApiSession",
    "Domain",
    "User",
    "ImageStore",
    "StoragePool",
    "Zone",
    "AsyncJob",
    "Alert",
    "ConfigurationValue",
    "WorkerHeartbeat",
    "Snapshot",
    "SnapshotPolicy",
    "SnapshotChainMove",
    "LaunchPermission",
    "PendingStoreDeletion",
    "TemplateStoreRef",
    "VMTemplate",
    "TemplatePoolCache",
    "VirtualMachine",
    "Volume",
    "VolumeStoreRef",
]
