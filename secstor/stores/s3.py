"""S3-compatible image store (AWS, Ceph RGW, MinIO).

In-bucket layout: an object with key ``a/b/c`` is the S3 object ``<prefix>a/b/c`` in the
configured bucket, so the bucket can be browsed and restored with any S3 tool.  Writes in
progress are unfinished multipart uploads (invisible to GET/LIST until completed); the probe
object lives under ``<prefix>.secstor-probe/`` for a moment and is never listed.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .base import (
    EPOCH,
    Capability,
    Capacity,
    CheckResult,
    InvalidStoreParameter,
    ObjectInfo,
    ObjectNotFound,
    ObjectWriter,
    StoreDriver,
    StoreError,
    StoreFull,
    StoreUnavailable,
    is_internal,
    validate_dir,
    validate_key,
    validate_prefix,
)

log = logging.getLogger(__name__)

MiB = 1 << 20
GiB = 1 << 30
MIN_PART = 5 * MiB  # S3: every part but the last must be at least this big
MAX_PART = 5 * GiB
MAX_PARTS = 10_000
PARTS_PER_DOUBLING = 1000  # unknown-size uploads double their part size this often
MAX_COPY_OBJECT = 5 * GiB  # S3: largest object a single CopyObject may copy
POOLED_WRITERS = 16  # concurrent multipart uploads one driver keeps connections for
#: Reported total when no quota is configured: S3 has no capacity of its own, and a fixed
#: large figure keeps "fullest store" placement arithmetic well defined.
UNLIMITED_TOTAL = 1 << 50  # 1 PiB

SIGNERS = {"AWSS3V4SignerType": "s3v4", "S3SignerType": "s3"}
CHECKSUM_MODES = ("when_required", "when_supported")

# One boto3 session for the process: it caches the parsed service models, which makes each
# driver's client 3x cheaper to build.  Sessions are not thread-safe, hence the lock.
_SESSION = boto3.session.Session()
_SESSION_LOCK = threading.Lock()

_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}
_FULL = {"QuotaExceeded", "XMinioStorageFull", "InsufficientStorage"}


@dataclass(frozen=True)
class S3Config:
    """Connection settings; defaults follow CloudStack's S3 image store (AWS SDK defaults)."""

    endpoint: str  # host[:port] (scheme from use_https) or a full http(s):// URL
    bucket: str
    access_key: str
    secret_key: str
    use_https: bool = True
    signer: str = "AWSS3V4SignerType"
    connection_timeout_ms: int = 10_000
    socket_timeout_ms: int = 50_000
    max_error_retry: int = 3
    #: Accepted for CloudStack compatibility; botocore's pool has no connection TTL, so it
    #: has no effect.
    connection_ttl_ms: int = -1
    use_tcp_keepalive: bool = False
    region: str = "us-east-1"
    #: False: virtual-host addressing (``bucket.endpoint``), which needs wildcard DNS for the
    #: endpoint's name; Ceph RGW and MinIO rarely have it.  botocore uses path style anyway
    #: when the endpoint is an IP address.
    path_style: bool = True
    #: HTTP proxy for every request (``http://host:port``), for endpoints reachable only
    #: through one.  Name resolution is the proxy's, so ``bucket.endpoint`` need not resolve here.
    proxy: str | None = None
    prefix: str = ""
    #: "when_required" for Ceph RGW/MinIO, which reject the newer default CRC trailers.
    checksum_mode: str = "when_required"
    part_size: int = 16 * MiB
    max_concurrency: int = 4
    #: Objects of known size below this go as one PutObject (rclone's cutoff is 200 MiB): a
    #: multipart upload costs two more round trips and the server's reassembly of the parts.
    #: Capped by the memory bound of a multipart upload, (max_concurrency + 1) x part_size.
    single_put_max: int = 64 * MiB
    quota_bytes: int | None = None
    multipart_copy_threshold: int = MAX_COPY_OBJECT

    def __post_init__(self) -> None:
        _ = self.endpoint_url  # raises InvalidStoreParameter if malformed
        if not self.bucket or "/" in self.bucket:
            raise InvalidStoreParameter("bucket", f"must be a bucket name, got {self.bucket!r}")
        for name in ("access_key", "secret_key"):
            if not getattr(self, name):
                raise InvalidStoreParameter(name, "must not be empty")
        if self.signer not in SIGNERS:
            raise InvalidStoreParameter("signer", f"must be one of {', '.join(SIGNERS)}, got {self.signer!r}")
        if self.checksum_mode not in CHECKSUM_MODES:
            raise InvalidStoreParameter("checksum_mode", f"must be one of {', '.join(CHECKSUM_MODES)}")
        if not MIN_PART <= self.part_size <= MAX_PART:
            raise InvalidStoreParameter("part_size", f"must be between {MIN_PART} and {MAX_PART} bytes")
        if self.max_concurrency < 1:
            raise InvalidStoreParameter("max_concurrency", "must be at least 1")
        if self.single_put_max < 0:
            raise InvalidStoreParameter("single_put_max", "must not be negative")
        for name in ("connection_timeout_ms", "socket_timeout_ms", "max_error_retry"):
            if getattr(self, name) < 0:
                raise InvalidStoreParameter(name, "must not be negative")
        if self.quota_bytes is not None and self.quota_bytes <= 0:
            raise InvalidStoreParameter("quota_bytes", "must be positive")
        if self.prefix.strip("/"):
            validate_key(self.prefix.strip("/"))
        if self.proxy is not None:
            _http_url("proxy", self.proxy)

    @property
    def endpoint_url(self) -> str:
        ep = (self.endpoint or "").strip().rstrip("/")
        if "://" not in ep:
            ep = f"{'https' if self.use_https else 'http'}://{ep}"
        return _http_url("endpoint", ep, given=self.endpoint)

    @property
    def single_put_limit(self) -> int:
        """Largest object one PutObject carries; 0 when single PUTs are off (below S3's
        minimum part size, a stream longer than its hint could not turn into a first part)."""
        limit = min(self.single_put_max, (self.max_concurrency + 1) * self.part_size, MAX_PART)
        return limit if limit >= MIN_PART else 0

    @property
    def key_prefix(self) -> str:
        p = self.prefix.strip("/")
        return p + "/" if p else ""


