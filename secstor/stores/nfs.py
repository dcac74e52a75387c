"""NFS image store: the worker mounts the export, then treats it as a Local store.

The one hazard specific to NFS is a mount that silently did not happen: the mount point is
then an ordinary directory on the worker's own disk, and every "upload" would fill that disk
while the export stays empty.  So every use re-checks that the path really is a mounted file
system (via /proc/self/mountinfo, which also sees bind mounts) and refuses otherwise.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .base import CheckResult, Capacity, ObjectInfo, ObjectWriter, StoreDriver, StoreUnavailable
from .local import LocalDriver

_MOUNTINFO = "/proc/self/mountinfo"


def parse_nfs_url(url: str) -> tuple[str, str]:
    """``nfs://host/export/path`` -> ``("host", "/export/path")``; ValueError if malformed."""
    if not isinstance(url, str):
        raise ValueError("NFS url must be a string like nfs://host/export")
    parts = urlsplit(url.strip())
    if parts.scheme.lower() != "nfs":
        raise ValueError(f"NFS url must start with nfs://, got {url!r}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"NFS url must be nfs://host/export with no user, query or fragment, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None:
        raise ValueError(f"NFS url must not carry a port (pass port= in mount options), got {url!r}")
    host = parts.netloc
    if not host:
        raise ValueError(f"NFS url has no host, got {url!r}")
    export = unquote(parts.path)
    if not export.startswith("/"):
        raise ValueError(f"NFS url has no export path, got {url!r}")
    if ".." in export.split("/"):
        raise ValueError(f"NFS export path must not contain '..', got {url!r}")
    export = "/" + "/".join(p for p in export.split("/") if p)
    return host, export


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mount_points() -> set[str]:
    try:
        with open(_MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
            return {_unescape_mountinfo(line.split()[4]) for line in f if line.strip()}
    except OSError:
        return set()


def is_mount_point(path: os.PathLike | str) -> bool:
    """True if ``path`` is where a file system is mounted, bind mounts included
    (os.path.ismount misses those because they share st_dev with their parent)."""
    real = os.path.realpath(path)
    return real in _mount_points() or os.path.ismount(real)  # mountinfo first: no NFS round trip


@dataclass(frozen=True)
class NfsOptions:
    version: str = "3"
    rsize: int = 1 << 20
    wsize: int = 1 << 20
    timeo: int = 600  # deciseconds, as mount(8) counts them
    retrans: int = 2
    hard: bool = True  # soft mounts turn server hiccups into silent data corruption
    extra: str = ""  # appended verbatim, e.g. "nconnect=4,proto=tcp"
    mount_command: str = "mount"
    umount_command: str = "umount"
    command_timeout_s: float = 60.0

    def option_string(self) -> str:
        opts = (
            f"vers={self.version},rsize={self.rsize},wsize={self.wsize},"
            f"timeo={self.timeo},retrans={self.retrans},{'hard' if self.hard else 'soft'}"
        )
        return f"{opts},{self.extra.strip(',')}" if self.extra.strip(",") else opts


class NfsMounter:
    """Mounts NFS exports on demand under ``mount_root``.

    ``url_map`` lets an operator (or a container set-up) pre-mount an export at a chosen
    path; such paths are verified, never mounted or unmounted by us.
    """

    def __init__(self, mount_root: Path, options: NfsOptions | None = None, url_map: dict[str, Path] | None = None):
        self.mount_root = Path(mount_root)
        self.options = options or NfsOptions()
        self.url_map = {url: Path(p) for url, p in (url_map or {}).items()}
        self._lock = threading.Lock()

    def mount_point_for(self, url: str) -> Path:
        if url in self.url_map:
            return self.url_map[url]
        return self.mount_root / hashlib.sha1(url.encode()).hexdigest()[:16]

    def _require_mounted(self, path: Path) -> None:
        if os.path.realpath(path) == "/" or not is_mount_point(path):
            raise StoreUnavailable(
                f"{path} is not a mounted filesystem; refusing to write into the worker's own disk"
            )

    def ensure_mounted(self, url: str) -> Path:
        host, export = parse_nfs_url(url)
        mount_point = self.mount_point_for(url)
        if url in self.url_map:
            self._require_mounted(mount_point)
            return mount_point
        with self._lock:
            if is_mount_point(mount_point):
                return mount_point
            mount_point.mkdir(parents=True, exist_ok=True)
            cmd = [
                self.options.mount_command, "-t", "nfs", "-o", self.options.option_string(),
                f"{host}:{export}", str(mount_point),
            ]
            self._run(cmd, f"mount {host}:{export} on {mount_point}")
            self._require_mounted(mount_point)
        return mount_point

    def unmount(self, url: str) -> bool:
        """Unmount an export we mounted; operator-mapped paths are left alone. True if unmounted."""
        if url in self.url_map:
            return False
        mount_point = self.mount_point_for(url)
        with self._lock:
            if not is_mount_point(mount_point):
                return False
            self._run([self.options.umount_command, str(mount_point)], f"unmount {mount_point}")
        return True

    def _run(self, cmd: list[str], what: str) -> None:
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self.options.command_timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise StoreUnavailable(f"{what} timed out after {self.options.command_timeout_s:g} s") from exc
        except OSError as exc:
            raise StoreUnavailable(f"{what} failed: cannot run {cmd[0]!r}: {exc}") from exc
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip()
            raise StoreUnavailable(f"{what} failed (exit {proc.returncode}): {detail}")


class NfsDriver(StoreDriver):
    """A LocalDriver on the mount point, re-checking the mount before each operation."""

    provider = "NFS"
    capabilities = LocalDriver.capabilities

    def __init__(self, url: str, mounter: NfsMounter) -> None:
        parse_nfs_url(url)  # fail fast on a bad URL, before any mount attempt
        self.url = url
        self.mounter = mounter
        self._local_driver: LocalDriver | None = None

    @property
    def identity(self) -> tuple:
        return ("nfs", self.url)

    def _local(self) -> LocalDriver:
        # Cheap (one read of mountinfo) and it catches an export that vanished under us,
        # re-mounting it when it is ours to mount.
        root = self.mounter.ensure_mounted(self.url)
        if self._local_driver is None or self._local_driver.root != root:
            self._local_driver = LocalDriver(root)
        return self._local_driver

    def open_writer(self, key: str, size_hint: int | None = None) -> ObjectWriter:
        return self._local().open_writer(key, size_hint)

    def open_reader(
        self, key: str, offset: int = 0, length: int | None = None, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        return self._local().open_reader(key, offset, length, chunk_size)

    def stat(self, key: str) -> ObjectInfo | None:
        return self._local().stat(key)

    def delete(self, key: str) -> bool:
        return self._local().delete(key)

    def delete_prefix(self, prefix: str) -> int:
        return self._local().delete_prefix(prefix)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self._local().list(prefix)

    def list_dir(self, path: str) -> list[ObjectInfo]:
        return self._local().list_dir(path)

    def copy_within(self, src_key: str, dst_key: str) -> ObjectInfo:
        return self._local().copy_within(src_key, dst_key)

    def capacity(self) -> Capacity:
        return self._local().capacity()

    def abort_stale_writes(self, older_than: timedelta) -> int:
        return self._local().abort_stale_writes(older_than)

    def _reachability_checks(self) -> list[CheckResult]:
        try:
            root = self.mounter.ensure_mounted(self.url)
        except StoreUnavailable as exc:
            return [CheckResult("mounted", False, str(exc))]
        return [CheckResult("mounted", True, f"{self.url} is mounted at {root}")]
