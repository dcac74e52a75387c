"""Download a URL (http, https, ftp) into a store in one verified pass, resuming after failures.

``Download`` is an iterable of byte chunks that hides reconnects: after a dropped or stalled
connection it asks for the rest (HTTP ``Range``/``If-Range``, FTP ``REST``) and carries on, so
``write_verified`` hashes and writes every byte exactly once and never reads the object back.
Every address a connection goes to (first URL, each redirect, each retry) is resolved here,
checked by ``secstor.domain.urlsafety`` and then connected to by address, so what is checked
is what is fetched.
"""

from __future__ import annotations

import ftplib
import http
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, urljoin

import certifi
import httpcore

from secstor.domain.urlsafety import ParsedUrl, UnsafeUrl, check_address, check_url
from secstor.stores.base import StoreDriver

from .checksums import Checksum
from .transfer import SizeLimitExceeded, TransferError, TransferResult, write_verified

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20  # what the writer gets at a time: bounds memory whatever the image size
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = {301, 302, 303, 307, 308}
# Statuses a later attempt may not get; every other 4xx is the URL's fault and final at once.
_RETRYABLE_STATUSES = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_USER_AGENT = b"secstor-downloader"

Resolver = Callable[..., list]  # socket.getaddrinfo's signature
Progress = Callable[[int, "int | None"], None]  # (bytes done, total or None)


class DownloadError(TransferError):
    """The download failed for good; the message is the reason shown to the user."""


class UrlRefused(DownloadError):
    """The URL, or a redirect, leads to an address secstor must not fetch from."""


class DeclaredSizeTooLarge(SizeLimitExceeded):
    def __init__(self, declared: int, limit: int) -> None:
        super().__init__(limit)
        self.declared = declared
        self.args = (f"the server announces {declared} bytes, more than the limit of {limit} bytes",)


