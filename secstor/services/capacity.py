"""Capacity of image stores: measuring, recording, and the alerts a store's fill level raises.

A scan measures every live store periodically (``secstorage.capacityscan.interval``) and at
once after a store is added or its cap changes:

- without ``capacity_bytes``: total and used as the driver reports them (Local and NFS: the
  file system's statvfs, so used counts everything on that disk; S3: the bucket's configured
  quota or 1 PiB, and the bytes under the store's prefix);
- with ``capacity_bytes`` (the operator's cap): total = the cap, used = the sum of the sizes of
  the objects held under the store (for Local and NFS the store's directory tree, not the whole
  file system). That is what lets several stores that share one disk be balanced.

A store whose scan fails keeps its last values and gets an ``ALERT.STORAGE.MISC`` alert; a store
above ``secstorage.capacity.alert.threshold`` gets one ``ALERT.STORAGE.SECONDARY`` alert, not
repeated while the condition lasts and marked resolved once it clears.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from secstor.db.models import Alert, ImageStore
from secstor.domain.capacity import (
    ALERT_NAMES,
    ALERT_TYPE_SECONDARY_STORAGE,
    ALERT_TYPE_STORAGE_MISC,
    capacity_over_threshold,
    percent_used,
)
from secstor.services.background import periodic_task
from secstor.stores.base import Capacity

if TYPE_CHECKING:
    from secstor.runtime import Runtime
    from secstor.stores.base import StoreDriver

log = logging.getLogger("secstor.capacity")

_SUBJECT_MAX = 1024  # Alert.subject column length


def measure(driver: "StoreDriver", capacity_bytes: int | None) -> Capacity:
    """Total and used bytes of one store (see the module docstring for the two cases)."""
    if capacity_bytes:
        return Capacity(total_bytes=capacity_bytes, used_bytes=sum(info.size for info in driver.list("")))
    return driver.capacity()


@dataclass(frozen=True)
class Measurement:
    """The outcome of measuring one store: its capacity, or why it could not be measured.

    It carries the alert threshold too: settings must be read with no transaction open (a
    settings read uses its own connection, which on SQLite would wait for the write lock our
    own transaction holds).
    """

    capacity_bytes: int | None  # the cap it was measured under
    alert_threshold: float
    capacity: Capacity | None = None
    error: str | None = None


def alert_threshold(runtime: "Runtime") -> float:
    return float(runtime.settings.get("secstorage.capacity.alert.threshold"))


def measure_store(runtime: "Runtime", store: ImageStore) -> Measurement:
    """Measure a store (I/O: call it with no transaction open). Never raises."""
    threshold = alert_threshold(runtime)
    try:
        cap = measure(runtime.drivers.for_store(store), store.capacity_bytes)
    except Exception as exc:  # any driver failure (OS, S3, mount, config) is a failed scan, never a crash
        log.warning("capacity scan of image store %s (%s) failed: %s", store.name, store.uuid, exc)
        return Measurement(store.capacity_bytes, threshold, error=str(exc) or type(exc).__name__)
    return Measurement(store.capacity_bytes, threshold, capacity=cap)


def _locked_store(session: Session, store_id: int) -> ImageStore | None:
    """The live store row, locked for this transaction, so that two processes recording at once
    cannot both open the same alert. SQLite ignores FOR UPDATE; it has one writer anyway."""
    # Lock by the id column alone: the row's joined zone is an outer join, which PostgreSQL
    # refuses to lock.
    stmt = select(ImageStore.id).where(ImageStore.id == store_id, ImageStore.removed.is_(None))
    if session.scalar(stmt.with_for_update()) is None:
        return None
    return session.get(ImageStore, store_id)


def _open_alert(session: Session, store_id: int, alert_type: int) -> Alert | None:
    # A locking read: under MySQL's REPEATABLE READ a plain read could miss an alert another
    # transaction committed after ours began.
    return session.scalars(select(Alert).where(
        Alert.image_store_id == store_id, Alert.type == alert_type, Alert.resolved.is_(None),
    ).order_by(Alert.id).with_for_update()).first()


def _raise_alert(session: Session, runtime: "Runtime", store: ImageStore, alert_type: int, subject: str,
                 description: str) -> None:
    if _open_alert(session, store.id, alert_type) is not None:
        return  # the condition persists: one alert per episode, not one per scan
    session.add(Alert(type=alert_type, name=ALERT_NAMES[alert_type], subject=subject[:_SUBJECT_MAX],
                      description=description, zone_id=store.zone_id, image_store_id=store.id,
                      created=runtime.now()))
    log.warning("alert %s for image store %s (%s): %s", ALERT_NAMES[alert_type], store.name, store.uuid, subject)


def _resolve_alert(session: Session, runtime: "Runtime", store: ImageStore, alert_type: int) -> None:
    alert = _open_alert(session, store.id, alert_type)
    if alert is not None:
        alert.resolved = runtime.now()
        log.info("alert %s %s for image store %s (%s) resolved", alert.name, alert.uuid, store.name, store.uuid)


def resolve_store_alerts(session: Session, runtime: "Runtime", store: ImageStore) -> None:
    """Close every open alert of a store (it is being deleted)."""
    for alert_type in ALERT_NAMES:
        _resolve_alert(session, runtime, store, alert_type)


def _record_capacity(session: Session, runtime: "Runtime", store: ImageStore, cap: Capacity,
                     threshold: float) -> None:
    store.total_bytes, store.used_bytes = cap.total_bytes, cap.used_bytes
    store.capacity_scanned_at = runtime.now()
    _resolve_alert(session, runtime, store, ALERT_TYPE_STORAGE_MISC)
    if capacity_over_threshold(cap.total_bytes, cap.used_bytes, threshold):
        pct = percent_used(cap.total_bytes, cap.used_bytes)
        where = f"zone {store.zone.name}" if store.zone is not None else "region scope"
        _raise_alert(
            session, runtime, store, ALERT_TYPE_SECONDARY_STORAGE,
            f"System Alert: Low Available Secondary Storage in image store {store.name} ({where}): {pct}% used",
            f"Image store {store.name} ({store.uuid}) uses {cap.used_bytes} of {cap.total_bytes} bytes ({pct}%), "
            f"above secstorage.capacity.alert.threshold {threshold:g}.",
        )
    else:
        _resolve_alert(session, runtime, store, ALERT_TYPE_SECONDARY_STORAGE)
    log.debug("image store %s (%s): %d of %d bytes used", store.name, store.uuid, cap.used_bytes, cap.total_bytes)


def record_measurement(session: Session, runtime: "Runtime", store_id: int, m: Measurement) -> None:
    """Record a measurement and open or resolve the store's alerts.

    A failed scan keeps the last values (they are the best estimate) and raises an alert. A
    measurement taken under a cap that has changed since is dropped: whoever changed the cap
    measures again.
    """
    store = _locked_store(session, store_id)
    if store is None or store.capacity_bytes != m.capacity_bytes:
        return
    if m.capacity is not None:
        _record_capacity(session, runtime, store, m.capacity, m.alert_threshold)
    else:
        _raise_alert(session, runtime, store, ALERT_TYPE_STORAGE_MISC,
                     f"Capacity scan of image store {store.name} failed: {m.error}",
                     f"Image store {store.name} ({store.uuid}, {store.url}) could not be measured: {m.error}")


def refresh_capacity(session: Session, runtime: "Runtime", stores: list[ImageStore]) -> None:
    """Measure stores now and record the results in ``session``.

    Commits ``session`` first: measuring is I/O (seconds over a network) and must not run inside
    a transaction, which on SQLite holds the database's only write lock.
    """
    session.commit()
    measurements = [(store.id, measure_store(runtime, store)) for store in stores]
    for store_id, m in measurements:
        record_measurement(session, runtime, store_id, m)


def scan_interval_seconds(runtime: "Runtime") -> float:
    return int(runtime.settings.get("secstorage.capacityscan.interval")) / 1000.0


def scan_all(runtime: "Runtime") -> None:
    """Measure every live store, each with no transaction open, and record it in a short one.

    Every process with background services runs this; a store scanned within the last half
    interval (by this or another process) is skipped, so each store is measured about once per
    interval however many workers there are.
    """
    with runtime.session() as s:
        store_ids = list(s.scalars(select(ImageStore.id).where(ImageStore.removed.is_(None)).order_by(ImageStore.id)))
    for store_id in store_ids:
        # Read each row just before measuring: a stale row (say, old S3 keys) would make the
        # driver cache swap the current driver back to an outdated one.
        with runtime.session() as s:
            store = s.get(ImageStore, store_id)
        fresh_after = runtime.now().timestamp() - scan_interval_seconds(runtime) / 2
        if store is None or store.removed is not None or (
                store.capacity_scanned_at is not None and store.capacity_scanned_at.timestamp() > fresh_after):
            continue
        m = measure_store(runtime, store)
        with runtime.session() as s:
            record_measurement(s, runtime, store_id, m)


@periodic_task("capacity-scan", scan_interval_seconds)
def _periodic_capacity_scan(runtime: "Runtime") -> None:
    scan_all(runtime)
