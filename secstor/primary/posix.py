"""A primary storage pool that is a POSIX directory (local disk or a mounted shared file system).

Layout, readable without the service: a volume is the file ``<pool>/<volume uuid>`` (raw and
sparse, or qcow2, per the pool's format); a template cached on the pool is
``<pool>/template-cache/<template uuid>`` in the template's own format. A qcow2 volume cloned
from a template names its cached copy as backing file by a path relative to itself, so the pool
can be mounted anywhere. Files are made under ``<name>.part`` and renamed into place.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from secstor.stores.local import copy_file_sparse

RAW, QCOW2 = "RAW", "QCOW2"
FORMATS = (RAW, QCOW2)
CACHE_DIR = "template-cache"
FICLONE = 0x40049409  # ioctl: share the source's extents (btrfs, XFS with reflink, bcachefs ...)
_NO_REFLINK = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM)


class PoolError(Exception):
    """The pool cannot do what was asked (missing directory, full, qemu-img failed ...)."""


@dataclass(frozen=True)
class PoolCapacity:
    total_bytes: int
    used_bytes: int


def qemu_img_available() -> bool:
    return shutil.which("qemu-img") is not None


def _qemu_img(*args: str) -> str:
    try:
        done = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise PoolError("qemu-img is not installed (Debian package qemu-utils)") from None
    if done.returncode != 0:
        raise PoolError(f"qemu-img {args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def reflink(src: Path, dst: Path) -> bool:
    """Make ``dst`` share ``src``'s extents; False (and no ``dst``) where the file system can't."""
    with open(src, "rb") as s, open(dst, "wb") as d:
        try:
            fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
        except OSError as exc:
            if exc.errno not in _NO_REFLINK:
                raise
            ok = False
        else:
            os.fsync(d.fileno())
            ok = True
    if not ok:
        dst.unlink(missing_ok=True)
    return ok


class PosixPool:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def file(self, rel: str) -> Path:
        return self.root / rel

    def probe_writable(self) -> None:
        """Create the directory if needed and write, read back and remove a file there."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".secstor-probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"secstor")
            ok = probe.read_bytes() == b"secstor"
            probe.unlink()
        except OSError as exc:
            raise PoolError(f"{self.root} is not a writable directory: {exc.strerror or exc}") from None
        if not ok:
            raise PoolError(f"{self.root} did not return what was written to it")

    def capacity(self) -> PoolCapacity:
        st = os.statvfs(self.root)
        total = st.f_blocks * st.f_frsize
        return PoolCapacity(total, total - st.f_bavail * st.f_frsize)

    def _publish(self, tmp: Path, rel: str) -> None:
        os.replace(tmp, self.file(rel))

    def _tmp(self, rel: str) -> Path:
        final = self.file(rel)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(final.name + ".part")
        tmp.unlink(missing_ok=True)  # left by an attempt that died: this one starts over
        return tmp

    def create_blank(self, rel: str, size: int, fmt: str) -> None:
        """An empty volume: a sparse raw file (no block allocated) or a qcow2 image."""
        tmp = self._tmp(rel)
        if fmt == RAW:
            with open(tmp, "wb") as f:
                f.truncate(size)
                os.fsync(f.fileno())
        else:
            _qemu_img("create", "-q", "-f", "qcow2", str(tmp), str(size))
        self._publish(tmp, rel)

    def clone(self, source_rel: str, source_fmt: str, rel: str, fmt: str, size: int) -> str:
        """A new volume with ``source_rel``'s content, grown to ``size``; returns how it was made.

        qcow2 pool: an overlay whose backing file is the source (nothing copied). Raw pool and raw
        source: a reflink where the file system supports it, else a sparse copy (holes kept).
        Raw pool and qcow2 source: converted to raw (sparse)."""
        source = self.file(source_rel)
        tmp = self._tmp(rel)
        if fmt == QCOW2:
            backing = os.path.relpath(source, tmp.parent)
            _qemu_img("create", "-q", "-f", "qcow2", "-b", backing, "-F", source_fmt.lower(), str(tmp), str(size))
            method = "backing-file"
        elif source_fmt == RAW:
            if reflink(source, tmp):
                method = "reflink"
            else:
                copy_file_sparse(source, tmp)
                method = "sparse-copy"
            if size > tmp.stat().st_size:
                os.truncate(tmp, size)
        else:
            _qemu_img("convert", "-q", "-f", source_fmt.lower(), "-O", "raw", str(source), str(tmp))
            if size > tmp.stat().st_size:
                os.truncate(tmp, size)
            method = "convert"
        self._publish(tmp, rel)
        return method

    def resize(self, rel: str, fmt: str, size: int) -> None:
        if fmt == RAW:
            os.truncate(self.file(rel), size)
        else:
            _qemu_img("resize", "-q", "--shrink", "-f", "qcow2", str(self.file(rel)), str(size))

    def virtual_size(self, rel: str, fmt: str) -> int:
        if fmt == RAW:
            return self.file(rel).stat().st_size
        return int(json.loads(_qemu_img("info", "--output=json", "-f", "qcow2", str(self.file(rel))))["virtual-size"])

    def delete(self, rel: str) -> None:
        self.file(rel).unlink(missing_ok=True)
