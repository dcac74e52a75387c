"""ftp:// and https:// downloads from real servers on loopback into a real Local store."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid

import pytest

from secstor.movers import parse_checksum
from secstor.movers.download import DownloadError
from tests.movers.protocol_servers import FTP_PASSWORD, FTP_USER, make_certificates
from tests.movers.protocol_servers import certificates, ftp, https  # noqa: F401 (fixtures)
from tests.movers.test_download import CONTENT, assert_nothing_stored, fetch, opts, sha256, stored

pytestmark = pytest.mark.nodb


def unique(name: str = "img") -> str:
    return f"{uuid.uuid4().hex[:12]}-{name}"


# -- FTP ------------------------------------------------------------------------------------


def test_ftp_download_is_stored_and_hashed_in_one_pass(ftp, store):
    url = ftp.add(unique(), CONTENT)
    seen = []
    result = fetch(url, store, expected=parse_checksum("{SHA-256}" + sha256(CONTENT)),
                   progress=lambda done, total: seen.append((done, total)))
    assert stored(store) == CONTENT and result.size == len(CONTENT)
    assert result.digests["SHA-256"] == sha256(CONTENT)
    assert seen[-1] == (len(CONTENT), len(CONTENT))  # the size came from SIZE, so progress has a total


def test_ftp_credentials_in_the_url_are_used(ftp, store):
    name = unique()
    ftp.add(name, CONTENT)
    fetch(ftp.url(name, f"{FTP_USER}:{FTP_PASSWORD}"), store)
    assert stored(store) == CONTENT
    assert f"USER {FTP_USER}" in ftp.commands


def test_ftp_transfer_cut_short_is_resumed_with_rest(ftp, store):
    name = unique()
    url = ftp.add(name, CONTENT)
    ftp.cut[name] = 100_000  # the first RETR ends after 100,000 of 300,000 bytes
    delays = []
    fetch(url, store, delays=delays)
    assert stored(store) == CONTENT
    assert len(delays) == 1 and "REST 100000" in ftp.commands


def test_ftp_missing_file_fails_at_once_with_the_server_reply(ftp, store):
    delays = []
    with pytest.raises(DownloadError, match=r"^FTP 550 "):
        fetch(ftp.url(unique("missing")), store, delays=delays)
    assert delays == [] and assert_nothing_stored(store) is None


def test_ftp_wrong_password_fails_with_the_server_reply(ftp, store):
    name = unique()
    ftp.add(name, CONTENT)
    with pytest.raises(DownloadError, match=r"^FTP 530 "):
        fetch(ftp.url(name, f"{FTP_USER}:wrong"), store)
    assert_nothing_stored(store)


# -- https ----------------------------------------------------------------------------------


def test_https_server_with_an_untrusted_certificate_fails_at_once_and_says_why(https, store):
    url = https.add(f"/{unique()}", CONTENT)
    delays = []
    with pytest.raises(DownloadError) as err:
        fetch(url, store, delays=delays)
    assert "TLS certificate of 127.0.0.1 is not trusted" in str(err.value)
    assert "secstorage.download.ca.bundle" in str(err.value)
    assert delays == []  # not retried: the next attempt would meet the same certificate
    assert_nothing_stored(store)


def test_https_server_signed_by_the_configured_ca_bundle_downloads(https, certificates, store):
    path = f"/{unique()}"
    url = https.add(path, CONTENT)
    result = fetch(url, store, options=opts(ca_bundle=str(certificates.ca)),
                   expected=parse_checksum(hashlib.md5(CONTENT).hexdigest()))
    assert stored(store) == CONTENT and result.size == len(CONTENT)
    assert len(https.requests(path)) == 1


def test_https_certificate_for_another_name_is_refused_even_from_a_trusted_ca(https, certificates, store):
    url = https.add(f"/{unique()}", CONTENT).replace("127.0.0.1", "secstor.test")  # the certificate does not name it
    with pytest.raises(DownloadError, match="is not trusted: Hostname mismatch"):
        fetch(url, store, options=opts(ca_bundle=str(certificates.ca)),
              resolver=lambda host, port, **kw: [(2, 1, 6, "", ("127.0.0.1", port))])
    assert_nothing_stored(store)


def test_dropped_https_connection_resumes_with_range(https, certificates, store):
    from tests.support.httpserver import Fault

    path = f"/{unique()}"
    url = https.add(path, CONTENT, fault=Fault(drop_after=120_000))
    fetch(url, store, options=opts(ca_bundle=str(certificates.ca)))
    assert stored(store) == CONTENT
    assert https.requests(path)[1]["range"] == "bytes=120000-"


@pytest.mark.parametrize("bundle", ["missing", "not-pem"])
def test_an_unusable_ca_bundle_is_reported(https, store, tmp_path, bundle):
    path = tmp_path / "bundle.pem"
    if bundle == "not-pem":
        path.write_bytes(os.urandom(64))
    with pytest.raises(DownloadError, match=f"cannot (read|load) the CA bundle {path}"):
        fetch(https.add(f"/{unique()}", CONTENT), store, options=opts(ca_bundle=str(path)))
    assert_nothing_stored(store)


def test_an_edited_ca_bundle_takes_effect_at_the_next_download(https, certificates, store, tmp_path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(make_certificates(tmp_path / "other").ca.read_bytes())  # another CA: not trusted
    url = https.add(f"/{unique()}", CONTENT)
    with pytest.raises(DownloadError, match="not trusted"):
        fetch(url, store, options=opts(ca_bundle=str(bundle)))
    shutil.copyfile(certificates.ca, bundle)
    fetch(url, store, options=opts(ca_bundle=str(bundle)))
    assert stored(store) == CONTENT
