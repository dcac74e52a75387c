"""Fixtures of the region tests: two new zones, a region-wide S3 store on a real moto server and
one Local staging store per zone. The region store becomes every zone's home for new templates,
so it exists only while this package's tests run and is removed (or at least made read-only,
which keeps placement away from it) before any other test registers a template."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.stores.helpers import s3_client
from tests.support.moto import moto_server_process
from tests.templates.conftest import images, loopback_allowed, serve, web  # noqa: F401 (fixtures)


@dataclass
class Region:
    store: dict
    bucket: str
    s3: object
    zones: list[dict]
    staging: list[dict]
    staging_paths: list[Path]

    def objects(self) -> list[str]:
        return sorted(o["Key"] for o in self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", []))


@pytest.fixture(scope="package")
def region(admin_cs, tmp_path_factory) -> Iterator[Region]:
    suffix = uuid.uuid4().hex[:8]
    base = tmp_path_factory.mktemp("region")
    with moto_server_process() as endpoint:
        s3 = s3_client(endpoint)
        bucket = f"region-{suffix}"
        s3.create_bucket(Bucket=bucket)
        store = admin_cs.addImageStoreS3(accesskey="testing", secretkey="testing", endpoint=endpoint, bucket=bucket,
                                         usehttps=False, name=f"region-{suffix}")["imagestore"]
        zones, staging, paths = [], [], []
        try:
            for i in (1, 2):
                zone = admin_cs.createZone(name=f"rz{i}-{suffix}", dns1="8.8.8.8", internaldns1="8.8.8.8")["zone"]
                path = base / f"staging{i}"
                staging.append(admin_cs.createSecondaryStagingStore(url=f"file://{path}",
                                                                    zoneid=zone["id"])["secondarystorage"])
                zones.append(zone)
                paths.append(path)
            yield Region(store, bucket, s3, zones, staging, paths)
        finally:
            admin_cs.updateImageStore(id=store["id"], readonly=True)
            for s in staging:
                admin_cs.deleteSecondaryStagingStore(id=s["id"])
            admin_cs.deleteImageStore(id=store["id"])


@dataclass
class LegacyZone:
    zone: dict
    store: dict
    path: Path


@pytest.fixture
def legacy_zone(admin_cs, region, tmp_path) -> Iterator[LegacyZone]:
    """A zone of its own with a Local image store and no staging store: it does not use the region
    store until a test gives it a staging store. Templates registered there while the region store
    is read-only are the "pre-existing" ones the region sync uploads."""
    suffix = uuid.uuid4().hex[:8]
    zone = admin_cs.createZone(name=f"lz-{suffix}", dns1="8.8.8.8", internaldns1="8.8.8.8")["zone"]
    path = tmp_path / "zone-store"
    store = admin_cs.addImageStore(provider="Local", url=f"file://{path}", zoneid=zone["id"],
                                   name=f"lz-{suffix}")["imagestore"]
    yield LegacyZone(zone, store, path)
    # What a failed test left on the zone's store goes first (everywhere), or the store stays.
    for listing, kind, delete in ((admin_cs.listTemplates, "template", admin_cs.deleteTemplate),
                                  (admin_cs.listIsos, "iso", admin_cs.deleteIso)):
        for item in listing(**{f"{kind}filter": "all", "zoneid": zone["id"]}).get(kind, []):
            if store["name"] in [d["datastore"] for d in item.get("downloaddetails", [])]:
                delete(id=item["id"], fetch_result=True)
    for staging in admin_cs.listSecondaryStagingStores(zoneid=zone["id"]).get("imagestore", []):
        admin_cs.deleteSecondaryStagingStore(id=staging["id"])
    admin_cs.deleteImageStore(id=store["id"])
    admin_cs.deleteZone(id=zone["id"])


@pytest.fixture(scope="package")
def quick_cs(server):
    """An admin client polling async jobs every 0.1 s (the default second makes each job cost one)."""
    return server.cs(poll_interval=0.1, job_timeout=60)
