"""The one driver interface every image store implements.

Keys are '/'-separated relative paths such as ``template/tmpl/2/201/201-2-abc.qcow2``;
the same key names the same object on every provider, so layouts match CloudStack's and
an operator can find files by hand.  Keys whose first component starts with ``.secstor-``
belong to the driver (temporary files, probe objects) and are never listed.
"""

from __future__ import annotations

import abc
import enum
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

#: First-component prefix reserved for driver internals (temp files, probe objects).
INTERNAL_PREFIX = ".secstor-"
#: Where probe() writes its scratch object; hidden from list() like every internal name.
PROBE_DIR = INTERNAL_PREFIX + "probe"

#: Stand-in ``modified`` for S3 "directories", which have no timestamp of their own.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Capability(str, enum.Enum):
    """Optional speed-ups a driver declares; callers detect them instead of assuming."""

    RANGE_READ = "range_read"
    SERVER_SIDE_COPY = "server_side_copy"
    COPY_FILE_RANGE = "copy_file_range"
    REFLINK = "reflink"
    SPARSE_READ = "sparse_read"
    MULTIPART = "multipart"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime  # always timezone-aware UTC
    is_dir: bool = False


@dataclass(frozen=True)
class Capacity:
    total_bytes: int
    used_bytes: int

    @property
    def free_bytes(self) -> int:
        return max(self.total_bytes - self.used_bytes, 0)

    @property
    def used_ratio(self) -> float:
        return self.used_bytes / self.total_bytes if self.total_bytes else 1.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


class InvalidStoreParameter(ValueError):
    """A store URL or detail is malformed; ``param`` names it so the API can answer 431."""

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"{param}: {reason}")
        self.param = param
        self.reason = reason


class StoreError(Exception):
    """Any store failure the caller should report rather than crash on."""


class ObjectNotFound(StoreError):
    pass


class StoreFull(StoreError):
    pass


class StoreUnavailable(StoreError):
    """The store cannot be reached or must not be used (e.g. an NFS export not mounted)."""


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ValueError.

    Rejecting absolute paths, empty, ``.`` and ``..`` components here (not in each driver)
    makes path traversal impossible on every provider, and keeps keys canonical so the
    same object never has two names.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("object key must be a non-empty string")
    if key.startswith("/"):
        raise ValueError(f"object key must be relative, got {key!r}")
    if "\x00" in key or "\\" in key:
        raise ValueError(f"object key contains a forbidden character: {key!r}")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise ValueError(f"object key has an empty, '.' or '..' component: {key!r}")
    if parts[0].startswith(INTERNAL_PREFIX) and parts[0] != PROBE_DIR:
        raise ValueError(f"object key uses a reserved name: {key!r}")
    return key


def validate_dir(path: str) -> str:
    """Normalise a directory path for list_dir/delete_prefix: '' is the root, no trailing '/'."""
    if not isinstance(path, str) or path.startswith("/"):
        raise ValueError(f"directory path must be relative, got {path!r}")
    path = path.rstrip("/")
    return "" if path == "" else validate_key(path)


def validate_prefix(prefix: str) -> str:
    """A list() prefix is a plain string prefix (S3 semantics); only its directory part must be a safe key."""
    if not isinstance(prefix, str):
        raise ValueError("prefix must be a string")
    if prefix.startswith("/") or "\x00" in prefix or "\\" in prefix:
        raise ValueError(f"prefix must be relative and plain: {prefix!r}")
    head, _, _ = prefix.rpartition("/")
    if head:
        validate_key(head)
    if prefix.split("/")[-1] in (".", ".."):
        raise ValueError(f"prefix has a '.' or '..' component: {prefix!r}")
    return prefix


def is_internal(key: str) -> bool:
    return key.startswith(INTERNAL_PREFIX)


