"""Downloads from a real local HTTP server into a real Local store: one pass, resume, limits."""

from __future__ import annotations

import hashlib
import os
import socket

import pytest

from secstor.movers import ChecksumMismatch, SizeLimitExceeded, parse_checksum
from secstor.movers.download import (
    DeclaredSizeTooLarge,
    Download,
    DownloadError,
    DownloadOptions,
    UrlRefused,
    download_to_store,
)
from tests.support.httpserver import Fault, etag_of

pytestmark = pytest.mark.nodb

LOOPBACK = DownloadOptions(
    allowed_cidrs=("127.0.0.0/8",), connect_timeout=2, read_timeout=2, stall_timeout=2, max_retries=3, backoff=0.5
)
KEY = "template/tmpl/2/201/201-2-test.qcow2"
CONTENT = os.urandom(300_000)


def opts(**changes) -> DownloadOptions:
    return DownloadOptions(**{**LOOPBACK.__dict__, **changes})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored(store) -> bytes:
    return b"".join(store.open_reader(KEY))


def assert_nothing_stored(store) -> None:
    assert store.stat(KEY) is None
    assert list(store.list("")) == []


def fetch(url, store, *, options=LOOPBACK, delays=None, **kwargs):
    sleeps = delays if delays is not None else []
    return download_to_store(url, store, KEY, options=options, sleep=sleeps.append, **kwargs)


def resolving(mapping: dict[str, list[str]]):
    """A resolver for made-up names; real names still resolve normally (none are used)."""

    def resolve(host, port, *args, **kwargs):
        if host in mapping:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in mapping[host]]
        return socket.getaddrinfo(host, port, *args, **kwargs)

    return resolve


# -- the good path ------------------------------------------------------------------------


def test_download_stores_the_bytes_and_hashes_them_once_while_writing(web, path_prefix, store):
    url = web.add(f"{path_prefix}/img", CONTENT)
    seen = []
    result = fetch(url, store, algorithms=("SHA-512", "SHA-256"), progress=lambda done, total: seen.append((done, total)))
    assert stored(store) == CONTENT
    assert result.size == len(CONTENT)
    assert result.digests == {"SHA-512": hashlib.sha512(CONTENT).hexdigest(), "SHA-256": sha256(CONTENT)}
    assert seen[-1] == (len(CONTENT), len(CONTENT))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert len(web.requests(f"{path_prefix}/img")) == 1


def test_matching_checksum_is_accepted_in_any_spelling(web, path_prefix, store):
    url = web.add(f"{path_prefix}/img", CONTENT)
    result = fetch(url, store, expected=parse_checksum("{sha256}" + sha256(CONTENT).upper()))
    assert result.digests["SHA-256"] == sha256(CONTENT)
    assert stored(store) == CONTENT


def test_wrong_checksum_stores_nothing_and_says_so_like_cloudstack(web, path_prefix, store):
    url = web.add(f"{path_prefix}/img", CONTENT)
    wrong = parse_checksum("{SHA-256}" + "0" * 64)
    with pytest.raises(ChecksumMismatch) as err:
        fetch(url, store, expected=wrong)
    assert str(err.value) == f'checksum "{{SHA-256}}{sha256(CONTENT)}" didn\'t match the given value, "{wrong}"'
    assert_nothing_stored(store)


def test_chunks_stay_bounded_whatever_the_size(web, path_prefix):
    url = web.add(f"{path_prefix}/img", CONTENT)
    with Download(url, opts(chunk_size=4096)) as download:
        chunks = list(download)
    assert max(map(len, chunks)) == 4096
    assert b"".join(chunks) == CONTENT


def test_redirects_are_followed_relative_and_absolute(web, path_prefix, store):
    web.add(f"{path_prefix}/real", CONTENT)
    web.redirect(f"{path_prefix}/second", web.url(f"{path_prefix}/real"), status=307)
    url = web.redirect(f"{path_prefix}/first", f"{path_prefix}/second", status=301)
    fetch(url, store)
    assert stored(store) == CONTENT


def test_more_than_five_redirects_fail(web, path_prefix, store):
    for i in range(6):
        web.redirect(f"{path_prefix}/r{i}", f"{path_prefix}/r{i + 1}")
    web.add(f"{path_prefix}/r6", CONTENT)
    with pytest.raises(DownloadError, match="more than 5 redirects"):
        fetch(web.url(f"{path_prefix}/r0"), store)
    assert_nothing_stored(store)


# -- HTTP errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("status, text", [(404, "HTTP 404 Not Found"), (403, "HTTP 403 Forbidden")])
def test_client_errors_fail_at_once_without_retries(web, path_prefix, store, status, text):
    path = f"{path_prefix}/img"
    url = web.add(path, CONTENT, fault=Fault(status=status, times=None)) if status != 404 else web.url(path)
    delays = []
    with pytest.raises(DownloadError) as err:
        fetch(url, store, delays=delays)
    assert str(err.value) == text
    assert delays == []
    assert len(web.requests(path)) == (1 if status != 404 else 0)
    assert_nothing_stored(store)


