"""Chunk store fixtures: the same ChunkStore code over a Local directory and a real moto S3 server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from secstor.chunks import ChunkStore
from secstor.stores import LocalDriver, S3Driver
from tests.stores.helpers import s3_client, s3_config
from tests.support.moto import moto_server_process


@pytest.fixture(scope="session")
def chunks_moto() -> Iterator[str]:
    with moto_server_process() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(chunks_moto) -> Iterator[str]:
    client = s3_client(chunks_moto)
    name = f"chunks-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=name)
    yield name
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=obj["Key"])
    client.delete_bucket(Bucket=name)
    client.close()


def _make_store(kind: str, request, tmp_path, name: str) -> ChunkStore:
    if kind == "local":
        return ChunkStore(LocalDriver(tmp_path / name), "snapshots/1/7")
    driver = S3Driver(s3_config(request.getfixturevalue("chunks_moto"), request.getfixturevalue("s3_bucket"), prefix=name))
    request.addfinalizer(driver.close)
    return ChunkStore(driver, "snapshots/1/7")


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ChunkStore:
    return _make_store(request.param, request, tmp_path, "primary")


@pytest.fixture
def other_store(request, store, tmp_path) -> ChunkStore:
    """A second, independent store of the same kind (another image store holding copies)."""
    kind = "s3" if isinstance(store.driver, S3Driver) else "local"
    return _make_store(kind, request, tmp_path, "secondary")
