"""A real HTTP server on 127.0.0.1 for download tests, with Range support and fault modes.

Each path serves bytes (or a redirect) and may misbehave the way real servers and networks
do: drop the connection part-way, stall, ignore Range, answer 503, or change the file between
requests.  Every request's headers are recorded so tests can assert what the client sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Fault:
    """Misbehaviour for the first ``times`` requests of a path (None: every request)."""

    drop_after: int | None = None  # send this many body bytes, then close the connection
    stall_after: int | None = None  # send this many body bytes, then go silent for stall_seconds
    stall_seconds: float = 30.0
    status: int | None = None  # answer this status instead of the file
    times: int | None = 1


@dataclass
class Resource:
    versions: list[bytes]  # request i serves versions[min(i, last)], with its own ETag
    fault: Fault | None = None
    ignore_range: bool = False
    announce_length: bool = True  # False: no Content-Length, the body ends when the connection closes
    redirect: str | None = None
    redirect_status: int = 302
    served: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # Clients abandoning a response (stall and resume tests do it on purpose) reset the
        # connection; that is expected here, not an error worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _QuietTlsServer(_QuietServer):
    """The same server over TLS. The handshake runs in the request's thread, and a client that
    refuses the certificate (what a test of an untrusted server expects) just goes away."""

    def __init__(self, address, handler, context: ssl.SSLContext) -> None:
        self.tls = context
        super().__init__(address, handler)

    def finish_request(self, request, client_address) -> None:
        try:
            tls = self.tls.wrap_socket(request, server_side=True)
        except OSError:  # ssl.SSLError too
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


def etag_of(content: bytes) -> str:
    return '"' + hashlib.sha256(content).hexdigest()[:16] + '"'


class TestHttpServer:
    """Use as a context manager; ``add``/``redirect`` return the URL of the new path."""

    __test__ = False  # not a pytest test class

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.resources: dict[str, Resource] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.scheme = "https" if ssl_context else "http"
        self._httpd = (_QuietTlsServer(("127.0.0.1", 0), self._handler_class(), ssl_context) if ssl_context
                       else _QuietServer(("127.0.0.1", 0), self._handler_class()))
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="test-http", daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def add(
        self,
        path: str,
        *versions: bytes,
        fault: Fault | None = None,
        ignore_range: bool = False,
        announce_length: bool = True,
    ) -> str:
        with self._lock:
            self.resources[path] = Resource(
                list(versions), fault=fault, ignore_range=ignore_range, announce_length=announce_length
            )
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        with self._lock:
            self.resources[path] = Resource([], redirect=location, redirect_status=status)
        return self.url(path)

    def requests(self, path: str) -> list[dict[str, str]]:
        """Headers (lower-case names) of every request made for ``path`` so far."""
        resource = self.resources.get(path)
        return list(resource.requests) if resource else []

    def __enter__(self) -> TestHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()  # wakes stalled handlers so shutdown does not wait for them
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def _next(self, path: str, headers: dict[str, str]) -> tuple[Resource | None, bytes, Fault | None]:
        """Record the request and pick the version and fault it gets, atomically."""
        with self._lock:
            resource = self.resources.get(path)
            if resource is None:
                return None, b"", None
            resource.requests.append(headers)
            index = resource.served
            resource.served += 1
            content = resource.versions[min(index, len(resource.versions) - 1)] if resource.versions else b""
            fault = resource.fault
            if fault is not None and fault.times is not None and index >= fault.times:
                fault = None
            return resource, content, fault

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                resource, content, fault = server._next(self.path, headers)
                if resource is None:
                    return self._plain(404)
                if resource.redirect is not None:
                    self.send_response(resource.redirect_status)
                    self.send_header("Location", resource.redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault is not None and fault.status is not None:
                    return self._plain(fault.status)
                self._send_content(resource, content, fault, headers)

            def _plain(self, status: int) -> None:
                body = f"{status}\n".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _send_content(self, resource: Resource, content: bytes, fault: Fault | None, headers) -> None:
                etag = etag_of(content)
                start, status = 0, 200
                match = _RANGE.match(headers.get("range", ""))
                if_range = headers.get("if-range")
                if match and not resource.ignore_range and (if_range is None or if_range == etag):
                    start = int(match.group(1))
                    if start >= len(content):
                        return self._plain(416)
                    status = 206
                body = content[start:]
                self.send_response(status)
                if resource.announce_length:
                    self.send_header("Content-Length", str(len(body)))
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.send_header("ETag", etag)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
                self.end_headers()
                try:
                    self._send_body(body, fault)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up on this response

            def _send_body(self, body: bytes, fault: Fault | None) -> None:
                cut = None if fault is None else fault.drop_after if fault.drop_after is not None else fault.stall_after
                if cut is None:
                    self.wfile.write(body)
                    return
                self.wfile.write(body[:cut])
                self.wfile.flush()
                if fault.drop_after is not None:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                server._stop.wait(fault.stall_seconds)
                self.wfile.write(body[cut:])

        return Handler


@contextlib.contextmanager
def http_server(ssl_context: ssl.SSLContext | None = None) -> Iterator[TestHttpServer]:
    """``ssl_context`` (server side, with its certificate loaded): serve https instead."""
    with TestHttpServer(ssl_context) as server:
        yield server
