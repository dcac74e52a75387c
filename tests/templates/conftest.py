"""Fixtures of the template tests: the real HTTP server images are downloaded from, tiny images,
zones with their own Local stores (so placement is not disturbed by other tests' stores)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.movers.test_inspect import iso_bytes
from tests.support.httpserver import TestHttpServer, http_server

MIB = 1 << 20


@pytest.fixture(scope="session")
def web() -> Iterator[TestHttpServer]:
    with http_server() as server:
        yield server


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, bytes]:
    """name -> bytes: a qcow2 (2 MiB virtual), a qcow2 with a backing file, an ISO."""
    d = tmp_path_factory.mktemp("template-images")

    def qemu_img(*args: str) -> None:
        subprocess.run(["qemu-img", *args], cwd=d, check=True, capture_output=True)

    qemu_img("create", "-f", "qcow2", "disk.qcow2", "2M")
    qemu_img("create", "-f", "qcow2", "-b", "disk.qcow2", "-F", "qcow2", "overlay.qcow2")
    return {"qcow2": (d / "disk.qcow2").read_bytes(), "overlay": (d / "overlay.qcow2").read_bytes(),
            "iso": iso_bytes(64)}


@pytest.fixture
def serve(web) -> Callable[..., str]:
    """Serve bytes under a path of this test's own; returns the URL."""

    def add(content: bytes, name: str = "image", **kwargs: Any) -> str:
        return web.add(f"/{uuid.uuid4().hex[:12]}/{name}", content, **kwargs)

    return add


def _set_setting(cs, name: str, value: str) -> None:
    cs.updateConfiguration(name=name, value=value)


@pytest.fixture(scope="session")
def loopback_allowed(admin_cs) -> Iterator[None]:
    """Downloads from the local test HTTP server (127.0.0.1) are allowed while these tests run."""
    name = "secstorage.allowed.internal.sites"
    before = admin_cs.listConfigurations(name=name)["configuration"][0].get("value", "")
    _set_setting(admin_cs, name, "127.0.0.0/8")
    time.sleep(1.2)  # the server's settings cache holds values for a second
    yield
    _set_setting(admin_cs, name, before)


class ZoneWithStores:
    def __init__(self, zone: dict, stores: list[dict], paths: list[Path]):
        self.zone, self.stores, self.paths = zone, stores, paths

    @property
    def id(self) -> str:
        return self.zone["id"]

    def files(self, index: int) -> list[Path]:
        """Every file on store ``index``."""
        return sorted(p for p in self.paths[index].rglob("*") if p.is_file())


@pytest.fixture
def make_zone(admin_cs, tmp_path, unique_name) -> Callable[..., ZoneWithStores]:
    """A new zone with ``stores`` Local image stores of its own (``readonly`` indexes read-only)."""

    def make(stores: int = 1, readonly: tuple[int, ...] = ()) -> ZoneWithStores:
        suffix = uuid.uuid4().hex[:6]
        zone = admin_cs.createZone(name=f"z-{unique_name}-{suffix}", dns1="8.8.8.8", internaldns1="8.8.8.8")["zone"]
        made, paths = [], []
        for i in range(stores):
            path = tmp_path / f"store-{suffix}-{i}"
            store = admin_cs.addImageStore(provider="Local", url=f"file://{path}", name=f"s{i}-{unique_name}-{suffix}",
                                           zoneid=zone["id"])["imagestore"]
            if i in readonly:
                store = admin_cs.updateImageStore(id=store["id"], readonly=True)["imagestore"]
            made.append(store)
            paths.append(path)
        return ZoneWithStores(zone, made, paths)

    return make


def wait_for(fn: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll ``fn`` until it returns something truthy; fail with its last value at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        time.sleep(interval)