def _http_url(param: str, url: str, given: str | None = None) -> str:
    """``url`` if it is http(s)://host[:port]..., else InvalidStoreParameter naming ``param``."""
    parts = urlsplit(url)
    try:
        parts.port
    except ValueError:
        raise InvalidStoreParameter(param, f"invalid port in {given or url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidStoreParameter(param, f"must be host[:port] or an http(s):// URL, got {given or url!r}")
    return url


def _add_content_md5(request, **_) -> None:
    """DeleteObjects must carry an integrity header.  botocore >= 1.36 sends a CRC32 only, which
    older Ceph RGW and MinIO releases refuse (MissingContentMD5); Content-MD5 suits them all."""
    if isinstance(request.body, (bytes, bytearray)) and "Content-MD5" not in request.headers:
        digest = hashlib.md5(request.body, usedforsecurity=False).digest()
        request.headers["Content-MD5"] = base64.b64encode(digest).decode("ascii")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(timezone.utc)


class _S3Writer(ObjectWriter):
    """Buffers one part; objects whose size hint is below ``single_put_limit`` (and small
    ones of unknown size) become one PutObject, the others a parallel multipart upload.

    The writer thread blocks while ``max_concurrency`` parts are in flight, so memory stays
    below (max_concurrency + 1) x part size whatever the object size.
    """

    def __init__(self, driver: S3Driver, key: str, size_hint: int | None) -> None:
        super().__init__(key)
        self._d = driver
        self._s3key = driver._s3key(key)
        self._base_part = driver.part_size_for(size_hint)
        self._unknown_size = size_hint is None
        limit = driver.config.single_put_limit
        # Buffer the whole object for one PUT; a stream longer than its hint still works: the
        # full buffer becomes part 1 of a multipart upload (S3 parts may differ in size).
        self._single_put = limit if size_hint is not None and size_hint < limit else 0
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(driver.config.max_concurrency)
        self._futures: list[Future] = []
        self._failed: Future | None = None

    def _part_size(self) -> int:
        if self._single_put and not self._futures:
            return self._single_put
        if not self._unknown_size:
            return self._base_part  # already sized to fit the hint in 10,000 parts
        # Unknown size: doubling every 1000 parts reaches ~16 TB (at 16 MiB) within 10,000 parts,
        # while small and medium objects keep small parts and little memory.
        return min(self._base_part << (len(self._futures) // PARTS_PER_DOUBLING), MAX_PART)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            room = self._part_size() - len(self._buf)
            self._buf += view[:room]
            view = view[room:]
            if len(self._buf) == self._part_size():
                # Hand the full buffer itself to the upload: parts are never copied.
                part, self._buf = self._buf, bytearray()
                self._submit(part)

    def _submit(self, body: bytearray) -> None:
        if self._upload_id is None:
            with self._d._errors("start multipart upload", self.key):
                self._upload_id = self._d._client.create_multipart_upload(
                    Bucket=self._d.bucket, Key=self._s3key, **self._d._checksum_args()
                )["UploadId"]
            self._pool = ThreadPoolExecutor(self._d.config.max_concurrency, thread_name_prefix="s3-part")
        self._raise_failed()
        if len(self._futures) >= MAX_PARTS:
            raise StoreError(f"{self.key!r} needs more than {MAX_PARTS} parts: its size_hint was too small")
        self._slots.acquire()
        try:
            future = self._pool.submit(self._upload_part, len(self._futures) + 1, body)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(self._part_done)
        self._futures.append(future)

    def _part_done(self, future: Future) -> None:
        self._slots.release()
        if not future.cancelled() and future.exception() is not None and self._failed is None:
            self._failed = future

    def _upload_part(self, number: int, body: bytearray) -> dict:
        resp = self._d._client.upload_part(
            Bucket=self._d.bucket, Key=self._s3key, UploadId=self._upload_id,
            PartNumber=number, Body=body, **self._d._checksum_args(),
        )
        part = {"PartNumber": number, "ETag": resp["ETag"]}
        if "ChecksumCRC32" in resp:
            part["ChecksumCRC32"] = resp["ChecksumCRC32"]
        return part

    def _raise_failed(self) -> None:
        """Fail fast: surface a failed part on the next write instead of at commit."""
        if self._failed is not None:
            with self._d._errors("upload part", self.key):
                raise self._failed.exception()

    def _commit(self) -> ObjectInfo:
        client, bucket = self._d._client, self._d.bucket
        if self._upload_id is None:
            with self._d._errors("put object", self.key):
                client.put_object(Bucket=bucket, Key=self._s3key, Body=self._buf)
        else:
            if self._buf:
                self._submit(self._buf)
                self._buf = bytearray()
            with self._d._errors("complete multipart upload", self.key):
                parts = [f.result() for f in self._futures]
                client.complete_multipart_upload(
                    Bucket=bucket, Key=self._s3key, UploadId=self._upload_id, MultipartUpload={"Parts": parts}
                )
            self._pool.shutdown()
        return ObjectInfo(self.key, self.bytes_written, datetime.now(timezone.utc))

    def _abort(self) -> None:
        self._buf = bytearray()
        if self._pool is not None:
            for future in self._futures:
                future.cancel()
            # Let running parts finish first: a part landing after the abort would be orphaned.
            self._pool.shutdown(wait=True)
        if self._upload_id is not None:
            self._d._abort_upload(self._s3key, self._upload_id)


class S3Driver(StoreDriver):
    provider = "S3"
    capabilities = frozenset({Capability.RANGE_READ, Capability.SERVER_SIDE_COPY, Capability.MULTIPART})

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self.bucket = config.bucket
        self._prefix = config.key_prefix
        # One client per driver: botocore clients are thread-safe and pool their connections.
        with _SESSION_LOCK:
            self._client = self._make_client(config)

    @staticmethod
    def _make_client(config: S3Config):
        client = _SESSION.client(
            "s3",
            endpoint_url=config.endpoint_url,
            aws_access_key_id=config.access_key,
            aws_secret_access_key=config.secret_key,
            region_name=config.region,
            config=Config(
                signature_version=SIGNERS[config.signer],
                s3={"addressing_style": "path" if config.path_style else "virtual"},
                connect_timeout=config.connection_timeout_ms / 1000,
                read_timeout=config.socket_timeout_ms / 1000,
                retries={"max_attempts": config.max_error_retry, "mode": "standard"},
                tcp_keepalive=config.use_tcp_keepalive,
                # Shared by every writer of this store (migration sessions, file copies of a move,
                # download jobs): a pool smaller than the streams in use drops and reopens
                # connections.  Connections open only when needed, so the cap costs nothing.
                max_pool_connections=POOLED_WRITERS * config.max_concurrency,
                request_checksum_calculation=config.checksum_mode,
                response_checksum_validation=config.checksum_mode,
                proxies={"http": config.proxy, "https": config.proxy} if config.proxy else None,
            ),
        )
        client.meta.events.register("before-sign.s3.DeleteObjects", _add_content_md5)
        return client

    @property
    def identity(self) -> tuple:
        return ("s3", self.config.endpoint_url, self.bucket, self._prefix)

    # -- helpers -------------------------------------------------------------------------

    def _s3key(self, key: str) -> str:
        return self._prefix + validate_key(key)

    def _rel(self, s3key: str) -> str:
        return s3key[len(self._prefix) :]

    def _checksum_args(self) -> dict:
        # With when_supported botocore sends CRC32 per part; the upload must then declare it.
        return {"ChecksumAlgorithm": "CRC32"} if self.config.checksum_mode == "when_supported" else {}

    def part_size_for(self, size_hint: int | None) -> int:
        size = self.config.part_size
        if size_hint:
            size = max(size, -(-size_hint // MAX_PARTS))
        return min(-(-size // MiB) * MiB, MAX_PART)

    @contextmanager
    def _errors(self, what: str, key: str | None = None):
        """Translate botocore errors into the store exceptions callers handle."""
        try:
            yield
        except ClientError as exc:
            code = _code(exc)
            msg = exc.response.get("Error", {}).get("Message", "")
            if code in _NOT_FOUND and key is not None:
                raise ObjectNotFound(key) from exc
            if code == "NoSuchBucket":
                raise StoreUnavailable(f"bucket {self.bucket!r} does not exist at {self.config.endpoint_url}") from exc
            if code in _DENIED:
                raise StoreUnavailable(f"{what}: access denied by {self.config.endpoint_url} ({code})") from exc
            if code in _FULL:
                raise StoreFull(f"{what}: bucket {self.bucket!r} is full ({code})") from exc
            raise StoreError(f"{what} failed: {code} {msg}".rstrip()) from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"{what}: {exc}") from exc

    def _abort_upload(self, s3key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=s3key, UploadId=upload_id)
        except ClientError as exc:
            if _code(exc) != "NoSuchUpload":
                # Not raised: it would mask the error that caused the abort.  The stale-upload
                # clean-up task removes whatever is left.
                log.warning("could not abort multipart upload %s of %s: %s", upload_id, s3key, exc)
        except BotoCoreError as exc:
            log.warning("could not abort multipart upload %s of %s: %s", upload_id, s3key, exc)

    def _pages(self, prefix: str, **kwargs) -> Iterator[dict]:
        paginator = self._client.get_paginator("list_objects_v2")
        with self._errors("list objects"):
            yield from paginator.paginate(Bucket=self.bucket, Prefix=prefix, **kwargs)

    # -- interface -----------------------------------------------------------------------

    def open_writer(self, key: str, size_hint: int | None = None) -> ObjectWriter:
        validate_key(key)
        return _S3Writer(self, key, size_hint)

    def open_reader(
        self, key: str, offset: int = 0, length: int | None = None, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        if offset < 0 or (length is not None and length < 0) or chunk_size <= 0:
            raise ValueError("offset and length must be >= 0 and chunk_size > 0")
        s3key = self._s3key(key)
        if length == 0:
            if self.stat(key) is None:
                raise ObjectNotFound(key)
            return iter(())
        args = {}
        if offset or length is not None:
            args["Range"] = f"bytes={offset}-{'' if length is None else offset + length - 1}"
        with self._errors("get object", key):
            try:
                body = self._client.get_object(Bucket=self.bucket, Key=s3key, **args)["Body"]
            except ClientError as exc:
                if _code(exc) == "InvalidRange":
                    return iter(())  # the object exists; the range starts at or past its end
                raise
        return self._stream(body, key, chunk_size)

    def _stream(self, body, key: str, chunk_size: int) -> Iterator[bytes]:
        try:
            with self._errors("read object", key):
                yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def stat(self, key: str) -> ObjectInfo | None:
        s3key = self._s3key(key)
        try:
            with self._errors("stat object", key):
                head = self._client.head_object(Bucket=self.bucket, Key=s3key)
        except ObjectNotFound:
            return None
        return ObjectInfo(key, head["ContentLength"], _utc(head["LastModified"]))

    def delete(self, key: str) -> bool:
        # S3 deletes are silent about absence; the HEAD gives the caller its answer.
        existed = self.stat(key) is not None
        with self._errors("delete object", key):
            self._client.delete_object(Bucket=self.bucket, Key=self._s3key(key))
        return existed

    def delete_prefix(self, prefix: str) -> int:
        base = validate_dir(prefix)
        if not base:
            raise ValueError("refusing to delete the whole store: prefix is empty")
        count = 0
        for page in self._pages(self._prefix + base + "/"):
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if not objects:
                continue
            with self._errors("delete objects"):
                resp = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
            errors = resp.get("Errors", [])
            if errors:
                first = errors[0]
                raise StoreError(f"could not delete {len(errors)} objects, e.g. {first.get('Key')}: {first.get('Code')}")
            count += len(objects)
        return count

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self._list(self._prefix + validate_prefix(prefix))  # validate now, not on first next()

    def _list(self, full: str) -> Iterator[ObjectInfo]:
        for page in self._pages(full):
            for obj in page.get("Contents", []):
                key = self._rel(obj["Key"])
                # Skip internals and the "dir/" marker objects some S3 consoles create.
                if is_internal(key) or key.endswith("/"):
                    continue
                yield ObjectInfo(key, obj["Size"], _utc(obj["LastModified"]))

    def list_dir(self, path: str) -> list[ObjectInfo]:
        base = validate_dir(path)
        full = self._prefix + (base + "/" if base else "")
        at_root = not base
        found = False
        out = []
        for page in self._pages(full, Delimiter="/"):
            for cp in page.get("CommonPrefixes", []):
                found = True
                # S3 "directories" are only key prefixes: no size, no timestamp (EPOCH stands in).
                key = self._rel(cp["Prefix"]).rstrip("/")
                if not (at_root and is_internal(key)):
                    out.append(ObjectInfo(key, 0, EPOCH, is_dir=True))
            for obj in page.get("Contents", []):
                found = True
                key = self._rel(obj["Key"])
                if key.endswith("/") or (at_root and is_internal(key)):
                    continue
                out.append(ObjectInfo(key, obj["Size"], _utc(obj["LastModified"])))
        if base and not found:
            raise ObjectNotFound(path)
        return sorted(out, key=lambda i: i.key)

    def copy_within(self, src_key: str, dst_key: str) -> ObjectInfo:
        src = self.stat(src_key)
        if src is None:
            raise ObjectNotFound(src_key)
        dst = self._s3key(dst_key)
        source = {"Bucket": self.bucket, "Key": self._s3key(src_key)}
        if src.size <= self.config.multipart_copy_threshold:
            # S3 refuses a copy onto itself unless the metadata is replaced; such a copy is how
            # callers refresh an object's modified time (the chunk store's GC "touch").
            refresh = {"MetadataDirective": "REPLACE"} if src_key == dst_key else {}
            with self._errors("copy object", src_key):
                resp = self._client.copy_object(
                    Bucket=self.bucket, Key=dst, CopySource=source, **refresh, **self._checksum_args()
                )
            return ObjectInfo(dst_key, src.size, _utc(resp["CopyObjectResult"]["LastModified"]))
        self._copy_multipart(source, dst, src.size, src_key)
        return ObjectInfo(dst_key, src.size, datetime.now(timezone.utc))

    def _copy_multipart(self, source: dict, dst: str, size: int, src_key: str) -> None:
        """UploadPartCopy in parallel: the data never leaves the object store."""
        part = self.part_size_for(size)
        ranges = [(i + 1, start, min(start + part, size) - 1) for i, start in enumerate(range(0, size, part))]
        with self._errors("start multipart copy", src_key):
            upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=dst)["UploadId"]

        def copy_part(item: tuple[int, int, int]) -> dict:
            number, first, last = item
            resp = self._client.upload_part_copy(
                Bucket=self.bucket, Key=dst, UploadId=upload_id, PartNumber=number,
                CopySource=source, CopySourceRange=f"bytes={first}-{last}",
            )
            return {"PartNumber": number, "ETag": resp["CopyPartResult"]["ETag"]}

        try:
            with self._errors("multipart copy", src_key):
                with ThreadPoolExecutor(self.config.max_concurrency, thread_name_prefix="s3-copy") as pool:
                    parts = list(pool.map(copy_part, ranges))
                self._client.complete_multipart_upload(
                    Bucket=self.bucket, Key=dst, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            self._abort_upload(dst, upload_id)
            raise

    def capacity(self) -> Capacity:
        """used = bytes held under this store's prefix (a full listing: S3 has no cheaper
        way); total = ``quota_bytes`` if configured, else UNLIMITED_TOTAL (1 PiB)."""
        used = sum(o["Size"] for page in self._pages(self._prefix) for o in page.get("Contents", []))
        return Capacity(total_bytes=self.config.quota_bytes or UNLIMITED_TOTAL, used_bytes=used)

    def abort_stale_multipart_uploads(self, older_than: timedelta) -> int:
        """Abort unfinished multipart uploads under the prefix initiated before now - older_than.

        They are left by crashed writers; until aborted their parts cost storage forever.
        """
        cutoff = datetime.now(timezone.utc) - older_than
        count = 0
        paginator = self._client.get_paginator("list_multipart_uploads")
        with self._errors("list multipart uploads"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._prefix):
                for upload in page.get("Uploads", []):
                    if _utc(upload["Initiated"]) < cutoff:
                        self._abort_upload(upload["Key"], upload["UploadId"])
                        count += 1
        return count

    def abort_stale_writes(self, older_than: timedelta) -> int:
        return self.abort_stale_multipart_uploads(older_than)

    def _reachability_checks(self) -> list[CheckResult]:
        where = f"bucket {self.bucket!r} at {self.config.endpoint_url}"
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = _code(exc)
            if code in ("400", "401", "403"):
                code = self._error_code_from_listing() or code
            return [CheckResult("reachable", False, f"{where}: {code}")]
        except BotoCoreError as exc:
            return [CheckResult("reachable", False, f"{where}: {exc}")]
        return [CheckResult("reachable", True, f"{where} answers and accepts the credentials")]

    def _error_code_from_listing(self) -> str | None:
        """HEAD responses carry no body; a LIST returns the real reason (e.g. SignatureDoesNotMatch)."""
        try:
            self._client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        except ClientError as exc:
            return f"{_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}".rstrip(": ")
        except BotoCoreError:
            return None
        return None

    def close(self) -> None:
        self._client.close()
