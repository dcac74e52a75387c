"""Adding, changing and deleting image stores.

A store is saved only after its driver's probe passed (reachable, mounted for NFS, a probe
object written, read back and deleted), so a typo in a URL or a wrong S3 key is a 431 at once,
not a failed download hours later. Secret details (S3 access and secret keys) are kept
encrypted in ``ImageStore.secrets_enc`` and never leave this module in a response.

Deliberate difference from CloudStack: stores of different providers may be mixed freely
(CloudStack refuses "You can only add new image stores from the same provider").
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from secstor.db.models import ImageStore, Zone
from secstor.domain.errors import InvalidParameter, ResourceUnavailable
from secstor.services.capacity import (
    Measurement,
    alert_threshold,
    record_measurement,
    refresh_capacity,
    resolve_store_alerts,
)
from secstor.services.stores import store_details
from secstor.stores.base import Capacity, InvalidStoreParameter, StoreError
from secstor.stores.factory import driver_for, local_path_from_url, s3_config_from_details
from secstor.stores.nfs import parse_nfs_url

if TYPE_CHECKING:
    from secstor.runtime import Runtime
    from secstor.stores.base import StoreDriver

log = logging.getLogger("secstor.imagestores")

# Canonical provider names; the API accepts any letter case.
PROVIDERS = {"local": "Local", "nfs": "NFS", "s3": "S3"}
PRIMARY_PROVIDERS = ("Local",)
# Details that are encrypted at rest and never returned, whatever the provider.
# The proxy URL may carry a user and password, so it is kept encrypted as the keys are.
SECRET_DETAILS = frozenset({"accesskey", "secretkey", "proxy"})
# S3 details an operator may change on a live store with updateImageStore.
S3_UPDATABLE = ("accesskey", "secretkey", "endpoint", "usehttps", "s3signer", "connectiontimeout",
                "maxerrorretry", "sockettimeout", "connectionttl", "usetcpkeepalive", "region", "pathstyle",
                "checksummode", "proxy", "partsize", "uploadconcurrency", "singleputmax")
NAME_MAX = 255


def canonical_provider(provider: str) -> str:
    try:
        return PROVIDERS[provider.strip().lower()]
    except KeyError:
        raise InvalidParameter(f"Invalid image store provider {provider}: valid providers are "
                               f"{', '.join(PROVIDERS.values())}", "provider") from None


def _split_details(details: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(plain, secret) details; names are lower-cased as CloudStack's detail names are."""
    lowered = {k.strip().lower(): v for k, v in details.items()}
    plain = {k: v for k, v in lowered.items() if k not in SECRET_DETAILS}
    secret = {k: v for k, v in lowered.items() if k in SECRET_DETAILS}
    return plain, secret


def _s3_location(details: dict[str, str]) -> tuple[str, str]:
    """(url, protocol) of an S3 store: ``http(s)://endpoint/bucket``; protocol http or https
    as CloudStack records it."""
    try:
        cfg = s3_config_from_details(details)
    except InvalidStoreParameter as exc:
        raise InvalidParameter(f"Invalid {exc.param}: {exc.reason}", exc.param) from None
    return f"{cfg.endpoint_url}/{cfg.bucket}", urlsplit(cfg.endpoint_url).scheme


def _canonical_url(provider: str, url: str) -> str:
    """One spelling per location (``file:///a/b/`` and ``file:///a//b`` are the same store), so
    duplicates are caught and an NFS export gets one mount point."""
    try:
        if provider == "Local":
            return f"file://{local_path_from_url(url)}"
        host, export = parse_nfs_url(url)
    except InvalidStoreParameter as exc:
        raise InvalidParameter(f"Invalid {exc.param}: {exc.reason}", exc.param) from None
    except ValueError as exc:
        raise InvalidParameter(f"Invalid url: {exc}", "url") from None
    return f"nfs://{host}{export}"


def _check_name(session: Session, name: str, *, exclude_id: int | None = None) -> str:
    name = name.strip()
    if not name:
        raise InvalidParameter("Image store name cannot be empty", "name")
    if len(name) > NAME_MAX:
        raise InvalidParameter(f"Image store name is longer than {NAME_MAX} characters", "name")
    stmt = select(ImageStore.id).where(ImageStore.name == name, ImageStore.removed.is_(None))
    if exclude_id is not None:
        stmt = stmt.where(ImageStore.id != exclude_id)
    if session.scalar(stmt) is not None:
        raise InvalidParameter(f"The image store with name {name} already exists, try creating with another name",
                               "name")
    return name


def _check_url_unused(session: Session, url: str, *, exclude_id: int | None = None) -> None:
    """Two store rows on the same location would count its data twice and delete each other's."""
    stmt = select(ImageStore.name).where(ImageStore.url == url, ImageStore.removed.is_(None))
    if exclude_id is not None:
        stmt = stmt.where(ImageStore.id != exclude_id)
    other = session.scalar(stmt)
    if other is not None:
        raise InvalidParameter(f"Image store {other} already uses url {url}", "url")


