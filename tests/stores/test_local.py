"""Local-only behaviour: sparseness, ENOSPC, temp files, on-disk layout."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import timedelta

import pytest

from secstor.stores import Capability, LocalDriver, StoreError, StoreFull, copy_file_sparse
from secstor.stores.local import TMP_DIR
from tests.stores.helpers import tmpfs

pytestmark = pytest.mark.nodb

MiB = 1 << 20


def make_sparse(path, size=64 * MiB, data_at=10 * MiB, data=None):
    data = data or os.urandom(MiB)
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(data_at)
        f.write(data)
    return data


def allocated(path) -> int:
    return os.stat(path).st_blocks * 512


def file_sha(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def test_capabilities():
    assert {Capability.COPY_FILE_RANGE, Capability.SPARSE_READ, Capability.RANGE_READ} <= LocalDriver.capabilities
    assert Capability.SERVER_SIDE_COPY not in LocalDriver.capabilities


def test_root_must_be_absolute_and_is_created(tmp_path):
    with pytest.raises(ValueError, match="absolute"):
        LocalDriver("relative/store")
    root = tmp_path / "a" / "b" / "store"
    LocalDriver(root)
    assert root.is_dir()


def test_layout_is_plain_files(tmp_path):
    driver = LocalDriver(tmp_path)
    driver.put("template/tmpl/2/201/template.properties", [b"filename=x.qcow2\n"])
    assert (tmp_path / "template/tmpl/2/201/template.properties").read_bytes() == b"filename=x.qcow2\n"


def test_copy_within_keeps_holes(tmp_path):
    driver = LocalDriver(tmp_path)
    src = tmp_path / "volumes" / "sparse.raw"
    src.parent.mkdir()
    make_sparse(src)
    assert allocated(src) < 4 * MiB
    info = driver.copy_within("volumes/sparse.raw", "volumes/copy.raw")
    dst = tmp_path / "volumes" / "copy.raw"
    assert info.size == 64 * MiB == dst.stat().st_size
    assert allocated(dst) < 4 * MiB
    assert file_sha(dst) == file_sha(src)


def test_copy_file_sparse_across_file_systems_falls_back(tmp_path):
    """tmpfs -> ext4: copy_file_range says EXDEV, the read/write path must keep holes too."""
    with tmpfs(tmp_path / "fs", size="80m") as mnt:
        src = mnt / "sparse.raw"
        make_sparse(src, data_at=63 * MiB)  # data at the very end, a hole before it
        dst = tmp_path / "copy.raw"
        assert copy_file_sparse(src, dst) == 64 * MiB
        assert allocated(dst) < 4 * MiB
        assert file_sha(dst) == file_sha(src)


def test_copy_file_sparse_trailing_hole(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_sparse(src, size=32 * MiB, data_at=0)
    copy_file_sparse(src, dst)
    assert dst.stat().st_size == 32 * MiB
    assert file_sha(dst) == file_sha(src)


def test_writer_turns_zero_chunks_into_holes(tmp_path):
    driver = LocalDriver(tmp_path)
    tail = os.urandom(4096)
    driver.put("volumes/v.raw", [bytes(MiB)] * 32 + [tail] + [bytes(MiB)])
    path = tmp_path / "volumes" / "v.raw"
    assert path.stat().st_size == 33 * MiB + 4096
    assert allocated(path) < MiB
    assert b"".join(driver.open_reader("volumes/v.raw", offset=32 * MiB, length=4096)) == tail
    assert b"".join(driver.open_reader("volumes/v.raw", offset=32 * MiB + 4096)) == bytes(MiB)


def test_enospc_raises_store_full_and_leaves_no_temp(tmp_path):
    with tmpfs(tmp_path / "small", size="4m") as mnt:
        driver = LocalDriver(mnt)
        with pytest.raises(StoreFull):
            driver.put("iso/too-big.iso", [os.urandom(MiB) for _ in range(8)])
        assert os.listdir(mnt / TMP_DIR) == []
        assert driver.stat("iso/too-big.iso") is None
        assert list(driver.list()) == []

        driver.put("iso/fits.iso", [os.urandom(3 * MiB)])
        with pytest.raises(StoreFull):
            driver.copy_within("iso/fits.iso", "iso/copy.iso")
        assert os.listdir(mnt / TMP_DIR) == []
        assert [o.key for o in driver.list()] == ["iso/fits.iso"]


def test_stale_temp_files_are_hidden_then_cleaned(tmp_path):
    driver = LocalDriver(tmp_path)
    driver.put("a/b", [b"x"])
    stale = tmp_path / TMP_DIR / "deadbeef.part"
    stale.write_bytes(b"left by a crashed worker")
    old = time.time() - 3 * 3600
    os.utime(stale, (old, old))
    assert [o.key for o in driver.list()] == ["a/b"]
    assert [o.key for o in driver.list_dir("")] == ["a"]
    assert driver.abort_stale_writes(timedelta(hours=2)) == 1
    assert not stale.exists()


def test_file_directory_collision_is_a_store_error(tmp_path):
    driver = LocalDriver(tmp_path)
    driver.put("a", [b"file"])
    with pytest.raises(StoreError, match="collide"):
        driver.put("a/b", [b"under a file"])
    assert os.listdir(tmp_path / TMP_DIR) == []


def test_symlinks_are_not_listed(tmp_path):
    driver = LocalDriver(tmp_path / "store")
    (tmp_path / "outside").write_bytes(b"secret")
    driver.put("d/real", [b"r"])
    os.symlink(tmp_path / "outside", tmp_path / "store" / "d" / "link")
    assert [o.key for o in driver.list()] == ["d/real"]
    assert [o.key for o in driver.list_dir("d")] == ["d/real"]
