"""Fixtures of the migration tests: zones with capped Local stores of their own, templates seeded
straight into a store (private RAW images, so no template sync copies them elsewhere)."""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from secstor.db.models import Account, ImageStore, TemplateStoreRef, VMTemplate
from secstor.domain.states import DownloadState, ObjectInStoreState
from secstor.movers.transfer import write_verified
from secstor.services import templates as svc
from tests.templates.conftest import wait_for

MIB = 1 << 20


@dataclass
class Seeded:
    uuid: str
    id: int
    name: str
    sha256: str
    size: int


def image_bytes(size: int) -> bytes:
    return os.urandom(size)


@pytest.fixture
def seed(runtime) -> Callable[..., Seeded]:
    """Install a private RAW template of ``size`` bytes on the store with this UUID, Ready, with
    its template.properties, as a finished download leaves it."""

    def install(store_uuid: str, size: int = 64 * 1024, name: str | None = None) -> Seeded:
        content = image_bytes(size)
        name = name or f"t-{uuid.uuid4().hex[:10]}"
        with runtime.session() as s:
            store = s.scalars(select(ImageStore).where(ImageStore.uuid == store_uuid)).one()
            admin = s.scalars(select(Account).where(Account.role == "Admin").order_by(Account.id)).first()
            t = VMTemplate(name=name, displaytext=name, format="RAW", hypervisor="KVM", account_id=admin.id,
                           created=runtime.now())
            s.add(t)
            s.flush()
            ref = TemplateStoreRef(template_id=t.id, store_id=store.id, zone_id=store.zone_id,
                                   state=ObjectInStoreState.Allocated.value,
                                   download_state=DownloadState.NOT_DOWNLOADED.value, created=runtime.now())
            s.add(ref)
            s.flush()
            ids = (t.id, t.uuid, ref.id)

        def fetch(driver, key, expected, algorithms, progress):
            return write_verified(driver, key, [content], expected=expected, algorithms=algorithms, size_hint=size)

        svc.download_copy(runtime, ids[2], lambda pct: None, logging.getLogger("test"), fetch=fetch)
        return Seeded(ids[1], ids[0], name, hashlib.sha256(content).hexdigest(), size)

    return install


@dataclass
class Zone:
    id: str
    stores: list[dict]
    paths: list[Path]


@pytest.fixture
def zone(admin_cs, tmp_path, unique_name) -> Callable[..., Zone]:
    """A new zone with Local stores at the given caps (capacitybytes; None: the file system's)."""

    def make(*caps: int | None, paths: list[Path] | None = None) -> Zone:
        suffix = uuid.uuid4().hex[:6]
        z = admin_cs.createZone(name=f"z-{unique_name}-{suffix}", dns1="8.8.8.8", internaldns1="8.8.8.8")["zone"]
        stores, where = [], []
        for i, cap in enumerate(caps):
            path = paths[i] if paths else tmp_path / f"store-{suffix}-{i}"
            store = admin_cs.addImageStore(provider="Local", url=f"file://{path}", name=f"m{i}-{unique_name}-{suffix}",
                                           zoneid=z["id"])["imagestore"]
            if cap:
                store = admin_cs.updateImageStore(id=store["id"], capacitybytes=cap)["imagestore"]
            stores.append(store)
            where.append(path)
        return Zone(z["id"], stores, where)

    return make


def copies(runtime, template_id: int) -> dict[int, str]:
    """store id -> state of every copy of the template."""
    with runtime.session() as s:
        return {r.store_id: r.state for r in s.scalars(select(TemplateStoreRef)
                                                      .where(TemplateStoreRef.template_id == template_id))}


def store_id(runtime, store_uuid: str) -> int:
    with runtime.session() as s:
        return s.scalar(select(ImageStore.id).where(ImageStore.uuid == store_uuid))


def read_back(runtime, store_uuid: str, template_id: int) -> str:
    """SHA-256 of the template's image as the store's driver reads it back."""
    with runtime.session() as s:
        store = s.scalars(select(ImageStore).where(ImageStore.uuid == store_uuid)).one()
        ref = s.scalars(select(TemplateStoreRef).where(TemplateStoreRef.template_id == template_id,
                                                       TemplateStoreRef.store_id == store.id)).one()
        s.expunge_all()
    digest = hashlib.sha256()
    for chunk in runtime.drivers.for_store(store).open_reader(ref.install_path):
        digest.update(chunk)
    return digest.hexdigest()


def finished(cs, jobid: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (lambda j: j if j["jobstatus"] != 0 else None)(cs.queryAsyncJobResult(jobid=jobid)),
                    timeout=timeout)


def ready_only_on(runtime, template: Seeded, store_uuid: str) -> bool:
    return copies(runtime, template.id) == {store_id(runtime, store_uuid): ObjectInStoreState.Ready.value}