def _open_driver(runtime: "Runtime", provider: str, url: str, details: dict[str, str]) -> "StoreDriver":
    """A driver for a configuration not saved yet (the cached drivers are for saved rows)."""
    try:
        return driver_for(provider, url, details, mounter=runtime.drivers.mounter)
    except InvalidStoreParameter as exc:
        raise InvalidParameter(f"Invalid {exc.param}: {exc.reason}", exc.param) from None
    except (ValueError, OSError) as exc:
        raise InvalidParameter(f"Cannot use url {url}: {exc}", "url") from None


# S3 error codes (or bare HTTP statuses, as HEAD answers carry no body) -> the parameter to fix.
_S3_CULPRITS = (("InvalidAccessKeyId", "accesskey"), ("SignatureDoesNotMatch", "secretkey"),
                ("NoSuchBucket", "bucket"), ("404", "bucket"), ("AccessDenied", "accesskey"), ("403", "accesskey"))


def _s3_culprit(detail: str) -> str:
    """The parameter an S3 probe failure points at, so the 431 names what to fix. Codes count
    as whole words not preceded by ':' or '.', so a port such as :40404 is no 404."""
    for code, param in _S3_CULPRITS:
        if re.search(rf"(?<![\w:.]){code}(?!\w)", detail):
            return param
    return "endpoint"


def _probe_config(runtime: "Runtime", provider: str, url: str, details: dict[str, str], name: str) -> Capacity:
    """Probe a configuration before it is saved; 431 unless the store is reachable (and mounted)
    and writable. Returns its capacity as the driver reports it.

    A full store is still accepted: it can serve what it holds, and placement never sends new
    data to it.
    """
    driver = _open_driver(runtime, provider, url, details)
    param = "url"
    try:
        try:
            results = driver.probe()
        except (StoreError, OSError) as exc:
            raise InvalidParameter(f"Image store {name} is not usable, nothing was saved: {exc}", param) from None
        for check in results:
            if check.ok or check.name == "free space":
                continue
            hint = ""
            if provider == "S3":
                param = _s3_culprit(check.detail)
                hint = f" (check {param})"
            raise InvalidParameter(f"Image store {name} is not usable, nothing was saved: the {check.name} check "
                                   f"failed: {check.detail}{hint}", param)
        try:
            return driver.capacity()
        except (StoreError, OSError) as exc:
            raise InvalidParameter(f"Image store {name} is not usable, nothing was saved: its capacity cannot "
                                   f"be measured: {exc}", param) from None
    finally:
        driver.close()


def _release_for_io(session: Session) -> None:
    """End the caller's transaction before slow I/O (a probe, a listing: seconds over a network).

    Only reads happened so far, so nothing half-done is committed; on SQLite an open transaction
    holds the database's only write lock, which every other request would wait for.
    """
    session.commit()


def _flush_new_name(session: Session, name: str) -> None:
    try:
        session.flush()
    except IntegrityError:
        # Another request took the name between our check and this write.
        raise InvalidParameter(f"The image store with name {name} already exists, try creating with another name",
                               "name") from None


# Work a new store triggers in the transaction that adds it (copies of the zone's public
# templates ...). Later features register hooks with ``@on_store_added``.
StoreAddedHook = Callable[[Session, "Runtime", ImageStore], None]
STORE_ADDED_HOOKS: list[StoreAddedHook] = []


def on_store_added(hook: StoreAddedHook) -> StoreAddedHook:
    STORE_ADDED_HOOKS.append(hook)
    return hook


def add_image_store(session: Session, runtime: "Runtime", *, provider: str, url: str | None, name: str | None,
                    zone: Zone | None, details: dict[str, str] | None = None, role: str = "Image") -> ImageStore:
    """Validate, probe, then save a new store with its first capacity measurement. ``role``
    ImageCache makes a zone's staging store (secstor.services.staging)."""
    provider = canonical_provider(provider)
    plain, secret = _split_details(dict(details or {}))
    if provider == "S3":
        url, protocol = _s3_location({**plain, **secret})
    else:
        if not url or not url.strip():
            raise InvalidParameter(f"url is required for an image store of provider {provider}", "url")
        url = _canonical_url(provider, url.strip())
        protocol = {"Local": "file", "NFS": "nfs"}[provider]
    name = _check_name(session, name if name is not None else url)
    _check_url_unused(session, url)
    _release_for_io(session)
    measured = Measurement(None, alert_threshold(runtime),
                           capacity=_probe_config(runtime, provider, url, {**plain, **secret}, name))
    store = ImageStore(
        name=name, zone=zone, provider=provider, protocol=protocol, url=url,
        scope="ZONE" if zone is not None else "REGION", role=role, readonly=False,
        details_json=json.dumps(plain, sort_keys=True),
        secrets_enc=runtime.secrets.encrypt_json(secret) if secret else None, created=runtime.now(),
    )
    session.add(store)
    _flush_new_name(session, name)
    record_measurement(session, runtime, store.id, measured)
    log.info("image store %s (%s) added: provider %s, url %s, scope %s, role %s", store.name, store.uuid, provider,
             url, store.scope, role)
    for hook in STORE_ADDED_HOOKS:
        hook(session, runtime, store)
    return store


