"""Local (POSIX directory) image store.

On-disk layout, readable without the service: an object with key ``a/b/c`` is the plain
file ``<root>/a/b/c``.  ``<root>/.secstor-tmp/*.part`` holds writes in progress (safe to
delete when no secstor process is writing); ``<root>/.secstor-probe/`` holds the short-lived
probe object.  Neither is ever listed.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .base import (
    INTERNAL_PREFIX,
    Capability,
    Capacity,
    CheckResult,
    ObjectInfo,
    ObjectNotFound,
    ObjectWriter,
    StoreDriver,
    StoreError,
    StoreFull,
    is_internal,
    validate_dir,
    validate_key,
    validate_prefix,
)

TMP_DIR = INTERNAL_PREFIX + "tmp"

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# copy_file_range refuses these file-system pairs; a plain read/write copy still works.
_NO_CFR_ERRNOS = (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)
_ZERO = bytes(1 << 20)
_COPY_STEP = 1 << 30  # bound each copy_file_range call so huge extents stay interruptible


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _all_zero(data: bytes) -> bool:
    """True for an all-zero chunk of at least 4 KiB, which the writer turns into a hole."""
    if len(data) < 4096 or data[0] or data[-1]:
        return False
    view = memoryview(data)
    for i in range(0, len(view), len(_ZERO)):
        part = view[i : i + len(_ZERO)]
        if part.tobytes() != _ZERO[: len(part)]:
            return False
    return True


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each data extent; holes are skipped entirely."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole up to EOF
                return
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # no SEEK_DATA: all data
                yield pos, size
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        pos = end


def _copy_extent(src: int, dst: int, start: int, end: int, use_cfr: bool) -> bool:
    """Copy [start, end) at the same offset; returns whether copy_file_range still works."""
    pos = start
    while pos < end:
        want = min(end - pos, _COPY_STEP)
        if use_cfr:
            try:
                n = os.copy_file_range(src, dst, want, pos, pos)
            except OSError as exc:
                if exc.errno not in _NO_CFR_ERRNOS:
                    raise
                use_cfr = False
                continue
        else:
            buf = os.pread(src, min(want, 1 << 20), pos)
            _pwrite_all(dst, buf, pos)
            n = len(buf)
        if n == 0:
            raise StoreError("source file shrank while being copied")
        pos += n
    return use_cfr


def copy_file_sparse(src_path: os.PathLike | str, dst_path: os.PathLike | str) -> int:
    """Copy ``src_path`` to ``dst_path`` (created or truncated), fsynced, keeping holes.

    Only data extents (SEEK_DATA/SEEK_HOLE) are copied, with copy_file_range so the kernel
    (or an NFS 4.2 server, or a reflinking file system) does the work; read/write is the
    fallback.  The destination is truncated to the source size so trailing holes survive.
    Returns the logical size.
    """
    with open(src_path, "rb", buffering=0) as src, open(dst_path, "wb", buffering=0) as dst:
        sfd, dfd = src.fileno(), dst.fileno()
        size = os.fstat(sfd).st_size
        use_cfr = True
        for start, end in _data_extents(sfd, size):
            use_cfr = _copy_extent(sfd, dfd, start, end, use_cfr)
        os.ftruncate(dfd, size)
        os.fsync(dfd)
    return size


class _LocalWriter(ObjectWriter):
    def __init__(self, driver: LocalDriver, key: str, final: Path) -> None:
        super().__init__(key)
        self._driver = driver
        self._final = final
        self._tmp = driver._new_temp_path()
        self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)

    def _write(self, data: bytes) -> None:
        # All-zero chunks become holes, so raw disk images stay sparse on the store.
        if _all_zero(data):
            return
        try:
            _pwrite_all(self._fd, data, self.bytes_written)
        except OSError as exc:
            if exc.errno in _FULL_ERRNOS:
                raise StoreFull(f"store {self._driver.root} is full writing {self.key!r}") from exc
            raise

    def _commit(self) -> ObjectInfo:
        try:
            os.ftruncate(self._fd, self.bytes_written)  # materialise a trailing hole
            os.fsync(self._fd)
            st = os.fstat(self._fd)
        except OSError as exc:
            if exc.errno in _FULL_ERRNOS:
                raise StoreFull(f"store {self._driver.root} is full writing {self.key!r}") from exc
            raise
        os.close(self._fd)
        self._fd = -1
        self._driver._publish(self._tmp, self._final)
        return ObjectInfo(self.key, st.st_size, _utc(st.st_mtime))

    def _abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._tmp.unlink(missing_ok=True)


class LocalDriver(StoreDriver):
    provider = "Local"
    capabilities = frozenset({Capability.RANGE_READ, Capability.COPY_FILE_RANGE, Capability.SPARSE_READ})

    def __init__(self, root: Path | str) -> None:
        root = Path(root)
        if not root.is_absolute():
            raise ValueError(f"store root must be an absolute path, got {str(root)!r}")
        root.mkdir(parents=True, exist_ok=True)
        self.root = root

    @property
    def identity(self) -> tuple:
        return ("posix", os.path.realpath(self.root))

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _new_temp_path(self) -> Path:
        # Temp files live inside the root so the final rename never crosses file systems.
        tmp_dir = self.root / TMP_DIR
        tmp_dir.mkdir(exist_ok=True)
        return tmp_dir / f"{uuid.uuid4().hex}.part"

    @staticmethod
    def _make_dirs(directory: Path) -> None:
        """mkdir -p, fsyncing each new directory's parent: a rename is only as durable as
        the directory entries leading to it."""
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                if not d.is_dir():
                    raise
            _fsync_dir(d.parent)

    def _publish(self, tmp: Path, final: Path) -> None:
        """Rename into place (atomic; last writer wins) and make the rename durable."""
        for attempt in range(3):
            try:
                self._make_dirs(final.parent)
                os.replace(tmp, final)
                break
            except FileNotFoundError:
                if not tmp.exists():
                    raise StoreError(f"temporary file for {final} vanished (removed as a stale write?)") from None
                # A concurrent delete pruned the freshly made parent; make it again.
                if attempt == 2:
                    raise
            except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
                tmp.unlink(missing_ok=True)
                raise StoreError(f"cannot publish {final}: a file and a directory collide ({exc})") from exc
        _fsync_dir(final.parent)

    def open_writer(self, key: str, size_hint: int | None = None) -> ObjectWriter:
        final = self._path(key)
        try:
            return _LocalWriter(self, key, final)
        except OSError as exc:
            if exc.errno in _FULL_ERRNOS:  # no inode left for the temp file
                raise StoreFull(f"store {self.root} is full writing {key!r}") from exc
            raise

    def open_reader(
        self, key: str, offset: int = 0, length: int | None = None, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        if offset < 0 or (length is not None and length < 0) or chunk_size <= 0:
            raise ValueError("offset and length must be >= 0 and chunk_size > 0")
        path = self._path(key)
        try:
            f = open(path, "rb", buffering=0)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        return self._read(f, offset, length, chunk_size)

    @staticmethod
    def _read(f, offset: int, length: int | None, chunk_size: int) -> Iterator[bytes]:
        # One open file and a bounded buffer: memory stays at chunk_size whatever the size.
        with f:
            f.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                buf = f.read(chunk_size if remaining is None else min(chunk_size, remaining))
                if not buf:
                    return
                if remaining is not None:
                    remaining -= len(buf)
                yield buf

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key, st.st_size, _utc(st.st_mtime))

    def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return False
        self._prune(path.parent)
        return True

    def _prune(self, directory: Path) -> None:
        """Remove now-empty parent directories, so Local lists the same tree S3 would."""
        while directory != self.root:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def delete_prefix(self, prefix: str) -> int:
        base = validate_dir(prefix)
        if not base:
            raise ValueError("refusing to delete the whole store: prefix is empty")
        count = 0
        for info in self.list(base + "/"):
            try:
                os.unlink(self.root / info.key)
                count += 1
            except FileNotFoundError:
                pass
        top = self.root / base
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
        self._prune(top.parent)
        return count

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        dir_part, _, name_part = validate_prefix(prefix).rpartition("/")
        if dir_part and is_internal(dir_part):
            return iter(())
        rel = dir_part + "/" if dir_part else ""
        return self._walk(self.root / dir_part, rel, name_part)

    def _walk(self, dirpath: Path, rel: str, name_filter: str = "") -> Iterator[ObjectInfo]:
        """Depth-first walk yielding files in key order.

        Directories sort as ``name + "/"`` so that the order equals a plain sort of full
        keys (S3 order), without collecting the whole tree in memory.
        """
        try:
            entries = list(os.scandir(dirpath))
        except (FileNotFoundError, NotADirectoryError):
            return
        at_root = not rel
        entries = [e for e in entries if e.name.startswith(name_filter) and not (at_root and is_internal(e.name))]
        entries.sort(key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=False) else e.name)
        for entry in entries:
            key = rel + entry.name
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), key + "/")
            elif entry.is_file(follow_symlinks=False):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, st.st_size, _utc(st.st_mtime))

    def list_dir(self, path: str) -> list[ObjectInfo]:
        base = validate_dir(path)
        rel = base + "/" if base else ""
        try:
            entries = list(os.scandir(self.root / base))
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFound(path) from exc
        out = []
        for entry in entries:
            if not base and is_internal(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat_mod.S_ISDIR(st.st_mode):
                out.append(ObjectInfo(rel + entry.name, 0, _utc(st.st_mtime), is_dir=True))
            elif stat_mod.S_ISREG(st.st_mode):
                out.append(ObjectInfo(rel + entry.name, st.st_size, _utc(st.st_mtime)))
        return sorted(out, key=lambda i: i.key)

    def copy_within(self, src_key: str, dst_key: str) -> ObjectInfo:
        src, dst = self._path(src_key), self._path(dst_key)
        if self.stat(src_key) is None:
            raise ObjectNotFound(src_key)
        tmp = self._new_temp_path()
        try:
            copy_file_sparse(src, tmp)
            st = os.stat(tmp)
            self._publish(tmp, dst)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
                raise StoreFull(f"store {self.root} is full copying to {dst_key!r}") from exc
            if isinstance(exc, FileNotFoundError) and exc.filename == str(src):
                raise ObjectNotFound(src_key) from exc  # deleted since the stat above
            raise
        return ObjectInfo(dst_key, st.st_size, _utc(st.st_mtime))

    def capacity(self) -> Capacity:
        st = os.statvfs(self.root)
        total = st.f_blocks * st.f_frsize
        return Capacity(total_bytes=total, used_bytes=total - st.f_bavail * st.f_frsize)

    def abort_stale_writes(self, older_than: timedelta) -> int:
        cutoff = time.time() - older_than.total_seconds()
        count = 0
        try:
            entries = list(os.scandir(self.root / TMP_DIR))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    count += 1
            except FileNotFoundError:
                pass
        return count

    def _reachability_checks(self) -> list[CheckResult]:
        ok = self.root.is_dir()
        return [CheckResult("reachable", ok, f"{self.root} {'is' if ok else 'is not'} a directory")]