def test_server_errors_are_retried_with_exponential_backoff(web, path_prefix, store):
    path = f"{path_prefix}/img"
    url = web.add(path, CONTENT, fault=Fault(status=503, times=2))
    delays = []
    fetch(url, store, delays=delays)
    assert stored(store) == CONTENT
    assert delays == [0.5, 1.0]


def test_retries_are_bounded_and_the_reason_is_kept(web, path_prefix, store):
    path = f"{path_prefix}/img"
    url = web.add(path, CONTENT, fault=Fault(status=503, times=None))
    delays = []
    with pytest.raises(DownloadError) as err:
        fetch(url, store, delays=delays)
    assert str(err.value) == f"HTTP 503 Service Unavailable from 127.0.0.1; gave up after 3 retries"
    assert delays == [0.5, 1.0, 2.0]
    assert len(web.requests(path)) == 4
    assert_nothing_stored(store)


def test_unreachable_server_is_retried_then_reported(store):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=rf"could not connect to 127.0.0.1 port {port}: .*gave up after 1 retries"):
        fetch(f"http://127.0.0.1:{port}/img", store, options=opts(max_retries=1))
    assert_nothing_stored(store)


# -- resume --------------------------------------------------------------------------------


def test_dropped_connection_resumes_with_range_and_if_range(web, path_prefix, store):
    path = f"{path_prefix}/img"
    url = web.add(path, CONTENT, fault=Fault(drop_after=100_000))
    result = fetch(url, store, expected=parse_checksum("{SHA-256}" + sha256(CONTENT)))
    assert stored(store) == CONTENT
    assert result.size == len(CONTENT)
    first, second = web.requests(path)
    assert "range" not in first
    assert second["range"] == "bytes=100000-"
    assert second["if-range"] == etag_of(CONTENT)


def test_connection_dropped_before_any_byte_restarts_cleanly(web, path_prefix, store):
    path = f"{path_prefix}/img"
    url = web.add(path, CONTENT, fault=Fault(drop_after=0), ignore_range=True)
    fetch(url, store)
    assert stored(store) == CONTENT
    assert [("range" in r) for r in web.requests(path)] == [False, False]


def test_connection_dropped_every_time_gives_up_with_the_byte_count(web, path_prefix, store):
    path = f"{path_prefix}/img"
    url = web.add(path, CONTENT, fault=Fault(drop_after=10_000, times=None))
    with pytest.raises(DownloadError) as err:
        fetch(url, store, options=opts(max_retries=2))
    # Each attempt still moves 10,000 bytes forward before the server drops it.
    assert "after 30000 bytes" in str(err.value)
    assert str(err.value).endswith("gave up after 2 retries")
    assert [r.get("range") for r in web.requests(path)] == [None, "bytes=10000-", "bytes=20000-"]
    assert_nothing_stored(store)


def test_server_ignoring_range_after_bytes_were_written_fails_instead_of_duplicating(web, path_prefix, store):
    url = web.add(f"{path_prefix}/img", CONTENT, fault=Fault(drop_after=50_000), ignore_range=True)
    with pytest.raises(DownloadError, match="ignored the request to resume at byte 50000"):
        fetch(url, store)
    assert_nothing_stored(store)


def test_file_changed_between_attempts_is_not_spliced(web, path_prefix, store):
    changed = os.urandom(len(CONTENT))
    url = web.add(f"{path_prefix}/img", CONTENT, changed, fault=Fault(drop_after=50_000))
    with pytest.raises(DownloadError, match="the file changed on the server after 50000 bytes"):
        fetch(url, store)
    assert_nothing_stored(store)


def test_stalled_download_is_detected_and_resumed(web, path_prefix, store):
    path = f"{path_prefix}/img"
    url = web.add(path, CONTENT, fault=Fault(stall_after=120_000))
    fetch(url, store, options=opts(stall_timeout=0.3))
    assert stored(store) == CONTENT
    assert web.requests(path)[1]["range"] == "bytes=120000-"


def test_download_stalled_every_time_fails_with_the_reason(web, path_prefix, store):
    url = web.add(f"{path_prefix}/img", CONTENT, fault=Fault(stall_after=0, times=None))
    with pytest.raises(DownloadError) as err:
        fetch(url, store, options=opts(stall_timeout=0.2, max_retries=1))
    assert str(err.value) == "download stalled: no data for 0.2 s after 0 bytes; gave up after 1 retries"
    assert_nothing_stored(store)


# -- size limit ----------------------------------------------------------------------------