def update_image_store(session: Session, runtime: "Runtime", store: ImageStore, *, name: str | None = None,
                       readonly: bool | None = None, capacity_bytes: int | None = None,
                       s3_changes: dict[str, str] | None = None) -> ImageStore:
    """Apply an operator's changes, all or none. S3 connection changes are probed before anything
    is saved; drivers built from the old row are replaced on their next use (no restart)."""
    s3_changes = {k: v for k, v in (s3_changes or {}).items() if v is not None}
    if s3_changes and store.provider != "S3":
        param = sorted(s3_changes)[0]
        raise InvalidParameter(f"{param} applies only to S3 image stores; {store.name} is a {store.provider} store",
                               param)
    if capacity_bytes is not None and capacity_bytes < 0:
        raise InvalidParameter("capacitybytes must be 0 (no cap) or a positive number of bytes", "capacitybytes")
    if name is not None:
        name = _check_name(session, name, exclude_id=store.id)
    if s3_changes:
        details = {**store_details(runtime, store), **s3_changes}
        url, protocol = _s3_location(details)
        _check_url_unused(session, url, exclude_id=store.id)
        _release_for_io(session)
        _probe_config(runtime, "S3", url, details, name or store.name)
        plain, secret = _split_details(details)
        store.url, store.protocol = url, protocol
        store.details_json = json.dumps(plain, sort_keys=True)
        store.secrets_enc = runtime.secrets.encrypt_json(secret) if secret else None
        log.info("image store %s (%s): S3 settings changed (%s)", store.name, store.uuid,
                 ", ".join(sorted(s3_changes)))
    if name is not None:
        store.name = name
    if readonly is not None:
        store.readonly = readonly
    if capacity_bytes is not None:
        store.capacity_bytes = capacity_bytes or None
    _flush_new_name(session, store.name)
    if s3_changes or capacity_bytes is not None:
        refresh_capacity(session, runtime, [store])
    return store


# ---- deletion -------------------------------------------------------------------------------
# A reference check answers "why may this store not be deleted?" (a CloudStack message) or
# None. Later features register checks on their own tables (template_store_refs ...).
StoreReferenceCheck = Callable[[Session, "Runtime", ImageStore], "str | None"]
STORE_REFERENCE_CHECKS: list[StoreReferenceCheck] = []


def store_reference_check(check: StoreReferenceCheck) -> StoreReferenceCheck:
    STORE_REFERENCE_CHECKS.append(check)
    return check


def _holds_objects_under(prefix: str, refusal: str) -> StoreReferenceCheck:
    """A check on the store's own contents: anything under ``prefix`` (CloudStack's on-store
    layout) means the store still holds data of that kind."""

    def check(session: Session, runtime: "Runtime", store: ImageStore) -> str | None:
        try:
            first = next(iter(runtime.drivers.for_store(store).list(prefix)), None)
        except Exception as exc:  # unreachable, unmounted, bad credentials: cannot prove it is empty
            raise ResourceUnavailable(f"Cannot delete image store {store.name}: its contents cannot be listed "
                                      f"to make sure it holds no data: {exc}") from None
        return refusal if first is not None else None

    check.__name__ = f"holds_objects_under_{prefix.strip('/')}"
    return check


for _prefix, _kind in (("template/", "templates"), ("snapshots/", "snapshots"), ("volumes/", "volumes")):
    store_reference_check(_holds_objects_under(_prefix, f"Cannot delete image store with active {_kind} backup!"))


def delete_image_store(session: Session, runtime: "Runtime", store: ImageStore) -> None:
    """Soft-delete a store that holds nothing; 431 with CloudStack's message otherwise."""
    _release_for_io(session)
    for check in STORE_REFERENCE_CHECKS:
        refusal = check(session, runtime, store)
        if refusal:
            raise InvalidParameter(refusal, "id")
    original = store.name
    store.removed = runtime.now()
    # Names are unique among all rows; a removed store gives its name up for a new one.
    suffix = f"~removed-{store.uuid}"
    store.name = original[:NAME_MAX - len(suffix)] + suffix
    resolve_store_alerts(session, runtime, store)
    # Committed before the driver and the mount go: unmounting is I/O, and no process may pick
    # the store up again once they are released.
    session.commit()
    runtime.drivers.forget(store.id)
    if store.provider == "NFS":
        try:
            runtime.drivers.mounter.unmount(store.url)
        except StoreError as exc:  # the row is gone either way; a stale mount only wastes a mount point
            log.warning("image store %s (%s) deleted but its NFS mount stays: %s", original, store.uuid, exc)
    log.info("image store %s (%s) deleted", original, store.uuid)

