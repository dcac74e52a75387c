"""Health checks: runSecondaryStorageHealthCheck through the API, `secstor health` as a process,
and the DNS check through the service."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cs import CloudStackApiException

from secstor.db.models import ConfigurationValue
from secstor.security.secrets import SecretBox
from secstor.services.health import run_health_checks


def add_local(cs, path: Path, name: str, **params) -> dict:
    return cs.addImageStore(provider="Local", url=f"file://{path}", name=name, **params)["imagestore"]


def checks_of(cs, **params) -> list[dict]:
    return cs.runSecondaryStorageHealthCheck(**params)["healthcheck"]


def by_name(checks: list[dict], store_id: str) -> dict[str, dict]:
    return {c["checkname"]: c for c in checks if c.get("imagestoreid") == store_id}


@pytest.fixture
def broken_store(admin_cs, tmp_path, unique_name):
    """A Local store whose directory vanished and whose parent became a regular file."""
    parent = tmp_path / "parent"
    store = add_local(admin_cs, parent / "store", unique_name)
    shutil.rmtree(parent)
    parent.write_text("not a directory any more")
    yield store, parent / "store"
    parent.unlink()
    (parent / "store").mkdir(parents=True)
    admin_cs.deleteImageStore(id=store["id"])


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "secstor.cli.main", "health", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "COLUMNS": "250", **(env or {})})


def test_api_health_check_of_one_store_passes(admin_cs, db_url):
    default = admin_cs.listImageStores(name="default")["imagestore"][0]
    checks = checks_of(admin_cs, id=default["id"])
    glob = {c["checkname"]: c for c in checks if c["checktype"] == "global"}
    assert set(glob) == {"database", "clock skew"}
    assert all(c["success"] and c["status"] == "PASS" for c in checks), checks
    if db_url.startswith("sqlite"):
        assert glob["clock skew"]["details"] == "0 s: SQLite runs on this host"
    else:
        assert "s ahead of this host" in glob["clock skew"]["details"] or "s behind" in glob["clock skew"]["details"]
    store = by_name(checks, default["id"])
    assert set(store) == {"reachable", "writable", "free space"}
    assert all(c["imagestorename"] == "default" for c in store.values())
    assert "wrote, read back and deleted" in store["writable"]["details"]
    assert "limit secondary.storage.capacity.threshold 0.9" in store["free space"]["details"]


def test_api_health_check_of_an_unknown_store_is_431(admin_cs):
    with pytest.raises(CloudStackApiException) as err:
        admin_cs.runSecondaryStorageHealthCheck(id=str(uuid.uuid4()))
    assert err.value.error["errorcode"] == 431 and "image store" in err.value.error["errortext"]


def test_a_broken_store_fails_its_check_and_the_others_still_run(admin_cs, broken_store):
    store, path = broken_store
    checks = checks_of(admin_cs)
    failed = by_name(checks, store["id"])
    assert list(failed) == ["reachable"] and failed["reachable"]["success"] is False
    assert failed["reachable"]["status"] == "FAIL" and str(path) in failed["reachable"]["details"]
    default = admin_cs.listImageStores(name="default")["imagestore"][0]
    assert all(c["success"] for c in by_name(checks, default["id"]).values())


def test_free_space_fails_above_the_placement_threshold(admin_cs, tmp_path, unique_name):
    path = tmp_path / "nearly-full"
    store = add_local(admin_cs, path, unique_name)
    (path / "data").write_bytes(b"x" * 9_500)
    try:
        admin_cs.updateImageStore(id=store["id"], capacitybytes=10_000)
        checks = by_name(checks_of(admin_cs, id=store["id"]), store["id"])
        assert checks["writable"]["success"] is True
        free = checks["free space"]
        assert free["success"] is False
        assert "95% used" in free["details"] and "above secondary.storage.capacity.threshold 0.9" in free["details"]
    finally:
        admin_cs.deleteImageStore(id=store["id"])


def test_dns_check_resolves_the_configured_download_hosts(runtime):
    with runtime.session() as s:
        runtime.settings.set(s, "secstorage.download.hosts.check", "localhost, no-such-host.invalid")
    try:
        dns = [c for c in run_health_checks(runtime, store_ref="default") if c.name == "dns resolution"]
    finally:
        with runtime.session() as s:
            runtime.settings.reset(s, "secstorage.download.hosts.check")
    assert [(c.status, c.detail.split()[0]) for c in dns] == [("PASS", "localhost"), ("FAIL", "no-such-host.invalid")]
    assert "127.0.0.1" in dns[0].detail and "does not resolve" in dns[1].detail
    with runtime.session() as s:
        assert s.get(ConfigurationValue, "secstorage.download.hosts.check") is None
    assert not any(c.name == "dns resolution" for c in run_health_checks(runtime, store_ref="default"))


def test_cli_prints_each_check_and_exits_0_when_all_pass(runtime, db_url):
    result = run_cli("--home", str(runtime.config.home), "--database-url", db_url, "--store", "default")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for check in ("database", "clock skew", "reachable", "writable", "free space"):
        assert any(line.split()[:1] == ["PASS"] and check in line for line in lines), (check, result.stdout)
    assert "all 5 checks passed" in result.stdout


def test_cli_exits_1_and_shows_the_reason_when_a_check_fails(runtime, db_url, broken_store):
    store, path = broken_store
    result = run_cli("--home", str(runtime.config.home), "--database-url", db_url, "--store", store["name"])
    assert result.returncode == 1, result.stdout
    [line] = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert "reachable" in line and str(path) in line
    assert "1 of 3 checks failed" in result.stdout


def test_cli_usage_errors(runtime, db_url, tmp_path):
    home = ["--home", str(runtime.config.home), "--database-url", db_url]
    result = run_cli(*home, "--store", "no-such-store")
    assert result.returncode == 2 and "Unable to find image store no-such-store" in result.stdout
    result = run_cli("--home", str(tmp_path / "empty-home"), "--database-url", db_url)
    assert result.returncode == 1 and "FAIL" in result.stdout and "secret key file" in result.stdout
    assert not (tmp_path / "empty-home" / "secret.key").exists()  # a health check changes nothing


@pytest.mark.nodb
def test_cli_reports_a_missing_database_without_creating_it(tmp_path):
    home = tmp_path / "home"
    SecretBox.from_file(home / "secret.key", create=True)
    missing = tmp_path / "nowhere.db"
    result = run_cli("--home", str(home), "--database-url", f"sqlite:///{missing}")
    assert result.returncode == 1
    assert any(line.startswith("FAIL") and "database" in line and "does not exist" in line
               for line in result.stdout.splitlines()), result.stdout
    assert not missing.exists()