class _Retryable(Exception):
    """One attempt failed in a way a later attempt may not (reset, stall, 503...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DownloadOptions:
    allowed_cidrs: tuple[str, ...] = ()  # secstorage.allowed.internal.sites
    connect_timeout: float = 30.0
    read_timeout: float = 60.0  # waiting for the server's answer to a request
    stall_timeout: float = 60.0  # the body may go this long without a single byte
    max_bytes: int | None = None
    max_retries: int = 5  # over the whole download, not per connection
    backoff: float = 1.0  # first pause between attempts; doubles each time
    max_backoff: float = 60.0
    chunk_size: int = CHUNK_SIZE
    # secstorage.download.ca.bundle: a PEM file of CA certificates https servers may also be
    # signed by (a private CA), besides the system's and certifi's.
    ca_bundle: str | None = None


def _status_text(status: int) -> str:
    try:
        return f"HTTP {status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _header(response: httpcore.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def tls_context(ca_bundle: str | None) -> ssl.SSLContext | None:
    """What https downloads trust besides httpcore's default (the system's CAs and certifi's):
    the CAs of ``ca_bundle``; None: the default alone. Certificates and host names are always
    verified. Contexts are cached per file version (loading CAs takes tens of ms), so an edited
    bundle takes effect at the next download."""
    if not ca_bundle:
        return None
    try:
        st = os.stat(ca_bundle)
    except OSError as exc:
        raise DownloadError(
            f"cannot read the CA bundle {ca_bundle} (secstorage.download.ca.bundle): {exc.strerror}"
        ) from None
    return _tls_context(ca_bundle, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4)
def _tls_context(ca_bundle: str, _mtime_ns: int, _size: int) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.load_verify_locations(certifi.where())
    try:
        context.load_verify_locations(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise DownloadError(f"cannot load the CA bundle {ca_bundle} (secstorage.download.ca.bundle): {exc}") from None
    return context


class _PinnedBackend(httpcore.SyncBackend):
    """Connects only to addresses the downloader checked for the (host, port) httpcore asks
    for, so DNS answers cannot change between the check and the connection."""

    def __init__(self) -> None:
        self.pins: dict[tuple[str, int], list[str]] = {}

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        addresses = self.pins.get((host, port))
        if not addresses:
            raise httpcore.ConnectError(f"{host}:{port} has no checked address")
        failure: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure


class Download:
    """The bytes at ``url`` as an iterable of chunks of at most ``options.chunk_size``.

    Call start() (or iterate) to open the first connection; ``total`` is then the announced
    size (or None).  Raises DownloadError (UrlRefused for refused addresses) or
    SizeLimitExceeded; both are final, transient failures are retried inside.
    """

    def __init__(
        self,
        url: str,
        options: DownloadOptions = DownloadOptions(),
        *,
        resolver: Resolver = socket.getaddrinfo,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        try:
            self.url = check_url(url)
        except UnsafeUrl as exc:
            raise UrlRefused(str(exc)) from None
        self.options = options
        self.total: int | None = None
        self.received = 0
        self.retries = 0
        self._resolver = resolver
        self._sleep = sleep
        self._validator: tuple[bytes, str] | None = None  # (If-Range header, value) of the first response
        self._body: Iterator[bytes] | None = None
        self._closers: list[Callable[[], None]] = []
        self._backend = _PinnedBackend()
        self._pool: httpcore.ConnectionPool | None = None

    # -- public -------------------------------------------------------------------------

    def start(self) -> Download:
        if self._body is None:
            self._open_with_retries()
        return self

    def __iter__(self) -> Iterator[bytes]:
        self.start()
        size = self.options.chunk_size
        # Network pieces (views, not copies) are gathered until they fill a chunk, which is then
        # built with one join: every byte is copied once, where slicing a bytearray copied it 3 times.
        pending: list[memoryview] = []
        held = 0
        for piece in self._pieces():
            view = memoryview(piece)
            while held + len(view) >= size:
                take = size - held
                pending.append(view[:take])
                yield b"".join(pending)
                pending, held, view = [], 0, view[take:]
            if view:
                pending.append(view)
                held += len(view)
        if pending:
            yield b"".join(pending)

    def close(self) -> None:
        self._close_attempt()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Download:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- attempts -----------------------------------------------------------------------

    def _pieces(self) -> Iterator[bytes]:
        while True:
            try:
                for piece in self._body:
                    self.received += len(piece)
                    if self.options.max_bytes is not None and self.received > self.options.max_bytes:
                        raise SizeLimitExceeded(self.options.max_bytes)
                    yield piece
                self._close_attempt()
                if self.total is not None and self.received < self.total:
                    raise _Retryable(f"connection closed after {self.received} of {self.total} bytes")
                return
            except _Retryable as exc:
                self._close_attempt()
                self._pause_or_give_up(exc.reason)
                self._open_with_retries()

    def _open_with_retries(self) -> None:
        while True:
            try:
                self._body = self._open_ftp() if self.url.scheme == "ftp" else self._open_http()
                return
            except _Retryable as exc:
                self._close_attempt()
                self._pause_or_give_up(exc.reason)
            except BaseException:
                self._close_attempt()
                raise

    def _pause_or_give_up(self, reason: str) -> None:
        if self.retries >= self.options.max_retries:
            raise DownloadError(f"{reason}; gave up after {self.retries} retries")
        delay = min(self.options.backoff * 2**self.retries, self.options.max_backoff)
        self.retries += 1
        log.warning(
            "download from %s: %s; retry %d of %d in %.1f s",
            self.url.host, reason, self.retries, self.options.max_retries, delay,
        )
        self._sleep(delay)

    def _close_attempt(self) -> None:
        self._body = None
        while self._closers:
            try:
                self._closers.pop()()
            except (OSError, EOFError, ftplib.Error, httpcore.NetworkError):
                pass  # the connection is being thrown away; its goodbye failing changes nothing

    def _addresses(self, url: ParsedUrl) -> list[str]:
        """Resolve ``url``'s host and check every address: one bad record refuses the URL,
        otherwise a name with a public and a private record would pass by luck."""
        try:
            infos = self._resolver(url.host, url.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:
                raise _Retryable(f"cannot resolve host {url.host}: {exc.strerror}") from None
            raise DownloadError(f"cannot resolve host {url.host}: {exc.strerror}") from None
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        if not addresses:
            raise DownloadError(f"cannot resolve host {url.host}: no addresses")
        for address in addresses:
            try:
                check_address(address, self.options.allowed_cidrs, host=url.host)
            except UnsafeUrl as exc:
                raise UrlRefused(str(exc)) from None
        return addresses

    # -- HTTP ---------------------------------------------------------------------------

    def _open_http(self) -> Iterator[bytes]:
        url = self.url
        for _hop in range(MAX_REDIRECTS + 1):
            response, timeouts = self._request(url)
            status = response.status
            if status not in _REDIRECT_STATUSES:
                return self._accept(url, response, timeouts)
            location = _header(response, b"location")
            if not location:
                raise DownloadError(f"{_status_text(status)} from {url.host} without a Location header")
            try:
                url = check_url(urljoin(url.url, location))
            except UnsafeUrl as exc:
                raise UrlRefused(f"redirect refused: {exc}") from None
            self._close_attempt()
        raise DownloadError(f"more than {MAX_REDIRECTS} redirects")

    def _request(self, url: ParsedUrl) -> tuple[httpcore.Response, dict]:
        self._backend.pins[(url.host, url.port)] = self._addresses(url)
        if self._pool is None:
            self._pool = httpcore.ConnectionPool(network_backend=self._backend, max_connections=1, retries=0,
                                                 ssl_context=tls_context(self.options.ca_bundle))
        headers = [(b"Host", url.host_header.encode()), (b"User-Agent", _USER_AGENT), (b"Accept-Encoding", b"identity")]
        if self.received:
            headers.append((b"Range", f"bytes={self.received}-".encode()))
            if self._validator is not None:
                # The server answers 200 (the whole new file) instead of 206 if the file
                # changed, so old and new bytes are never spliced together.
                headers.append((b"If-Range", self._validator[1].encode("latin-1")))
        o = self.options
        timeouts = {"connect": o.connect_timeout, "read": o.read_timeout, "write": o.connect_timeout, "pool": o.connect_timeout}
        target = httpcore.URL(scheme=url.scheme.encode(), host=url.host.encode(), port=url.port, target=url.target.encode())
        try:
            response = self._pool.handle_request(
                httpcore.Request(b"GET", target, headers=headers, extensions={"timeout": timeouts})
            )
        except httpcore.ConnectTimeout:
            raise _Retryable(f"could not connect to {url.host} port {url.port}: timed out after {o.connect_timeout} s") from None
        except httpcore.ConnectError as exc:
            cause = exc.args[0] if exc.args else None  # httpcore wraps the ssl error, dropping __cause__
            if isinstance(cause, ssl.SSLCertVerificationError):
                # Final: another attempt meets the same certificate.
                raise DownloadError(
                    f"the TLS certificate of {url.host} is not trusted: {cause.verify_message}; if it is "
                    "signed by a private CA, add that CA to the file named by secstorage.download.ca.bundle"
                ) from None
            raise _Retryable(f"could not connect to {url.host} port {url.port}: {exc}") from None
        except httpcore.ReadTimeout:
            raise _Retryable(f"no response from {url.host} within {o.read_timeout} s") from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException) as exc:
            raise _Retryable(f"request to {url.host} failed after {self.received} bytes: {exc or type(exc).__name__}") from None
        self._closers.append(response.close)
        return response, timeouts

    def _accept(self, url: ParsedUrl, response: httpcore.Response, timeouts: dict) -> Iterator[bytes]:
        status = response.status
        if status in _RETRYABLE_STATUSES:
            raise _Retryable(f"{_status_text(status)} from {url.host}")
        if status not in (200, 206):
            raise DownloadError(_status_text(status))
        validator = self._validator_of(response)
        if status == 200:
            if self.received:
                if self._validator is not None and validator != self._validator:
                    raise DownloadError(
                        f"the file changed on the server after {self.received} bytes were downloaded "
                        "(its ETag/Last-Modified differs); download it again"
                    )
                raise DownloadError(
                    f"the server ignored the request to resume at byte {self.received} and sent the whole "
                    "file again; cannot resume this download"
                )
            self._first_response(response, validator)
        else:
            self._check_resumed(response, validator)
        # httpcore reads the body's timeout when the body is first read, so from here on the
        # socket waits stall_timeout (not read_timeout) for each piece.
        timeouts["read"] = self.options.stall_timeout
        return self._http_body(url, response)

    @staticmethod
    def _validator_of(response: httpcore.Response) -> tuple[bytes, str] | None:
        etag = _header(response, b"etag")
        if etag and not etag.startswith("W/"):  # If-Range needs a strong validator
            return (b"etag", etag)
        modified = _header(response, b"last-modified")
        return (b"last-modified", modified) if modified else None

    def _first_response(self, response: httpcore.Response, validator) -> None:
        self._validator = validator
        length = _header(response, b"content-length")
        self.total = int(length) if length and length.isdigit() else None
        limit = self.options.max_bytes
        if limit is not None and self.total is not None and self.total > limit:
            raise DeclaredSizeTooLarge(self.total, limit)

    def _check_resumed(self, response: httpcore.Response, validator) -> None:
        if not self.received:
            raise DownloadError("the server sent a partial response (206) to a request for the whole file")
        match = _CONTENT_RANGE.match(_header(response, b"content-range") or "")
        if match is None:
            raise DownloadError("the server's partial response has no valid Content-Range; cannot resume")
        start, total = int(match.group(1)), match.group(3)
        if start != self.received:
            raise DownloadError(
                f"the server resumed at byte {start} instead of {self.received}; cannot resume this download"
            )
        if (self._validator is not None and validator is not None and validator != self._validator) or (
            self.total is not None and total != "*" and int(total) != self.total
        ):
            raise DownloadError(f"the file changed on the server after {self.received} bytes were downloaded")

    def _http_body(self, url: ParsedUrl, response: httpcore.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_stream()
        except httpcore.ReadTimeout:
            raise _Retryable(
                f"download stalled: no data for {self.options.stall_timeout} s after {self.received} bytes"
            ) from None
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise _Retryable(f"connection reset after {self.received} bytes ({exc or type(exc).__name__})") from None

    # -- FTP ----------------------------------------------------------------------------

    def _open_ftp(self) -> Iterator[bytes]:
        url, o = self.url, self.options
        path = unquote(url.target.partition("?")[0])
        ftp = ftplib.FTP()
        # ftplib ignores the address in a PASV reply and uses the control connection's peer
        # (trust_server_pasv_ipv4_address is False), so the data connection goes to the
        # address checked here too.
        self._closers.append(ftp.close)
        try:
            for address in self._addresses(url):
                try:
                    ftp.connect(address, url.port, timeout=o.connect_timeout)
                    break
                except OSError as exc:
                    failure = exc
            else:
                raise _Retryable(f"could not connect to {url.host} port {url.port}: {failure}")
            ftp.sock.settimeout(o.read_timeout)
            ftp.login(url.username or "anonymous", url.password or "anonymous@")
            ftp.voidcmd("TYPE I")
            if not self.received:
                try:
                    self.total = ftp.size(path)
                except ftplib.error_perm:
                    self.total = None  # SIZE is optional; the download works without it
                limit = o.max_bytes
                if limit is not None and self.total is not None and self.total > limit:
                    raise DeclaredSizeTooLarge(self.total, limit)
            try:
                data = ftp.transfercmd(f"RETR {path}", rest=self.received or None)
            except ftplib.error_reply as exc:
                raise DownloadError(f"FTP server cannot resume at byte {self.received}: {exc}") from None
        except ftplib.error_perm as exc:
            raise DownloadError(f"FTP {exc}") from None
        except (ftplib.error_temp, ftplib.error_proto, OSError, EOFError) as exc:
            raise _Retryable(f"FTP session with {url.host} failed after {self.received} bytes: {exc}") from None
        self._closers.append(data.close)
        data.settimeout(o.stall_timeout)
        return self._ftp_body(ftp, data)

    def _ftp_body(self, ftp: ftplib.FTP, data: socket.socket) -> Iterator[bytes]:
        try:
            while piece := data.recv(1 << 16):
                yield piece
            data.close()
            ftp.voidresp()  # 226: the server says the file is complete
        except TimeoutError:
            raise _Retryable(
                f"download stalled: no data for {self.options.stall_timeout} s after {self.received} bytes"
            ) from None
        except (OSError, EOFError, ftplib.Error) as exc:
            raise _Retryable(f"connection reset after {self.received} bytes ({exc})") from None


def download_to_store(
    url: str,
    driver: StoreDriver,
    key: str,
    *,
    expected: Checksum | None = None,
    algorithms: Iterable[str] = ("SHA-256",),
    options: DownloadOptions = DownloadOptions(),
    progress: Progress | None = None,
    resolver: Resolver = socket.getaddrinfo,
    sleep: Callable[[float], None] = time.sleep,
) -> TransferResult:
    """Download ``url`` to ``key``, hashing while writing; publish only if ``expected`` matches.

    Raises DownloadError, SizeLimitExceeded or ChecksumMismatch; nothing is then stored.
    """
    with Download(url, options, resolver=resolver, sleep=sleep) as download:
        download.start()
        report = None if progress is None else (lambda done: progress(done, download.total))
        return write_verified(
            driver, key, download, expected=expected, algorithms=algorithms, size_hint=download.total, progress=report
        )
