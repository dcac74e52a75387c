"""Real servers for the other download protocols: FTP (pyftpdlib) and https (the test HTTP server
over TLS, with a private CA made here, so trusting it takes secstorage.download.ca.bundle)."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import io
import logging
import ssl
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

with warnings.catch_warnings():  # pyftpdlib is built on asyncore/asynchat, deprecated in Python 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.filesystems import AbstractedFS
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import FTPServer

from tests.support.httpserver import TestHttpServer, http_server

FTP_USER, FTP_PASSWORD = "secstor", "s3cret"


# -- TLS ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the private CA's certificate (PEM): what a client must trust
    cert: Path  # the server's certificate, for 127.0.0.1 and localhost, signed by the CA
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(directory: Path) -> Certificates:
    """A private CA (self-signed) and a server certificate it signed (EC keys: fast to make)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(_name("secstor test CA")).issuer_name(_name("secstor test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return paths


@contextlib.contextmanager
def https_server(certificates: Certificates) -> Iterator[TestHttpServer]:
    with http_server(certificates.server_context()) as server:
        yield server


# -- FTP ------------------------------------------------------------------------------------


class _CutOnce(io.RawIOBase):
    """A file that ends after ``limit`` bytes: the server sends a short file once, as a transfer
    cut off mid-way looks to a client that knows the size."""

    def __init__(self, real, limit: int) -> None:
        self.real, self.left = real, limit

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.real.read(min(size, self.left) if size >= 0 else self.left)
        self.left -= len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.real.seek(offset, whence)

    def close(self) -> None:
        self.real.close()
        super().close()


class TestFtpServer:
    """pyftpdlib on 127.0.0.1 serving ``root`` to anonymous and to FTP_USER/FTP_PASSWORD."""

    __test__ = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cut: dict[str, int] = {}  # file name -> bytes its next RETR sends
        self.commands: list[str] = []
        authorizer = DummyAuthorizer()
        authorizer.add_anonymous(str(root))
        authorizer.add_user(FTP_USER, FTP_PASSWORD, str(root), perm="elr")
        server = self

        class Fs(AbstractedFS):
            def open(self, filename, mode):
                real = super().open(filename, mode)
                limit = server.cut.pop(Path(filename).name, None)
                return real if limit is None else _CutOnce(real, limit)

        class Handler(FTPHandler):
            use_sendfile = False  # the cut file has no descriptor to send from
            auth_failed_timeout = 0.1  # pyftpdlib waits 3 s before a 530, longer than the tests' read timeout
            abstracted_fs = Fs

            def pre_process_command(self, line, cmd, arg):
                server.commands.append(line)
                return super().pre_process_command(line, cmd, arg)

        Handler.authorizer = authorizer
        logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
        # An IO loop of its own: pyftpdlib's default is one per process, shared by every server.
        self._server = FTPServer(("127.0.0.1", 0), Handler, ioloop=IOLoop())
        self.port = self._server.address[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-ftp", daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        self._server.close_all()

    def add(self, name: str, content: bytes) -> str:
        (self.root / name).write_bytes(content)
        return self.url(name)

    def url(self, name: str, credentials: str = "") -> str:
        return f"ftp://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> TestFtpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


@contextlib.contextmanager
def ftp_server(root: Path) -> Iterator[TestFtpServer]:
    root.mkdir(parents=True, exist_ok=True)
    with TestFtpServer(root) as server:
        yield server


# -- fixtures (import them into a test module; each module gets its own servers) --------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def https(certificates) -> Iterator[TestHttpServer]:
    with https_server(certificates) as server:
        yield server


@pytest.fixture(scope="module")
def ftp(tmp_path_factory) -> Iterator[TestFtpServer]:
    with ftp_server(tmp_path_factory.mktemp("ftp-root")) as server:
        yield server
