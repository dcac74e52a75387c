"""Checksum parsing and verified writes/copies, on real Local directories and a real moto S3."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secstor.movers import (
    Checksum,
    ChecksumMismatch,
    MultiHasher,
    SizeLimitExceeded,
    UnknownChecksumAlgorithm,
    copy_verified,
    hashlib_name,
    parse_checksum,
    verify_object,
    write_verified,
)
from secstor.stores import LocalDriver, ObjectNotFound, S3Driver

pytestmark = pytest.mark.nodb

MiB = 1 << 20
DATA = os.urandom(3 * MiB + 11)
MD5 = hashlib.md5(DATA).hexdigest()
SHA256 = hashlib.sha256(DATA).hexdigest()


def chunks(data=DATA, size=256 * 1024):
    return (data[i : i + size] for i in range(0, len(data), size))


# -- checksums ---------------------------------------------------------------------------

HEX = {"MD5": "d" * 32, "SHA-1": "1" * 40, "SHA-224": "2" * 56, "SHA-256": "a" * 64, "SHA-384": "3" * 96, "SHA-512": "5" * 128}


@pytest.mark.parametrize(
    "text,algorithm",
    [
        ("{MD5}" + HEX["MD5"], "MD5"),
        ("{md5}" + HEX["MD5"], "MD5"),
        (HEX["MD5"], "MD5"),  # bare hex: CloudStack's legacy MD5
        ("{SHA-1}" + HEX["SHA-1"], "SHA-1"),
        ("{sha1}" + HEX["SHA-1"], "SHA-1"),
        ("{SHA-224}" + HEX["SHA-224"], "SHA-224"),
        ("{SHA-256}" + HEX["SHA-256"], "SHA-256"),
        ("{sha256}" + HEX["SHA-256"], "SHA-256"),
        ("{Sha-256}" + HEX["SHA-256"], "SHA-256"),
        ("{SHA256}" + HEX["SHA-256"], "SHA-256"),
        ("{sha-384}" + HEX["SHA-384"], "SHA-384"),
        ("{SHA512}" + HEX["SHA-512"], "SHA-512"),
    ],
)
def test_parse_every_form(text, algorithm):
    parsed = parse_checksum(text)
    assert parsed == Checksum(algorithm, HEX[algorithm])
    assert str(parsed) == f"{{{algorithm}}}{HEX[algorithm]}"


def test_parse_normalises_case_and_space():
    assert parse_checksum("  {sha-256}" + "AB" * 32 + "\n") == Checksum("SHA-256", "ab" * 32)


def test_unknown_algorithm_message():
    with pytest.raises(UnknownChecksumAlgorithm) as err:
        parse_checksum("{CRC32}deadbeef")
    assert str(err.value) == "checksum algorithm not recognised: CRC32"
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    "text", ["", "   ", "{SHA-256}" + "a" * 63, "{SHA-256}" + "g" * 64, "a" * 64, "xyz", "{MD5}", "{}abc"]
)
def test_malformed_checksums(text):
    with pytest.raises(ValueError):
        parse_checksum(text)


def test_hashlib_name():
    assert hashlib_name("SHA-256") == "sha256"
    assert hashlib_name("sha-1") == "sha1"
    assert hashlib_name("MD5") == "md5"
    with pytest.raises(UnknownChecksumAlgorithm):
        hashlib_name("whirlpool")


@settings(max_examples=50, deadline=None, database=None)
@given(algorithm=st.sampled_from(sorted(HEX)), data=st.binary(max_size=256), upper=st.booleans())
def test_checksum_string_round_trip(algorithm, data, upper):
    digest = hashlib.new(hashlib_name(algorithm), data).hexdigest()
    text = "{" + algorithm.lower().replace("-", "") + "}" + (digest.upper() if upper else digest)
    parsed = parse_checksum(text)
    assert parsed == Checksum(algorithm, digest)
    assert parse_checksum(str(parsed)) == parsed


def test_multi_hasher():
    hasher = MultiHasher(["sha256", "MD5", "SHA-256"])
    for c in chunks():
        hasher.update(c)
    assert hasher.hexdigests() == {"SHA-256": SHA256, "MD5": MD5}


# -- verified transfers --------------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def store(request):
    return request.getfixturevalue(f"{request.param}_driver")


def assert_nothing_visible(driver, key, request):
    assert driver.stat(key) is None
    assert list(driver.list()) == []
    if driver.provider == "S3":
        uploads = request.getfixturevalue("s3_admin").list_multipart_uploads(Bucket=driver.bucket)
        assert uploads.get("Uploads", []) == []


def test_write_verified_commits_matching_data(store):
    seen = []
    result = write_verified(
        store, "template/t.qcow2", chunks(), expected=parse_checksum(MD5), size_hint=len(DATA), progress=seen.append
    )
    assert result.size == len(DATA) == result.info.size
    assert result.digests == {"SHA-256": SHA256, "MD5": MD5}
    assert seen == sorted(seen) and seen[-1] == len(DATA)
    assert b"".join(store.open_reader("template/t.qcow2")) == DATA


def test_checksum_mismatch_message_and_nothing_visible(store, request):
    given = "0" * 64
    with pytest.raises(ChecksumMismatch) as err:
        write_verified(store, "template/t.qcow2", chunks(), expected=parse_checksum("{sha256}" + given))
    assert str(err.value) == f'checksum "{{SHA-256}}{SHA256}" didn\'t match the given value, "{{SHA-256}}{given}"'
    assert err.value.computed == Checksum("SHA-256", SHA256)
    assert_nothing_visible(store, "template/t.qcow2", request)


def test_max_bytes_enforced(store, request):
    with pytest.raises(SizeLimitExceeded):
        write_verified(store, "iso/big.iso", chunks(), max_bytes=2 * MiB)
    assert_nothing_visible(store, "iso/big.iso", request)
    with pytest.raises(SizeLimitExceeded):  # a declared size over the limit fails before any I/O
        write_verified(store, "iso/big.iso", iter(()), size_hint=3 * MiB, max_bytes=2 * MiB)
    result = write_verified(store, "iso/exact.iso", chunks(), max_bytes=len(DATA))
    assert result.size == len(DATA)


def test_failing_source_leaves_nothing(store, request):
    def source():
        yield from chunks(DATA[: 2 * MiB])
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        write_verified(store, "volumes/v", source())
    assert_nothing_visible(store, "volumes/v", request)


@pytest.mark.parametrize("direction", ["local->s3", "s3->local"])
def test_copy_verified_between_providers(local_driver, s3_driver, direction, request):
    src, dst = (local_driver, s3_driver) if direction == "local->s3" else (s3_driver, local_driver)
    src.put("template/src.qcow2", chunks())
    result = copy_verified(src, "template/src.qcow2", dst, "template/dst.qcow2", expected=parse_checksum(MD5))
    assert result.size == len(DATA) and result.digests == {"MD5": MD5}
    assert b"".join(dst.open_reader("template/dst.qcow2")) == DATA

    with pytest.raises(ChecksumMismatch):
        copy_verified(src, "template/src.qcow2", dst, "template/bad.qcow2", expected=parse_checksum("f" * 32))
    assert dst.stat("template/bad.qcow2") is None
    if dst.provider == "S3":
        assert request.getfixturevalue("s3_admin").list_multipart_uploads(Bucket=dst.bucket).get("Uploads", []) == []
    with pytest.raises(ObjectNotFound):
        copy_verified(src, "missing", dst, "x", expected=parse_checksum(MD5))


class CountingLocal(LocalDriver):
    """A real LocalDriver that records server-side copies (instrumented, not mocked)."""

    copies = 0

    def copy_within(self, src_key, dst_key):
        self.copies += 1
        return super().copy_within(src_key, dst_key)


class CountingS3(S3Driver):
    copies = 0

    def copy_within(self, src_key, dst_key):
        self.copies += 1
        return super().copy_within(src_key, dst_key)


@pytest.fixture(params=["local", "s3"])
def counting_pair(request, tmp_path):
    """Two driver instances on the same store: same identity, so the copy stays server-side."""
    if request.param == "local":
        return CountingLocal(tmp_path / "s"), CountingLocal(tmp_path / "s")
    config = request.getfixturevalue("s3_driver").config
    return CountingS3(config), CountingS3(config)


def test_server_side_copy_is_still_verified(counting_pair):
    src, dst = counting_pair
    src.put("template/src.qcow2", chunks())
    seen = []
    result = copy_verified(
        src, "template/src.qcow2", dst, "template/dst.qcow2", expected=parse_checksum("{SHA-256}" + SHA256),
        progress=seen.append,
    )
    assert dst.copies == 1 and src.copies == 0
    assert result.digests == {"SHA-256": SHA256} and seen[-1] == len(DATA)

    with pytest.raises(ChecksumMismatch):
        copy_verified(src, "template/src.qcow2", dst, "template/bad.qcow2", expected=parse_checksum("e" * 32))
    assert dst.copies == 2
    assert dst.stat("template/bad.qcow2") is None  # the unverified copy was removed
    assert src.stat("template/src.qcow2").size == len(DATA)

    with pytest.raises(ValueError, match="same object"):
        copy_verified(src, "template/src.qcow2", dst, "template/src.qcow2", expected=parse_checksum(MD5))


def test_verify_object(store):
    store.put("snapshots/s", chunks())
    assert verify_object(store, "snapshots/s", parse_checksum(MD5)) is True
    assert verify_object(store, "snapshots/s", parse_checksum("{SHA-256}" + SHA256)) is True
    assert verify_object(store, "snapshots/s", parse_checksum("0" * 32)) is False
    with pytest.raises(ObjectNotFound):
        verify_object(store, "snapshots/missing", parse_checksum(MD5))
