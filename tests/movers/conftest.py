"""Fixtures for the data-path tests: one real local HTTP server for the session, real stores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from secstor.stores import LocalDriver
from tests.support.httpserver import TestHttpServer, http_server


@pytest.fixture(scope="session")
def web() -> Iterator[TestHttpServer]:
    """Shared by every test; each test serves its files under its own unique paths."""
    with http_server() as server:
        yield server


@pytest.fixture
def path_prefix() -> str:
    return f"/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(tmp_path) -> LocalDriver:
    return LocalDriver(tmp_path / "store")