class ObjectWriter(abc.ABC):
    """Atomic publish: nothing is visible under ``key`` until commit() returns.

    The public methods enforce the state machine (open -> committed | aborted) once for
    every driver; drivers implement the ``_write``/``_commit``/``_abort`` hooks.  A failed
    commit aborts, so no code path can leave a half-written object or orphaned parts.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.bytes_written = 0
        self._state = "open"

    def write(self, data: bytes) -> None:
        if self._state != "open":
            raise StoreError(f"writer for {self.key!r} is {self._state}")
        if not data:
            return
        try:
            self._write(data)
        except BaseException:
            self.abort()
            raise
        self.bytes_written += len(data)

    def commit(self) -> ObjectInfo:
        if self._state != "open":
            raise StoreError(f"writer for {self.key!r} is {self._state}")
        try:
            info = self._commit()
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        return info

    def abort(self) -> None:
        """Discard everything written; safe to call any number of times."""
        if self._state == "open":
            self._state = "aborted"
            self._abort()

    @property
    def committed(self) -> bool:
        return self._state == "committed"

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Leaving the block without commit() is a failure too: discard, never publish.
        self.abort()

    @abc.abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def _commit(self) -> ObjectInfo: ...

    @abc.abstractmethod
    def _abort(self) -> None: ...


class StoreDriver(abc.ABC):
    provider: str
    capabilities: frozenset[Capability] = frozenset()

    @property
    @abc.abstractmethod
    def identity(self) -> tuple:
        """Hashable name of the storage namespace; equal identities mean the same store,
        so copies between them can stay server-side."""

    @abc.abstractmethod
    def open_writer(self, key: str, size_hint: int | None = None) -> ObjectWriter: ...

    @abc.abstractmethod
    def open_reader(
        self, key: str, offset: int = 0, length: int | None = None, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        """Yield the bytes [offset, offset+length) in chunks of at most chunk_size.

        Raises ObjectNotFound at call time (not on first iteration).  A range past the end
        is truncated, as with a file read.
        """

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo | None: ...

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Idempotent; True if an object was there."""

    @abc.abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under the directory ``prefix`` ('a/b' and 'a/b/' both mean
        keys starting with 'a/b/'; never 'a/bc').  The root ('') is refused so a bug cannot
        wipe a store.  Returns the number of objects deleted."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """All objects whose key starts with the string ``prefix``, recursively, sorted by key."""

    @abc.abstractmethod
    def list_dir(self, path: str) -> list[ObjectInfo]:
        """Immediate children of ``path`` ('' = root), files and directories (is_dir=True),
        sorted by key.  Raises ObjectNotFound if nothing exists under ``path``."""

    @abc.abstractmethod
    def copy_within(self, src_key: str, dst_key: str) -> ObjectInfo:
        """Copy inside this store using the cheapest means it has; publish atomically."""

    @abc.abstractmethod
    def capacity(self) -> Capacity: ...

    @abc.abstractmethod
    def abort_stale_writes(self, older_than: timedelta) -> int:
        """Remove leftovers of writers that never finished (crashed processes); returns a count."""

    def close(self) -> None:
        """Release connections; the driver must not be used afterwards."""

    def put(self, key: str, chunks: Iterable[bytes], size_hint: int | None = None) -> ObjectInfo:
        with self.open_writer(key, size_hint) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    def probe(self) -> list[CheckResult]:
        """Reachability checks, then a real write/read-back/delete, then free space.

        Stops after the first failing stage, because later stages cannot succeed and
        their errors would only bury the real cause.
        """
        results = self._reachability_checks()
        if not all(r.ok for r in results):
            return results
        results.append(self._probe_write())
        if results[-1].ok:
            results.append(self._probe_capacity())
        return results

    def _reachability_checks(self) -> list[CheckResult]:
        return []

    def _probe_write(self) -> CheckResult:
        key = f"{PROBE_DIR}/{uuid.uuid4().hex}"
        payload = uuid.uuid4().bytes * 64
        try:
            self.put(key, [payload])
            back = b"".join(self.open_reader(key))
        except (StoreError, OSError) as exc:
            return CheckResult("writable", False, f"probe write failed: {exc}")
        finally:
            try:
                self.delete(key)
            except (StoreError, OSError):
                pass
        if back != payload:
            return CheckResult("writable", False, "probe object read back differs from what was written")
        return CheckResult("writable", True, f"wrote, read back and deleted {len(payload)} bytes")

    def _probe_capacity(self) -> CheckResult:
        try:
            cap = self.capacity()
        except (StoreError, OSError) as exc:
            return CheckResult("free space", False, f"capacity unknown: {exc}")
        return CheckResult(
            "free space",
            cap.free_bytes > 0,
            f"{cap.free_bytes} bytes free of {cap.total_bytes} ({cap.used_ratio:.1%} used)",
        )

    def __enter__(self) -> StoreDriver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
