"""Fixtures for the store drivers: a real moto S3 server, real tmpfs mounts, real directories."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from secstor.stores import LocalDriver, NfsDriver, NfsMounter, S3Driver
from tests.stores.helpers import s3_client, s3_config, tmpfs
from tests.support.moto import moto_server_process

NFS_URL = "nfs://nfs.example.test/export/secondary"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Endpoint "127.0.0.1:PORT" of a moto S3 server shared by the session (no auth checks)."""
    with moto_server_process() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def s3_admin(moto_server):
    """A plain boto3 client, to look at the bucket behind the driver's back."""
    client = s3_client(moto_server)
    yield client
    client.close()


@pytest.fixture
def bucket(s3_admin) -> Iterator[str]:
    """A fresh bucket per test, emptied and removed afterwards so moto's memory stays small."""
    name = f"t-{uuid.uuid4().hex}"
    s3_admin.create_bucket(Bucket=name)
    yield name
    for upload in s3_admin.list_multipart_uploads(Bucket=name).get("Uploads", []):
        s3_admin.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in s3_admin.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3_admin.delete_object(Bucket=name, Key=obj["Key"])
    s3_admin.delete_bucket(Bucket=name)


@pytest.fixture
def s3_driver(moto_server, bucket) -> Iterator[S3Driver]:
    driver = S3Driver(s3_config(moto_server, bucket))
    yield driver
    driver.close()


@pytest.fixture
def local_driver(tmp_path) -> LocalDriver:
    return LocalDriver(tmp_path / "store")


@pytest.fixture
def nfs_driver(tmp_path) -> Iterator[NfsDriver]:
    """NfsDriver over an operator-mapped mount point; a tmpfs stands in for the export."""
    with tmpfs(tmp_path / "export", size="256m") as export:
        mounter = NfsMounter(tmp_path / "mnt", url_map={NFS_URL: export})
        yield NfsDriver(NFS_URL, mounter)


@pytest.fixture(params=["local", "s3", "nfs"])
def driver(request):
    return request.getfixturevalue(f"{request.param}_driver")
