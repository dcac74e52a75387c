"""One contract, every driver: the same tests run against Local, S3 (moto) and NFS (tmpfs).

A behaviour that differs between providers is a bug in a driver, not a special case here;
provider-specific checks at the end only look *behind* the driver (ETags, temp dirs).
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import tracemalloc
from datetime import datetime, timedelta, timezone

import pytest

from secstor.stores import ObjectNotFound, StoreError
from secstor.stores.local import TMP_DIR

pytestmark = pytest.mark.nodb

MiB = 1 << 20


def blocks(n_mib: int, seed: int = 0):
    """n MiB of pseudo-random data, cheaply: one random block, each copy stamped with its
    index so that reordered or repeated parts change the digest."""
    base = random.Random(seed).randbytes(MiB)
    for i in range(n_mib):
        yield i.to_bytes(8, "big") + base[8:]


def sha256(chunks) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def posix_root(driver):
    return driver.mounter.mount_point_for(driver.url) if driver.provider == "NFS" else driver.root


def read(driver, key, **kw) -> bytes:
    return b"".join(driver.open_reader(key, **kw))


def test_put_stat_get_round_trip(driver):
    data = os.urandom(3 * MiB + 123)
    pieces = [data[i : i + 700_000] for i in range(0, len(data), 700_000)]
    info = driver.put("template/tmpl/2/201/201-2-abc.qcow2", pieces)
    assert info.key == "template/tmpl/2/201/201-2-abc.qcow2"
    assert info.size == len(data) and not info.is_dir
    st = driver.stat(info.key)
    assert st.size == len(data)
    assert st.modified.tzinfo is not None and st.modified.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - st.modified) < timedelta(minutes=5)
    chunks = list(driver.open_reader(info.key, chunk_size=MiB))
    assert b"".join(chunks) == data
    assert all(len(c) <= MiB for c in chunks)


def test_empty_object(driver):
    info = driver.put("volumes/empty.raw", [])
    assert info.size == 0
    assert driver.stat("volumes/empty.raw").size == 0
    assert read(driver, "volumes/empty.raw") == b""
    assert read(driver, "volumes/empty.raw", offset=0, length=10) == b""


@pytest.mark.parametrize(
    "offset,length",
    [
        (0, None),
        (10, 100),
        (MiB - 5, 10),  # straddles the first chunk boundary
        (100_000, 2 * MiB),  # many chunks, ends mid-chunk
        (5, 0),
    ],
)
def test_ranged_read(driver, offset, length):
    data = os.urandom(2 * MiB + MiB // 2)
    driver.put("iso/range.iso", [data])
    end = None if length is None else offset + length
    got = list(driver.open_reader("iso/range.iso", offset=offset, length=length, chunk_size=256 * 1024))
    assert b"".join(got) == data[offset:end]
    assert all(len(c) <= 256 * 1024 for c in got)


def test_ranged_read_past_end_is_truncated(driver):
    data = os.urandom(1000)
    driver.put("iso/small.iso", [data])
    assert read(driver, "iso/small.iso", offset=990, length=100) == data[990:]
    assert read(driver, "iso/small.iso", offset=1000) == b""
    assert read(driver, "iso/small.iso", offset=5000, length=10) == b""
    with pytest.raises(ValueError):
        driver.open_reader("iso/small.iso", offset=-1)


def test_missing_object(driver):
    assert driver.stat("no/such/object") is None
    with pytest.raises(ObjectNotFound):
        driver.open_reader("no/such/object")  # raises at call time, before iteration
    with pytest.raises(ObjectNotFound):
        driver.copy_within("no/such/object", "elsewhere")


def test_directory_is_not_an_object(driver):
    driver.put("dir/file", [b"x"])
    assert driver.stat("dir") is None
    with pytest.raises(ObjectNotFound):
        driver.open_reader("dir")


KEYS = [
    "template/tmpl/2/201/template.properties",
    "template/tmpl/2/201/201-2-abc.qcow2",
    "template/tmpl/2/20/20-2-def.vhd",
    "template/tmpl/2/2-x",
    "snapshots/1/2/snap1",
    "a.b",
    "a-b/c",
    "a/b",
]


def test_list_sorted_by_key_with_string_prefix(driver):
    for i, key in enumerate(random.Random(1).sample(KEYS, len(KEYS))):
        driver.put(key, [b"k" * i])
    listed = list(driver.list())
    assert [o.key for o in listed] == sorted(KEYS)
    assert {o.key: o.size for o in listed} == {o.key: driver.stat(o.key).size for o in listed}
    assert [o.key for o in driver.list("template/tmpl/2/20")] == [
        "template/tmpl/2/20/20-2-def.vhd",
        "template/tmpl/2/201/201-2-abc.qcow2",
        "template/tmpl/2/201/template.properties",
    ]
    assert [o.key for o in driver.list("template/tmpl/2/20/")] == ["template/tmpl/2/20/20-2-def.vhd"]
    assert list(driver.list("nothing/here")) == []


def test_list_hides_unfinished_writes(driver):
    driver.put("done/one", [b"1"])
    with driver.open_writer("done/two") as writer:
        writer.write(os.urandom(6 * MiB))  # enough to start a multipart upload on S3
        assert [o.key for o in driver.list()] == ["done/one"]
        assert [o.key for o in driver.list_dir("")] == ["done"]
        assert driver.stat("done/two") is None
    assert [o.key for o in driver.list()] == ["done/one"]


def test_list_dir(driver):
    for key in KEYS:
        driver.put(key, [b"12345"])
    root = driver.list_dir("")
    assert [(o.key, o.is_dir) for o in root] == [
        ("a", True), ("a-b", True), ("a.b", False), ("snapshots", True), ("template", True),
    ]
    assert next(o for o in root if o.key == "a.b").size == 5
    tmpl = driver.list_dir("template/tmpl/2")
    assert [(o.key, o.is_dir) for o in tmpl] == [
        ("template/tmpl/2/2-x", False),
        ("template/tmpl/2/20", True),
        ("template/tmpl/2/201", True),
    ]
    assert driver.list_dir("template/tmpl/2/") == tmpl
    assert all(o.modified.tzinfo is not None for o in tmpl)
    with pytest.raises(ObjectNotFound):
        driver.list_dir("template/tmpl/3")
    with pytest.raises(ObjectNotFound):
        driver.list_dir("a.b")  # an object is not a directory


def test_delete_is_idempotent_and_prunes(driver):
    driver.put("snapshots/1/2/snap", [b"data"])
    assert driver.delete("snapshots/1/2/snap") is True
    assert driver.delete("snapshots/1/2/snap") is False
    assert driver.stat("snapshots/1/2/snap") is None
    assert list(driver.list()) == []
    with pytest.raises(ObjectNotFound):  # no empty directories linger (S3 has none)
        driver.list_dir("snapshots")


def test_delete_prefix_is_a_directory(driver):
    keys = ["snapshots/1/a", "snapshots/1/b/c", "snapshots/10/x", "snapshots/1b", "volumes/1/v"]
    for key in keys:
        driver.put(key, [b"z"])
    assert driver.delete_prefix("snapshots/1") == 2
    assert [o.key for o in driver.list()] == ["snapshots/10/x", "snapshots/1b", "volumes/1/v"]
    assert driver.delete_prefix("snapshots/10/") == 1
    assert driver.delete_prefix("nothing") == 0
    with pytest.raises(ValueError):
        driver.delete_prefix("")
    assert [o.key for o in driver.list()] == ["snapshots/1b", "volumes/1/v"]


def test_overwrite_replaces_whole_object(driver):
    driver.put("iso/x.iso", [b"a" * 5000])
    driver.put("iso/x.iso", [b"b" * 10])
    assert read(driver, "iso/x.iso") == b"b" * 10
    assert driver.stat("iso/x.iso").size == 10


def test_copy_within(driver):
    data = os.urandom(MiB + 17)
    driver.put("template/src.qcow2", [data])
    driver.put("template/copy.qcow2", [b"old"])
    info = driver.copy_within("template/src.qcow2", "template/copy.qcow2")
    assert info.key == "template/copy.qcow2" and info.size == len(data)
    assert read(driver, "template/copy.qcow2") == data
    assert read(driver, "template/src.qcow2") == data
    driver.copy_within("template/src.qcow2", "elsewhere/deep/copy")
    assert read(driver, "elsewhere/deep/copy") == data


def test_large_object_streams_in_bounded_memory(driver, request):
    size_mib = 65
    tracemalloc.start()
    try:
        with driver.open_writer("volumes/big.raw", size_hint=size_mib * MiB) as writer:
            for block in blocks(size_mib):
                writer.write(block)
            info = writer.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # S3 holds at most (max_concurrency + 1) parts; the POSIX drivers about one chunk. tracemalloc
    # counts every thread of the test process (a full run has background threads of earlier
    # fixtures), hence the room on top; the limit stays far under the 65 MiB written.
    if driver.provider == "S3":
        limit = (driver.config.max_concurrency + 1) * driver.config.part_size + 12 * MiB
    else:
        limit = 8 * MiB
    assert peak < limit, f"peak memory {peak / MiB:.1f} MiB"
    assert info.size == size_mib * MiB == driver.stat("volumes/big.raw").size
    assert sha256(driver.open_reader("volumes/big.raw")) == sha256(blocks(size_mib))
    if driver.provider == "S3":
        head = request.getfixturevalue("s3_admin").head_object(Bucket=driver.bucket, Key="volumes/big.raw")
        assert head["ETag"].strip('"').endswith(f"-{size_mib // 5}")  # really multipart


def test_interrupted_write_leaves_nothing(driver, request):
    with pytest.raises(RuntimeError, match="network dropped"):
        with driver.open_writer("template/tmpl/1/1/broken.qcow2") as writer:
            for block in blocks(12):
                writer.write(block)
            raise RuntimeError("network dropped")
    assert writer.bytes_written == 12 * MiB
    assert driver.stat("template/tmpl/1/1/broken.qcow2") is None
    assert list(driver.list()) == []
    if driver.provider == "S3":
        uploads = request.getfixturevalue("s3_admin").list_multipart_uploads(Bucket=driver.bucket)
        assert uploads.get("Uploads", []) == []
    else:
        assert os.listdir(posix_root(driver) / TMP_DIR) == []


def test_writer_state_machine(driver):
    writer = driver.open_writer("k")
    writer.write(b"abc")
    writer.commit()
    with pytest.raises(StoreError):
        writer.write(b"more")
    with pytest.raises(StoreError):
        writer.commit()
    writer.abort()  # after commit: a no-op, the object stays
    assert read(driver, "k") == b"abc"
    other = driver.open_writer("k2")
    other.write(b"x")
    other.abort()
    other.abort()
    assert driver.stat("k2") is None


def test_concurrent_writers_last_commit_wins(driver):
    n, size_mib = 4, 6
    start = threading.Barrier(n)
    errors = []

    def write(i: int) -> None:
        try:
            start.wait()
            with driver.open_writer("iso/contended.iso") as writer:
                for _ in range(size_mib):
                    writer.write(bytes([i]) * MiB)
                writer.commit()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    data = read(driver, "iso/contended.iso")
    assert len(data) == size_mib * MiB
    assert data in {bytes([i]) * (size_mib * MiB) for i in range(n)}  # one writer's, never torn
    assert [o.key for o in driver.list()] == ["iso/contended.iso"]


BAD_KEYS = ["../x", "a/../../x", "/etc/passwd", "", "a//b", "./a", "a/.", "a/..", ".secstor-tmp/x", "a\\b"]


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_path_traversal_rejected(driver, bad):
    with pytest.raises(ValueError):
        driver.put(bad, [b"evil"])
    with pytest.raises(ValueError):
        driver.stat(bad)
    with pytest.raises(ValueError):
        driver.open_reader(bad)
    with pytest.raises(ValueError):
        driver.delete(bad)
    with pytest.raises(ValueError):
        driver.copy_within(bad, "ok")
    if bad:
        with pytest.raises(ValueError):
            driver.list_dir(bad)
        with pytest.raises(ValueError):
            driver.delete_prefix(bad)
    assert list(driver.list()) == []


@pytest.mark.parametrize("bad", ["/", "/etc", "../", "a/../"])
def test_directory_traversal_rejected(driver, bad):
    with pytest.raises(ValueError):
        driver.list(bad)  # at call time, like every other validation
    with pytest.raises(ValueError):
        driver.list_dir(bad)
    with pytest.raises(ValueError):
        driver.delete_prefix(bad)


def test_probe_passes_and_leaves_nothing(driver):
    results = driver.probe()
    assert all(r.ok for r in results), results
    assert {"writable", "free space"} <= {r.name for r in results}
    assert list(driver.list()) == []
    assert driver.list_dir("") == []


def test_capacity(driver):
    before = driver.capacity()
    assert before.total_bytes >= before.used_bytes >= 0
    assert 0 <= before.used_ratio <= 1
    assert before.free_bytes == before.total_bytes - before.used_bytes
    driver.put("volumes/v.raw", [os.urandom(MiB)])
    after = driver.capacity()
    assert after.total_bytes >= after.used_bytes >= 0
    if driver.provider == "S3":
        assert after.used_bytes == before.used_bytes + MiB


def test_abort_stale_writes_discards_unfinished_writes(driver):
    driver.put("x/done", [b"kept"])
    writer = driver.open_writer("x/in-progress")
    writer.write(os.urandom(6 * MiB))  # a multipart upload on S3, a temp file on POSIX
    if driver.provider != "S3":  # moto reports every upload as initiated in 2010
        assert driver.abort_stale_writes(timedelta(hours=1)) == 0
    assert driver.abort_stale_writes(timedelta(0)) == 1
    with pytest.raises(StoreError):
        writer.commit()
    assert driver.stat("x/in-progress") is None
    assert [o.key for o in driver.list()] == ["x/done"]
    assert driver.abort_stale_writes(timedelta(0)) == 0
