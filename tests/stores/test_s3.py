"""S3-only behaviour, against real moto server processes over HTTP."""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta

import boto3
import pytest

from secstor.stores import InvalidStoreParameter, S3Config, S3Driver, StoreUnavailable, driver_for
from secstor.stores.s3 import UNLIMITED_TOTAL
from tests.support.moto import free_port, moto_server_process

from tests.stores.helpers import s3_client, s3_config

pytestmark = pytest.mark.nodb

MiB = 1 << 20


@pytest.fixture(scope="module")
def auth_moto():
    """A moto server that checks credentials.  Only its first 3 requests (the IAM set-up
    below) are let through unauthenticated; everything after must be correctly signed."""
    with moto_server_process(env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as endpoint:
        iam = boto3.session.Session().client(
            "iam", endpoint_url=f"http://{endpoint}", region_name="us-east-1",
            aws_access_key_id="setup", aws_secret_access_key="setup",
        )
        iam.create_user(UserName="secstor")
        iam.put_user_policy(
            UserName="secstor", PolicyName="all",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        key = iam.create_access_key(UserName="secstor")["AccessKey"]
        s3_client(endpoint, key["AccessKeyId"], key["SecretAccessKey"]).create_bucket(Bucket="authbucket")
        yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]


def test_probe_names_the_credential_error(auth_moto):
    endpoint, key_id, secret = auth_moto
    good = S3Driver(s3_config(endpoint, "authbucket", access_key=key_id, secret_key=secret))
    assert all(r.ok for r in good.probe())

    wrong_secret = S3Driver(s3_config(endpoint, "authbucket", access_key=key_id, secret_key="not-the-secret"))
    [result] = wrong_secret.probe()
    assert result.name == "reachable" and not result.ok
    assert "SignatureDoesNotMatch" in result.detail and "authbucket" in result.detail
    with pytest.raises(StoreUnavailable, match="access denied"):
        wrong_secret.stat("anything")

    wrong_key = S3Driver(s3_config(endpoint, "authbucket", access_key="AKIANOSUCHKEY0000000", secret_key=secret))
    [result] = wrong_key.probe()
    assert not result.ok and "InvalidAccessKeyId" in result.detail


def test_probe_reports_unreachable_endpoint():
    driver = S3Driver(
        s3_config(f"127.0.0.1:{free_port()}", "bucket", max_error_retry=0, connection_timeout_ms=1000)
    )
    [result] = driver.probe()
    assert not result.ok and "Could not connect" in result.detail


def test_missing_bucket(moto_server):
    driver = S3Driver(s3_config(moto_server, f"missing-{uuid.uuid4().hex}"))
    [result] = driver.probe()
    assert not result.ok and "404" in result.detail
    with pytest.raises(StoreUnavailable, match="does not exist"):
        driver.put("k", [os.urandom(6 * MiB)])  # fails when the multipart upload starts


def test_abort_stale_multipart_uploads_only_under_prefix(moto_server, bucket, s3_admin):
    s3_admin.create_multipart_upload(Bucket=bucket, Key="zone1/template/crashed.qcow2")
    s3_admin.create_multipart_upload(Bucket=bucket, Key="zone2/other-store.qcow2")
    driver = S3Driver(s3_config(moto_server, bucket, prefix="zone1"))
    assert driver.abort_stale_multipart_uploads(timedelta(0)) == 1
    left = [u["Key"] for u in s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert left == ["zone2/other-store.qcow2"]


@pytest.mark.parametrize("mode", ["when_required", "when_supported"])
def test_checksum_modes(moto_server, bucket, s3_admin, mode):
    driver = S3Driver(s3_config(moto_server, bucket, checksum_mode=mode))
    small, big = os.urandom(1000), os.urandom(12 * MiB + 5)
    driver.put("small", [small])
    driver.put("big", [big[i : i + MiB] for i in range(0, len(big), MiB)])
    assert s3_admin.head_object(Bucket=bucket, Key="big")["ETag"].strip('"').endswith("-3")
    assert b"".join(driver.open_reader("small")) == small
    assert b"".join(driver.open_reader("big", offset=7 * MiB, length=MiB)) == big[7 * MiB : 8 * MiB]
    driver.copy_within("big", "big-copy")
    assert b"".join(driver.open_reader("big-copy")) == big
    # when_supported sends a CRC32 the server keeps; when_required (Ceph RGW, MinIO) sends none.
    for key in ("small", "big"):
        head = s3_admin.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert ("ChecksumCRC32" in head) == (mode == "when_supported")


def test_endpoint_as_host_port_from_cloudstack_details(moto_server, bucket):
    details = {
        "accesskey": "testing", "secretkey": "testing", "endpoint": moto_server, "bucket": bucket,
        "usehttps": "false", "s3signer": "AWSS3V4SignerType", "connectiontimeout": "5000",
        "maxerrorretry": "2", "sockettimeout": "10000", "connectionttl": "-1", "usetcpkeepalive": "true",
    }
    driver = driver_for("S3", "", details, mounter=None)
    assert driver.config.endpoint_url == f"http://{moto_server}"
    assert all(r.ok for r in driver.probe())
    driver.put("a/b", [b"hello"])
    assert b"".join(driver.open_reader("a/b")) == b"hello"


def test_multipart_tuning_and_proxy_from_details(moto_server, bucket, s3_admin):
    """partsize, uploadconcurrency, singleputmax and proxy are store details too (secstor's)."""
    details = {"accesskey": "testing", "secretkey": "testing", "endpoint": moto_server, "bucket": bucket,
               "usehttps": "false", "partsize": str(5 * MiB), "uploadconcurrency": "2", "singleputmax": str(5 * MiB),
               "proxy": f"http://{moto_server}"}
    driver = driver_for("S3", "", details, mounter=None)
    assert (driver.config.part_size, driver.config.max_concurrency) == (5 * MiB, 2)
    data = os.urandom(6 * MiB)
    driver.put("tuned", [data], size_hint=len(data))  # over singleputmax: two parts, through the proxy
    assert s3_admin.head_object(Bucket=bucket, Key="tuned")["ETag"].strip('"').endswith("-2")


def test_full_url_endpoint_wins_over_usehttps(moto_server, bucket):
    driver = S3Driver(s3_config(f"http://{moto_server}/", bucket, use_https=True))
    assert driver.config.endpoint_url == f"http://{moto_server}"
    assert all(r.ok for r in driver.probe())


def test_legacy_signer(moto_server, bucket):
    driver = S3Driver(s3_config(moto_server, bucket, signer="S3SignerType"))
    driver.put("v2/object", [b"signed the old way"])
    assert b"".join(driver.open_reader("v2/object")) == b"signed the old way"


def test_multipart_server_side_copy(moto_server, bucket, s3_admin):
    driver = S3Driver(s3_config(moto_server, bucket, multipart_copy_threshold=5 * MiB))
    data = os.urandom(12 * MiB)
    driver.put("src", [data])
    info = driver.copy_within("src", "dst/copy")
    assert info.size == len(data)
    assert s3_admin.head_object(Bucket=bucket, Key="dst/copy")["ETag"].strip('"').endswith("-3")
    assert b"".join(driver.open_reader("dst/copy")) == data
    assert s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_prefix_isolates_the_store(moto_server, bucket, s3_admin):
    s3_admin.put_object(Bucket=bucket, Key="outside/object", Body=b"not ours")
    s3_admin.put_object(Bucket=bucket, Key="zone1/store/dir/", Body=b"")  # a console "folder" marker
    driver = S3Driver(s3_config(moto_server, bucket, prefix="/zone1/store/"))
    driver.put("a/b", [b"ours"])
    assert s3_admin.get_object(Bucket=bucket, Key="zone1/store/a/b")["Body"].read() == b"ours"
    assert [o.key for o in driver.list()] == ["a/b"]
    assert [(o.key, o.is_dir) for o in driver.list_dir("")] == [("a", True), ("dir", True)]
    assert driver.list_dir("dir") == []
    assert driver.capacity().used_bytes == 4
    assert driver.delete_prefix("a") == 1
    assert s3_admin.get_object(Bucket=bucket, Key="outside/object")["Body"].read() == b"not ours"


def test_part_size_fits_size_hint_in_10000_parts(s3_driver):
    assert s3_driver.part_size_for(None) == 5 * MiB
    assert s3_driver.part_size_for(10 * MiB) == 5 * MiB
    one_tib = 1 << 40
    part = s3_driver.part_size_for(one_tib)
    assert part % MiB == 0 and part * 10_000 >= one_tib
    assert s3_driver.part_size_for(1 << 60) == 5 << 30  # S3's largest part


def test_unknown_size_upload_grows_its_parts(s3_driver, s3_admin, monkeypatch):
    monkeypatch.setattr("secstor.stores.s3.PARTS_PER_DOUBLING", 1)  # 1000 in production
    data = os.urandom(35 * MiB)
    s3_driver.put("grown", [data[i : i + MiB] for i in range(0, len(data), MiB)])  # no size_hint
    etag = s3_admin.head_object(Bucket=s3_driver.bucket, Key="grown")["ETag"]
    assert etag.strip('"').endswith("-3")  # parts of 5, 10 and 20 MiB
    assert b"".join(s3_driver.open_reader("grown")) == data


def test_capacity_total_is_quota_or_sentinel(moto_server, bucket):
    assert S3Driver(s3_config(moto_server, bucket)).capacity().total_bytes == UNLIMITED_TOTAL
    assert S3Driver(s3_config(moto_server, bucket, quota_bytes=10 * MiB)).capacity().total_bytes == 10 * MiB


@pytest.mark.parametrize(
    "overrides,param",
    [
        ({"endpoint": ""}, "endpoint"),
        ({"endpoint": "ftp://host"}, "endpoint"),
        ({"endpoint": "host:port"}, "endpoint"),
        ({"bucket": ""}, "bucket"),
        ({"signer": "AWS4"}, "signer"),
        ({"checksum_mode": "always"}, "checksum_mode"),
        ({"part_size": MiB}, "part_size"),
        ({"single_put_max": -1}, "single_put_max"),
        ({"secret_key": ""}, "secret_key"),
        ({"proxy": "proxy.example:3128"}, "proxy"),
        ({"proxy": "http://proxy.example:port"}, "proxy"),
    ],
)
def test_config_validation_names_the_parameter(overrides, param):
    settings = {"endpoint": "127.0.0.1:9000", "bucket": "bucket", "access_key": "a", "secret_key": "s", **overrides}
    with pytest.raises(InvalidStoreParameter) as err:
        S3Config(**settings)
    assert err.value.param == param
    assert isinstance(err.value, ValueError)


def test_object_below_single_put_limit_is_one_put_even_if_longer_than_its_hint(s3_driver, s3_admin):
    """One PutObject (no multipart ETag) when the hint is under the limit; a stream that turns
    out longer than its hint still lands whole, as a multipart upload."""
    limit = s3_driver.config.single_put_limit
    assert limit == 25 * MiB  # (max_concurrency 4 + 1) x 5 MiB parts caps the 64 MiB default
    small = os.urandom(limit - MiB)
    s3_driver.put("one-put", [small], size_hint=len(small))
    assert "-" not in s3_admin.head_object(Bucket=s3_driver.bucket, Key="one-put")["ETag"]
    longer = os.urandom(limit + 7 * MiB)
    s3_driver.put("longer", [longer[i : i + MiB] for i in range(0, len(longer), MiB)], size_hint=MiB)
    assert s3_admin.head_object(Bucket=s3_driver.bucket, Key="longer")["ETag"].strip('"').endswith("-3")
    assert b"".join(s3_driver.open_reader("longer")) == longer
