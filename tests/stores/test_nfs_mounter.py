"""NfsMounter with stand-in ``mount`` programs that do real (tmpfs) mounts, or pretend to."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from secstor.stores import (
    NfsDriver,
    NfsMounter,
    NfsOptions,
    StoreUnavailable,
    is_mount_point,
    parse_nfs_url,
)
from tests.stores.helpers import tmpfs, unmount

pytestmark = [
    pytest.mark.nodb,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root"),
]

URL = "nfs://nfs1.example.test/export/secondary"
REFUSAL = "is not a mounted filesystem; refusing to write into the worker's own disk"


def fake_mount(bin_dir: Path, body: str) -> Path:
    """Write an executable stand-in for mount(8) that logs its argv, then runs ``body``."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "mount"
    log = bin_dir / "mount.log"
    script.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" >> {log}\n{body}\n')
    script.chmod(0o755)
    return script


def real_tmpfs_mount(bin_dir: Path) -> Path:
    real = shutil.which("mount")
    return fake_mount(bin_dir, f'exec {real} -t tmpfs -o size=16m tmpfs "${{@: -1}}"')


@pytest.fixture
def mount_root(tmp_path):
    root = tmp_path / "mnt"
    yield root
    if root.exists():
        for child in root.iterdir():
            unmount(child)


@pytest.mark.parametrize(
    "url,expected",
    [
        ("nfs://host/export", ("host", "/export")),
        ("nfs://10.0.0.5/export/path/", ("10.0.0.5", "/export/path")),
        ("NFS://host//a//b", ("host", "/a/b")),
        ("nfs://[fd00::1]/export", ("[fd00::1]", "/export")),
    ],
)
def test_parse_nfs_url(url, expected):
    assert parse_nfs_url(url) == expected


@pytest.mark.parametrize(
    "url,complaint",
    [
        ("http://host/export", "nfs://"),
        ("nfs:///export", "no host"),
        ("nfs://host", "no export"),
        ("nfs://host:2049/export", "port"),
        ("nfs://host/export/../etc", ".."),
        ("nfs://user@host/export", "no user"),
        ("/export", "nfs://"),
    ],
)
def test_parse_nfs_url_rejects(url, complaint):
    with pytest.raises(ValueError, match=complaint.replace(".", r"\.")):
        parse_nfs_url(url)


def test_mounts_with_the_documented_options_then_works(tmp_path, mount_root):
    script = real_tmpfs_mount(tmp_path / "bin")
    mounter = NfsMounter(mount_root, NfsOptions(mount_command=str(script)))
    mount_point = mounter.ensure_mounted(URL)

    assert mount_point == mount_root / hashlib.sha1(URL.encode()).hexdigest()[:16]
    argv = (tmp_path / "bin" / "mount.log").read_text().splitlines()
    assert argv == [
        "-t", "nfs",
        "-o", "vers=3,rsize=1048576,wsize=1048576,timeo=600,retrans=2,hard",
        "nfs1.example.test:/export/secondary",
        str(mount_point),
    ]
    assert is_mount_point(mount_point)

    driver = NfsDriver(URL, mounter)
    driver.put("template/tmpl/1/1/a.qcow2", [b"on the export"])
    assert b"".join(driver.open_reader("template/tmpl/1/1/a.qcow2")) == b"on the export"
    assert os.stat(mount_point / "template/tmpl/1/1/a.qcow2").st_dev != os.stat(tmp_path).st_dev
    assert [r.name for r in driver.probe()][0] == "mounted" and all(r.ok for r in driver.probe())

    assert mounter.ensure_mounted(URL) == mount_point  # already mounted: no second mount
    assert len((tmp_path / "bin" / "mount.log").read_text().splitlines()) == 6

    assert mounter.unmount(URL) is True
    assert not is_mount_point(mount_point)
    assert mounter.unmount(URL) is False


