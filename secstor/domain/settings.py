"""The registry of named settings: CloudStack's names and defaults, plus secstor's own.

Pure data and validation; values live in the ``configuration_values`` table and are read
through ``secstor.services.settings``. Every setting appears in ``listConfigurations`` and in
docs/settings.md (generated from this table by ``python -m secstor.tools.gendocs``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable

from secstor.domain.errors import InvalidParameter


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    type: str  # "Integer" | "Long" | "Float" | "Boolean" | "String" | "CSV"
    category: str
    description: str
    scope: str = "Global"
    dynamic: bool = True
    options: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    extension: bool = False  # not a CloudStack setting
    validator: Callable[[str], None] | None = None

    def parse(self, raw: str) -> Any:
        """Turn a stored string into a typed value; raise InvalidParameter if it is not valid."""
        value = raw.strip()
        try:
            if self.type in ("Integer", "Long"):
                typed: Any = int(value)
            elif self.type == "Float":
                typed = float(value)
            elif self.type == "Boolean":
                low = value.lower()
                if low not in ("true", "false"):
                    raise ValueError
                typed = low == "true"
            elif self.type == "CSV":
                typed = [p.strip() for p in value.split(",") if p.strip()]
            else:
                typed = value
        except ValueError:
            raise InvalidParameter(
                f"Invalid value {raw!r} for setting {self.name}: not a valid {self.type}", "value"
            ) from None
        if self.options and value.lower() not in {o.lower() for o in self.options}:
            raise InvalidParameter(
                f"Invalid value {raw!r} for setting {self.name}: valid values are {', '.join(self.options)}", "value"
            )
        if self.minimum is not None and typed < self.minimum:
            raise InvalidParameter(f"Invalid value {raw!r} for setting {self.name}: must be >= {self.minimum:g}", "value")
        if self.maximum is not None and typed > self.maximum:
            raise InvalidParameter(f"Invalid value {raw!r} for setting {self.name}: must be <= {self.maximum:g}", "value")
        if self.validator is not None:
            try:
                self.validator(value)
            except InvalidParameter as exc:
                raise InvalidParameter(f"Invalid value {raw!r} for setting {self.name}: {exc.message}",
                                       "value") from None
        return typed


def _cidr_list(value: str) -> None:
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise InvalidParameter(f"{part!r} is not a CIDR", "value") from None


_REGISTRY: dict[str, Setting] = {}


def register(setting: Setting) -> Setting:
    if setting.name in _REGISTRY:
        raise ValueError(f"setting {setting.name} registered twice")
    setting.parse(setting.default)  # a default must itself be valid
    _REGISTRY[setting.name] = setting
    return setting


def get_setting(name: str) -> Setting:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidParameter(f"Config parameter with name {name} doesn't exist", "name") from None


def all_settings() -> list[Setting]:
    return sorted(_REGISTRY.values(), key=lambda s: s.name)


for _s in [
    Setting("image.store.allocation.algorithm", "firstfitleastconsumed", "String", "Storage",
            "How a private template's store is chosen in a zone: firstfitleastconsumed (most free "
            "first) or random.", options=("firstfitleastconsumed", "random")),
    Setting("image.store.imbalance.threshold", "0.3", "Float", "Storage",
            "Balance migration stops once the standard deviation of the stores' free ratios divided "
            "by their mean is at or under this value.", minimum=0.0),
    Setting("secondary.storage.capacity.threshold", "0.90", "Float", "Storage",
            "A store whose used/total ratio is above this never receives new data.", minimum=0.0, maximum=1.0),
    Setting("secstorage.capacity.alert.threshold", "0.85", "Float", "Alert",
            "An alert is raised when a store's used/total ratio passes this value.", minimum=0.0, maximum=1.0,
            extension=True),
    Setting("secstorage.capacityscan.interval", "30000", "Long", "Storage",
            "Milliseconds between capacity scans of the image stores.", minimum=1000),
    Setting("secstorage.max.migrate.sessions", "2", "Integer", "Advanced",
            "Copies a worker runs in parallel for migrations and store-to-store copies.", minimum=1, maximum=64),
    Setting("secstorage.worker.job.slots", "4", "Integer", "Advanced",
            "Jobs of the default queue (everything but copies) a worker runs in parallel.", minimum=1,
            maximum=256, extension=True),
    Setting("max.ssvm.count", "5", "Integer", "Advanced",
            "Most extra worker processes the supervisor starts for migration load.", minimum=0, maximum=64),
    Setting("max.data.migration.wait.time", "15", "Integer", "Advanced",
            "Minutes a copy may wait in the queue before the supervisor adds a worker.", minimum=1),
    Setting("secstorage.allowed.internal.sites", "", "CSV", "Advanced",
            "Comma-separated CIDRs from which downloads are allowed although they are loopback, "
            "private, link-local or metadata addresses. Empty: all such addresses are refused.",
            validator=_cidr_list),
    Setting("snapshot.backup.to.secondary", "true", "Boolean", "Snapshots",
            "Back snapshots up to an image store; false keeps them on primary storage only. Read by every "
            "snapshot job, so a change applies to the next snapshot without a restart."),
    Setting("snapshot.delta.max", "16", "Integer", "Snapshots",
            "Most incremental snapshots between two full ones (kept for compatibility: secstor "
            "snapshots are all logically full).", minimum=1),
    Setting("snapshot.max.hourly", "8", "Integer", "Snapshots", "Most hourly scheduled snapshots kept per volume.", minimum=0),
    Setting("snapshot.max.daily", "8", "Integer", "Snapshots", "Most daily scheduled snapshots kept per volume.", minimum=0),
    Setting("snapshot.max.weekly", "8", "Integer", "Snapshots", "Most weekly scheduled snapshots kept per volume.", minimum=0),
    Setting("snapshot.max.monthly", "8", "Integer", "Snapshots", "Most monthly scheduled snapshots kept per volume.", minimum=0),
    Setting("snapshot.gc.interval", "86400", "Integer", "Snapshots",
            "Seconds between garbage collections of snapshot chunks no snapshot uses any more.", minimum=60,
            extension=True),
    Setting("snapshot.gc.grace", "86700", "Integer", "Snapshots",
            "Seconds an unreferenced snapshot chunk is kept before garbage collection removes it (protects "
            "backups running meanwhile; Proxmox Backup Server uses 24 h 5 min).", minimum=0, extension=True),
    Setting("snapshot.policy.check.interval", "60", "Integer", "Snapshots",
            "Seconds between checks for snapshot policies that are due.", minimum=1, extension=True),
    Setting("snapshot.backup.to.region.store", "true", "Boolean", "Snapshots",
            "In a zone that uses a region-wide image store (it has a staging store), back a volume's first "
            "snapshot up into the region store when it can take it, so that the volume's snapshots can be used in "
            "every zone; false prefers the zone's own image stores (a zone without one still uses the region "
            "store). A volume's snapshots stay in one store: this decides where a new chain goes, never moves an "
            "existing one (copySnapshot does).", extension=True),
    Setting("secstorage.download.hosts.check", "", "CSV", "Advanced",
            "Comma-separated host names that the health check (secstor health, "
            "runSecondaryStorageHealthCheck) must be able to resolve, e.g. the servers templates are "
            "downloaded from. Empty: no DNS check.", extension=True),
    Setting("secstorage.nfs.version", "3", "String", "Storage",
            "NFS version used to mount nfs:// image stores.", options=("3", "4", "4.0", "4.1", "4.2"), extension=True),
    Setting("secstorage.nfs.timeo", "600", "Integer", "Storage",
            "NFS mount option timeo (tenths of a second before a retransmission).", minimum=1, extension=True),
    Setting("secstorage.nfs.retrans", "2", "Integer", "Storage",
            "NFS mount option retrans (retransmissions before a major timeout).", minimum=0, extension=True),
    Setting("job.lease.seconds", "60", "Integer", "Advanced",
            "Seconds a worker's claim on a job lasts without a heartbeat; after that another worker "
            "takes the job over.", minimum=5, extension=True),
    Setting("job.max.attempts", "5", "Integer", "Advanced",
            "Times a job is retried after its worker died or it failed with a retryable error.", minimum=1,
            extension=True),
    Setting("api.session.timeout", "1800", "Integer", "Advanced",
            "Seconds a login session stays valid without use.", minimum=60, extension=True),
    Setting("api.signature.require.expires", "true", "Boolean", "Advanced",
            "Signed requests must carry signatureVersion=3 and an expires time (replay protection). "
            "Set false only for old clients such as Marvin that sign without expiry.", extension=True),
    Setting("api.signature.max.expiry", "900", "Integer", "Advanced",
            "Seconds into the future a signed request's expires may lie (CloudStack: 15 minutes).",
            minimum=60, extension=True),
    Setting("max.template.iso.size", "50", "Integer", "Advanced",
            "Largest template or ISO, in GiB, that may be downloaded or uploaded.", minimum=1),
    Setting("upload.operation.timeout", "60", "Integer", "Advanced",
            "Minutes the postURL of getUploadParamsForTemplate/getUploadParamsForIso/getUploadParamsForVolume "
            "accepts the upload; an upload not started by then is refused, and later marked abandoned. An upload "
            "in progress that receives nothing for this long (at least 1 minute) is marked abandoned too.",
            minimum=0),
    Setting("storage.max.volume.upload.size", "500", "Integer", "Advanced",
            "Largest volume, in GiB, that uploadVolume or getUploadParamsForVolume accepts.", minimum=1),
    Setting("upload.monitoring.interval", "60", "Integer", "Advanced",
            "Minutes between the checks that mark uploads never started before their upload URL expired, or "
            "started and then stalled for upload.operation.timeout, as abandoned, and remove expired "
            "extractVolume copies.", minimum=1),
    Setting("extract.url.expiration.interval", "14400", "Integer", "Advanced",
            "Seconds an extractTemplate/extractIso URL stays valid.", minimum=0),
    Setting("secstorage.download.connect.timeout", "30", "Integer", "Advanced",
            "Seconds a template download may take to connect to its server.", minimum=1, extension=True),
    Setting("secstorage.download.read.timeout", "60", "Integer", "Advanced",
            "Seconds a template download waits for its server to answer a request.", minimum=1, extension=True),
    Setting("secstorage.download.stall.timeout", "60", "Integer", "Advanced",
            "Seconds a template download may receive no byte before it reconnects and resumes.", minimum=1,
            extension=True),
    Setting("secstorage.download.max.retries", "5", "Integer", "Advanced",
            "Reconnections a template download may make before it ends in DOWNLOAD_ERROR.", minimum=0,
            extension=True),
    Setting("secstorage.download.ca.bundle", "", "String", "Advanced",
            "Path of a PEM file of CA certificates that https template, ISO and volume downloads trust in "
            "addition to the system's and certifi's (e.g. a private CA); it must be readable on every host that "
            "runs workers. Empty: only those. An untrusted certificate ends the download in DOWNLOAD_ERROR.",
            extension=True),
    Setting("secstorage.staging.pull.wait", "600", "Integer", "Storage",
            "Seconds a use of a template waits for another use's copy of it into the zone's staging store.",
            minimum=1, extension=True),
    Setting("secstorage.staging.eviction.threshold", "0.8", "Float", "Storage",
            "Fill level (used/total) of a staging store above which its least recently used cached copies are "
            "evicted, down to this level.", minimum=0.0, maximum=1.0, extension=True),
    Setting("secstorage.staging.eviction.interval", "300", "Integer", "Storage",
            "Seconds between two eviction passes over the staging stores.", minimum=1, extension=True),
    Setting("secstorage.template.sync.interval", "300", "Integer", "Storage",
            "Seconds between checks that every eligible image store holds the public, featured and system "
            "templates of its zone (a store added or made writable again receives them).", minimum=5,
            extension=True),
    Setting("secstorage.region.sync.interval", "300", "Integer", "Storage",
            "Seconds between passes that upload to the region store the templates and ISOs Ready on an image "
            "store of a zone with a staging store but not yet on a region store (failed uploads are retried).",
            minimum=5, extension=True),
    Setting("secstorage.region.sync.parallel", "4", "Integer", "Storage",
            "Uploads to the region store that the synchronisation of zone templates keeps queued or running at "
            "once, over all workers (each worker also runs at most secstorage.max.migrate.sessions copies).",
            minimum=1, maximum=64, extension=True),
    Setting("secstorage.stale.write.cleanup.interval", "3600", "Integer", "Storage",
            "Seconds between clean-ups of unfinished writes (temporary files, S3 multipart uploads) left "
            "on the image stores by workers that died mid-transfer.", minimum=60, extension=True),
    Setting("secstorage.stale.write.age", "86400", "Integer", "Storage",
            "Seconds after which an unfinished write counts as abandoned and is removed by the clean-up. "
            "Must exceed the longest transfer (an S3 multipart upload counts from its start).", minimum=600,
            extension=True),
]:
    register(_s)
