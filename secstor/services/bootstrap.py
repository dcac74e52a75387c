"""First start of an empty home: database, admin account and keys, zone1, default stores."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from secstor.config import Config
from secstor.db.migrate import upgrade
from secstor.db.models import Account, ImageStore, StoragePool, User, Zone
from secstor.runtime import Runtime
from secstor.services.accounts import create_account, generate_keys

log = logging.getLogger("secstor.bootstrap")


@dataclass
class BootstrapResult:
    created: bool
    admin_keys: dict[str, str] | None = None


def write_private_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
        fh.write("\n")
    os.replace(tmp, path)


def open_runtime(config: Config, **kwargs) -> Runtime:
    """A Runtime on an up-to-date schema (creating the home and key file when missing)."""
    config.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    runtime = Runtime(config, create_key=True, **kwargs)
    upgrade(runtime.engine)
    return runtime


def bootstrap(runtime: Runtime) -> BootstrapResult:
    """Idempotent: creates what a first user needs only if no admin exists yet."""
    home = runtime.config.home
    with runtime.session() as s:
        if s.scalars(select(Account).where(Account.role == "Admin")).first() is not None:
            return BootstrapResult(created=False)
    try:
        with runtime.session() as s:
            account = create_account(s, runtime, name="admin", role="Admin", username="admin", password=None)
            user = s.scalars(select(User).where(User.account_id == account.id)).one()
            api_key, secret = generate_keys(runtime, user)
            zone = Zone(name="zone1", description="created on first start", created=runtime.now())
            s.add(zone)
            s.flush()
            store_path = home / "stores" / "default"
            primary_path = home / "primary"
            store_path.mkdir(parents=True, exist_ok=True)
            primary_path.mkdir(parents=True, exist_ok=True)
            s.add(ImageStore(name="default", zone_id=zone.id, provider="Local", protocol="file",
                             url=f"file://{store_path}", scope="ZONE", role="Image", created=runtime.now()))
            s.add(StoragePool(name="primary", zone_id=zone.id, provider="Local", url=f"file://{primary_path}",
                              path=str(primary_path), created=runtime.now()))
    except IntegrityError:
        # Another process sharing the database bootstrapped at the same moment.
        return BootstrapResult(created=False)
    keys = {"apikey": api_key, "secretkey": secret}
    write_private_json(home / "admin-keys.json", keys)
    log.info("first start: created admin account, zone1, image store 'default' and primary pool in %s", home)
    return BootstrapResult(created=True, admin_keys=keys)