def test_version_and_extra_options(tmp_path, mount_root):
    script = real_tmpfs_mount(tmp_path / "bin")
    options = NfsOptions(version="4.1", timeo=100, retrans=5, extra="nconnect=4,proto=tcp", mount_command=str(script))
    NfsMounter(mount_root, options).ensure_mounted(URL)
    argv = (tmp_path / "bin" / "mount.log").read_text().splitlines()
    assert argv[3] == "vers=4.1,rsize=1048576,wsize=1048576,timeo=100,retrans=5,hard,nconnect=4,proto=tcp"


def test_mount_that_mounts_nothing_is_refused(tmp_path, mount_root):
    script = fake_mount(tmp_path / "bin", "exit 0")
    mounter = NfsMounter(mount_root, NfsOptions(mount_command=str(script)))
    with pytest.raises(StoreUnavailable, match=REFUSAL) as err:
        mounter.ensure_mounted(URL)
    mount_point = mounter.mount_point_for(URL)
    assert str(mount_point) in str(err.value)

    driver = NfsDriver(URL, mounter)
    with pytest.raises(StoreUnavailable, match=REFUSAL):
        driver.put("template/x", [b"must not land on the local disk"])
    [check] = driver.probe()
    assert check.name == "mounted" and not check.ok and REFUSAL in check.detail
    assert list(mount_point.iterdir()) == []  # nothing written into the plain directory


def test_failing_mount_carries_stderr(tmp_path, mount_root):
    script = fake_mount(
        tmp_path / "bin", 'echo "mount.nfs: access denied by server while mounting $5" >&2\nexit 32'
    )
    mounter = NfsMounter(mount_root, NfsOptions(mount_command=str(script)))
    with pytest.raises(StoreUnavailable) as err:
        mounter.ensure_mounted(URL)
    assert "exit 32" in str(err.value)
    assert "access denied by server while mounting nfs1.example.test:/export/secondary" in str(err.value)


def test_hanging_mount_times_out(tmp_path, mount_root):
    script = fake_mount(tmp_path / "bin", "exec sleep 30")
    mounter = NfsMounter(mount_root, NfsOptions(mount_command=str(script), command_timeout_s=0.5))
    with pytest.raises(StoreUnavailable, match="timed out"):
        mounter.ensure_mounted(URL)


def test_missing_mount_command(tmp_path, mount_root):
    mounter = NfsMounter(mount_root, NfsOptions(mount_command=str(tmp_path / "no-such-mount")))
    with pytest.raises(StoreUnavailable, match="cannot run"):
        mounter.ensure_mounted(URL)


def test_url_map_to_a_mounted_path_is_used_as_is(tmp_path, mount_root):
    never = fake_mount(tmp_path / "bin", "exit 99")  # proves no mount is attempted
    with tmpfs(tmp_path / "premounted") as export:
        mounter = NfsMounter(mount_root, NfsOptions(mount_command=str(never)), url_map={URL: export})
        assert mounter.ensure_mounted(URL) == export
        NfsDriver(URL, mounter).put("a/b", [b"x"])
        assert (export / "a" / "b").read_bytes() == b"x"
        assert mounter.unmount(URL) is False  # the operator's mount is left alone
        assert is_mount_point(export)


def test_url_map_to_a_plain_directory_is_refused(tmp_path, mount_root):
    plain = tmp_path / "plain"
    plain.mkdir()
    mounter = NfsMounter(mount_root, url_map={URL: plain})
    with pytest.raises(StoreUnavailable, match=REFUSAL):
        NfsDriver(URL, mounter).put("a/b", [b"x"])
    assert list(plain.iterdir()) == []


def test_url_map_to_root_is_refused(mount_root):
    with pytest.raises(StoreUnavailable, match=REFUSAL):
        NfsMounter(mount_root, url_map={URL: Path("/")}).ensure_mounted(URL)


def test_bind_mount_counts_as_mounted(tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
    try:
        assert not os.path.ismount(target)  # why mountinfo is consulted
        assert is_mount_point(target)
    finally:
        unmount(target)
    assert not is_mount_point(target)


def test_bad_url_fails_before_any_mount(mount_root):
    with pytest.raises(ValueError):
        NfsDriver("nfs://", NfsMounter(mount_root))