def test_announced_size_over_the_limit_is_refused_before_the_body(web, path_prefix, store):
    url = web.add(f"{path_prefix}/img", CONTENT)
    with pytest.raises(DeclaredSizeTooLarge) as err:
        fetch(url, store, options=opts(max_bytes=1000))
    assert str(err.value) == f"the server announces {len(CONTENT)} bytes, more than the limit of 1000 bytes"
    assert_nothing_stored(store)


def test_stream_over_the_limit_without_announced_size_is_cut_off(web, path_prefix, store):
    url = web.add(f"{path_prefix}/img", CONTENT, announce_length=False)
    with pytest.raises(SizeLimitExceeded, match="larger than the limit of 100000 bytes"):
        fetch(url, store, options=opts(max_bytes=100_000, chunk_size=8192))
    assert_nothing_stored(store)


def test_unannounced_size_within_the_limit_downloads(web, path_prefix, store):
    url = web.add(f"{path_prefix}/img", CONTENT, announce_length=False)
    fetch(url, store, options=opts(max_bytes=len(CONTENT)))
    assert stored(store) == CONTENT


# -- address safety ------------------------------------------------------------------------

REFUSAL = "downloads from internal addresses are refused unless secstorage.allowed.internal.sites allows them"


def test_loopback_is_refused_without_the_allowance(web, path_prefix, store):
    path = f"{path_prefix}/img"
    url = web.add(path, CONTENT)
    with pytest.raises(UrlRefused) as err:
        fetch(url, store, options=opts(allowed_cidrs=()))
    assert str(err.value) == f"URL host 127.0.0.1 is a loopback address; {REFUSAL}"
    assert web.requests(path) == []
    assert_nothing_stored(store)


def test_redirect_to_a_refused_address_is_not_followed(web, path_prefix, store):
    target = f"{path_prefix}/secret"
    web.add(target, CONTENT)
    url = web.redirect(f"{path_prefix}/img", web.url(target, host="sneaky.test"))
    resolver = resolving({"sneaky.test": ["127.0.0.2"]})
    with pytest.raises(UrlRefused) as err:
        fetch(url, store, options=opts(allowed_cidrs=("127.0.0.1/32",)), resolver=resolver)
    assert str(err.value) == f"URL host sneaky.test resolves to 127.0.0.2, a loopback address; {REFUSAL}"
    assert len(web.requests(f"{path_prefix}/img")) == 1
    assert web.requests(target) == []
    assert_nothing_stored(store)


def test_redirect_to_another_scheme_is_refused(web, path_prefix, store):
    url = web.redirect(f"{path_prefix}/img", "file:///etc/passwd")
    with pytest.raises(UrlRefused, match="redirect refused: URL scheme 'file' is not supported"):
        fetch(url, store)


def test_name_resolving_to_a_private_address_is_refused_before_connecting(store):
    calls = []

    def resolver(host, port, *args, **kwargs):
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port))]

    with pytest.raises(UrlRefused, match=f"URL host intranet.test resolves to 10.0.0.1, a private address; {REFUSAL}"):
        fetch("http://intranet.test/img", store, resolver=resolver)
    assert calls == ["intranet.test"]


def test_one_refused_record_among_allowed_ones_refuses_the_name(store):
    resolver = resolving({"mixed.test": ["127.0.0.1", "10.0.0.1"]})
    with pytest.raises(UrlRefused, match="resolves to 10.0.0.1, a private address"):
        fetch("http://mixed.test/img", store, resolver=resolver)


def test_every_connection_is_checked_so_dns_rebinding_is_caught(web, path_prefix, store):
    path = f"{path_prefix}/img"
    web.add(path, CONTENT, fault=Fault(drop_after=50_000))
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])  # a rebinding name: harmless first, then internal

    def resolver(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in next(answers)]

    with pytest.raises(UrlRefused, match="rebind.test resolves to 10.0.0.1"):
        fetch(web.url(path, host="rebind.test"), store, resolver=resolver)
    (only,) = web.requests(path)
    assert only["host"] == f"rebind.test:{web.port}"  # the name is still the Host header
    assert_nothing_stored(store)


def test_ftp_url_to_an_internal_address_is_refused_before_connecting(store):
    with pytest.raises(UrlRefused, match=f"URL host 169.254.169.254 is a link-local \\(cloud metadata\\) address"):
        fetch("ftp://169.254.169.254/img", store, options=opts(allowed_cidrs=()))


@pytest.mark.parametrize(
    "url, reason",
    [
        ("file:///etc/passwd", "URL scheme 'file' is not supported"),
        ("http://user@127.0.0.1/img", "contains credentials before the host"),
        ("http:///img", "has no host"),
    ],
)
def test_malformed_urls_are_refused_up_front(store, url, reason):
    with pytest.raises(UrlRefused, match=reason):
        fetch(url, store)
