"""driver_for: CloudStack's (provider, url, details) in, a driver or a named-parameter error out."""

from __future__ import annotations

import pytest

from secstor.stores import InvalidStoreParameter, LocalDriver, NfsDriver, NfsMounter, S3Driver, driver_for

pytestmark = pytest.mark.nodb

S3_DETAILS = {"accesskey": "AK", "secretkey": "SK", "endpoint": "s3.example.test:8080", "bucket": "images"}


def test_local(tmp_path):
    driver = driver_for("Local", f"file://{tmp_path}/store", {}, mounter=None)
    assert isinstance(driver, LocalDriver) and driver.root == tmp_path / "store"
    assert driver_for("local", f"file://localhost{tmp_path}", None, mounter=None).root == tmp_path


def test_nfs(tmp_path):
    driver = driver_for("NFS", "nfs://host/export", {}, mounter=NfsMounter(tmp_path))
    assert isinstance(driver, NfsDriver) and driver.url == "nfs://host/export"
    with pytest.raises(ValueError, match="NfsMounter"):
        driver_for("NFS", "nfs://host/export", {}, mounter=None)


def test_s3_details_as_cloudstack_sends_them():
    details = {
        **S3_DETAILS, "usehttps": "false", "s3signer": "S3SignerType", "connectiontimeout": "3000",
        "maxerrorretry": "5", "sockettimeout": "", "connectionttl": "-1", "usetcpkeepalive": "TRUE",
        "region": "eu-west-1", "pathstyle": "false", "checksummode": "WHEN_SUPPORTED", "prefix": "zone1",
        "quotabytes": "1099511627776",
    }
    driver = driver_for("S3", "", details, mounter=None)
    assert isinstance(driver, S3Driver)
    cfg = driver.config
    assert cfg.endpoint_url == "http://s3.example.test:8080"
    assert (cfg.signer, cfg.connection_timeout_ms, cfg.max_error_retry) == ("S3SignerType", 3000, 5)
    assert cfg.socket_timeout_ms == 50_000  # empty string = CloudStack's default
    assert cfg.use_tcp_keepalive is True and cfg.path_style is False
    assert (cfg.region, cfg.checksum_mode, cfg.key_prefix, cfg.quota_bytes) == (
        "eu-west-1", "when_supported", "zone1/", 1 << 40,
    )
    assert driver_for("S3", "", S3_DETAILS, mounter=None).config.endpoint_url == "https://s3.example.test:8080"


@pytest.mark.parametrize(
    "provider,url,details,param",
    [
        ("Local", "relative/path", {}, "url"),
        ("Local", "file://otherhost/data", {}, "url"),
        ("Local", "file:///data/../etc", {}, "url"),
        ("NFS", "nfs://", {}, "url"),
        ("Swift", "x", {}, "provider"),
        ("S3", "", {**S3_DETAILS, "endpoint": ""}, "endpoint"),
        ("S3", "", {k: v for k, v in S3_DETAILS.items() if k != "bucket"}, "bucket"),
        ("S3", "", {**S3_DETAILS, "endpoint": "host:notaport"}, "endpoint"),
        ("S3", "", {**S3_DETAILS, "connectiontimeout": "soon"}, "connectiontimeout"),
        ("S3", "", {**S3_DETAILS, "usehttps": "maybe"}, "usehttps"),
        ("S3", "", {**S3_DETAILS, "s3signer": "AWS4SignerType"}, "s3signer"),
        ("S3", "", {**S3_DETAILS, "checksummode": "always"}, "checksummode"),
        ("S3", "", {**S3_DETAILS, "quotabytes": "-1"}, "quotabytes"),
    ],
)
def test_bad_input_names_the_parameter(tmp_path, provider, url, details, param):
    with pytest.raises(InvalidStoreParameter) as err:
        driver_for(provider, url, details, mounter=NfsMounter(tmp_path))
    assert err.value.param == param
    assert str(err.value).startswith(f"{param}: ")
