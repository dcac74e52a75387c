"""Health checks, as an SSVM health check would run them: per store and for the host.

Per store: the driver's probe (``reachable`` for Local and S3, ``mounted`` for NFS: the mount
point must be a separate mounted file system; then ``writable``: a probe object written, read
back and deleted) and ``free space`` (fails above ``secondary.storage.capacity.threshold``,
where the store stops receiving new data). Global: ``database`` (reachable), ``clock skew``
between this host and the database server (leases and timestamps assume agreeing clocks;
warns above 5 s) and ``dns resolution`` of the hosts in ``secstorage.download.hosts.check``.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import or_, select, text
from sqlalchemy.exc import SQLAlchemyError

from secstor.db.models import ImageStore
from secstor.domain.capacity import percent_used, used_ratio
from secstor.domain.errors import InvalidParameter
from secstor.services.capacity import measure

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from secstor.runtime import Runtime

log = logging.getLogger("secstor.health")

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
CLOCK_SKEW_WARN_SECONDS = 5.0


@dataclass(frozen=True)
class HealthCheck:
    name: str
    status: str  # PASS | WARN | FAIL
    detail: str
    store_uuid: str | None = None  # None: a global check
    store_name: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != FAIL


def _database_now(conn: "Connection") -> datetime | None:
    """The database server's current UTC time, None for SQLite (a file: the clock is ours)."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        return None
    if dialect == "postgresql":
        # CURRENT_TIMESTAMP is frozen at the start of the transaction; clock_timestamp() is now.
        value = conn.scalar(text("SELECT clock_timestamp()"))
    elif dialect in ("mysql", "mariadb"):
        # CURRENT_TIMESTAMP is in the session's time zone and carries none; UTC_TIMESTAMP is UTC.
        value = conn.scalar(text("SELECT UTC_TIMESTAMP(6)"))
    else:
        value = conn.scalar(text("SELECT CURRENT_TIMESTAMP"))
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _global_checks(runtime: "Runtime") -> list[HealthCheck]:
    checks: list[HealthCheck] = []
    url = runtime.engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            and not Path(url.database).exists():
        # Connecting would create an empty database file: a health check must change nothing.
        return [HealthCheck("database", FAIL, f"SQLite database {url.database} does not exist")]
    try:
        with runtime.engine.connect() as conn:
            conn.scalar(text("SELECT 1"))
            checks.append(HealthCheck("database", PASS, f"{conn.dialect.name} database answers "
                                                        f"({url.render_as_string(hide_password=True)})"))
            before = datetime.now(timezone.utc)
            db_now = _database_now(conn)
            after = datetime.now(timezone.utc)
    except Exception as exc:  # any driver error means the same thing here: unreachable
        return [HealthCheck("database", FAIL, f"database unreachable: {exc}")]
    if db_now is None:
        checks.append(HealthCheck("clock skew", PASS, "0 s: SQLite runs on this host"))
    else:
        skew = (db_now - (before + (after - before) / 2)).total_seconds()
        direction = "ahead of" if skew >= 0 else "behind"
        status = WARN if abs(skew) > CLOCK_SKEW_WARN_SECONDS else PASS
        checks.append(HealthCheck("clock skew", status, f"the database clock is {abs(skew):.3f} s {direction} this "
                                                        f"host (warning above {CLOCK_SKEW_WARN_SECONDS:g} s)"))
    for host in runtime.settings.get("secstorage.download.hosts.check"):
        try:
            addresses = sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
        except OSError as exc:
            checks.append(HealthCheck("dns resolution", FAIL, f"{host} does not resolve: {exc}"))
        else:
            checks.append(HealthCheck("dns resolution", PASS, f"{host} resolves to {', '.join(addresses)}"))
    return checks


def check_store(runtime: "Runtime", store: ImageStore) -> list[HealthCheck]:
    def result(name: str, status: str, detail: str) -> HealthCheck:
        return HealthCheck(name, status, detail, store.uuid, store.name)

    try:
        driver = runtime.drivers.for_store(store)
        probes = driver.probe()
    except Exception as exc:  # a broken store must show up as a failed check, never stop the others
        return [result("reachable", FAIL, f"cannot open {store.url}: {exc}")]
    checks = [result(p.name, PASS if p.ok else FAIL, p.detail) for p in probes if p.name != "free space"]
    if not all(c.ok for c in checks):
        return checks  # the probe stopped at the first failing stage; later ones cannot pass
    threshold = float(runtime.settings.get("secondary.storage.capacity.threshold"))
    try:
        cap = measure(driver, store.capacity_bytes)
    except Exception as exc:
        checks.append(result("free space", FAIL, f"capacity unknown: {exc}"))
        return checks
    pct = percent_used(cap.total_bytes, cap.used_bytes)
    usage = f"{cap.free_bytes} bytes free of {cap.total_bytes} ({pct}% used"
    usage += ", capped by capacitybytes)" if store.capacity_bytes else ")"
    if used_ratio(cap.total_bytes, cap.used_bytes) > threshold:
        checks.append(result("free space", FAIL, f"{usage}: above secondary.storage.capacity.threshold "
                                                 f"{threshold:g}, no new data is placed here"))
    else:
        checks.append(result("free space", PASS, f"{usage}; limit secondary.storage.capacity.threshold {threshold:g}"))
    return checks


def run_health_checks(runtime: "Runtime", *, store_ref: str | None = None) -> list[HealthCheck]:
    """Global checks, then every live store's (or only the store named or identified by
    ``store_ref``). Raises InvalidParameter if ``store_ref`` names no live store."""
    checks = _global_checks(runtime)
    if not all(c.ok for c in checks if c.name == "database"):
        return checks
    stmt = select(ImageStore).where(ImageStore.removed.is_(None)).order_by(ImageStore.id)
    if store_ref is not None:
        stmt = stmt.where(or_(ImageStore.name == store_ref, ImageStore.uuid == store_ref))
    try:
        with runtime.session() as s:
            stores = list(s.scalars(stmt).unique())
            s.expunge_all()  # the probes can take a while; hold no transaction meanwhile
    except SQLAlchemyError as exc:  # e.g. a database whose schema was never created or upgraded
        return checks + [HealthCheck("database", FAIL, f"cannot read the image stores: {exc}")]
    if store_ref is not None and not stores:
        raise InvalidParameter(f"Unable to find image store {store_ref}", "id")
    for store in stores:
        store_checks = check_store(runtime, store)
        for c in store_checks:
            if not c.ok:
                log.warning("health check %s failed for image store %s (%s): %s", c.name, store.name, store.uuid,
                            c.detail)
        checks.extend(store_checks)
    return checks
