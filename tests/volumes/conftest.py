"""Fixtures of the volume tests: zones with their own image store and primary pools, tiny
templates downloaded from the real test HTTP server, clients that poll jobs quickly."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

# The template tests' fixtures: the HTTP server, tiny images, zones with Local stores.
from tests.templates.conftest import images, loopback_allowed, make_zone, serve, wait_for, web  # noqa: F401

MIB = 1 << 20
GIB = 1 << 30


def raw_image() -> bytes:
    """4 MiB: a 1 MiB pattern, a 2 MiB hole, another 1 MiB pattern."""
    return bytes(range(256)) * 4096 + bytes(2 * MIB) + (b"secstor-tail" * 87382)[:MIB]


@pytest.fixture(scope="session")
def fast_admin(server):
    """The admin client, polling jobs every 0.1 s (cs's default is 2 s)."""
    return server.cs(poll_interval=0.1, job_timeout=60, fetch_result=True)


@pytest.fixture(scope="session")
def fast_user(server, regular_user):
    return server.cs(key=regular_user.apikey, secret=regular_user.secretkey, poll_interval=0.1, job_timeout=60,
                     fetch_result=True)


@dataclass
class PoolZone:
    zone_id: str
    pools: dict[str, dict]  # format -> pool
    paths: dict[str, Path]

    def pool_file(self, fmt: str, rel: str) -> Path:
        return self.paths[fmt] / rel


@pytest.fixture
def pool_zone(fast_admin, make_zone, tmp_path) -> Callable[..., PoolZone]:
    """A new zone with its own Local image store and one primary pool per format asked for."""

    def make(*formats: str) -> PoolZone:
        zone = make_zone()
        pools, paths = {}, {}
        for fmt in formats:
            path = tmp_path / f"pool-{fmt.lower()}-{uuid.uuid4().hex[:6]}"
            pools[fmt] = fast_admin.createStoragePool(name=f"p-{path.name}", zoneid=zone.id, url=f"file://{path}",
                                                      scope="zone", volumeformat=fmt)["storagepool"]
            paths[fmt] = path
        return PoolZone(zone.id, pools, paths)

    return make


@pytest.fixture
def ready_template(fast_admin, serve, loopback_allowed) -> Callable[..., dict]:
    """Register a template from the test HTTP server (loopback downloads allowed) in a zone and
    wait until it is Ready."""

    def register(zone_id: str, content: bytes, fmt: str = "RAW", name: str | None = None, **params) -> dict:
        name = name or f"t-{uuid.uuid4().hex[:8]}"
        url = serve(content, f"disk.{fmt.lower()}")
        t = fast_admin.registerTemplate(name=name, displaytext=name, url=url, zoneid=zone_id, format=fmt,
                                        hypervisor="Simulator", ostypeid="1", **params)["template"][0]

        def ready():
            found = fast_admin.listTemplates(id=t["id"], templatefilter="all").get("template", [])
            # "size" too: on PostgreSQL a listing racing the copy's commit can show isready
            # before the template's size (its queries see different snapshots)
            return found[0] if found and found[0].get("isready") and "size" in found[0] else None

        return wait_for(ready)

    return register


def qemu_info(path: Path) -> dict:
    import json

    out = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(path)], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def raw_content(path: Path, fmt: str, tmp_path: Path) -> bytes:
    """The guest-visible bytes of a volume file."""
    if fmt == "RAW":
        return path.read_bytes()
    out = tmp_path / f"{uuid.uuid4().hex}.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(path), str(out)], check=True, capture_output=True)
    return out.read_bytes()
