"""Check that an image is what its owner declared, and that it cannot reach other files.

A hypervisor trusts the format it is told.  An image declared RAW that really is qcow2, a
qcow2 naming a backing or external data file, or a VMDK whose descriptor lists other extent
files, lets a user read files on the host that later converts or boots it (the 2024 image
format attacks fixed in OpenStack).  So every image is inspected before it becomes Ready:
first our own header checks (refusing external references *before* qemu-img opens anything
they name), then ``qemu-img info`` without ``-f`` so qemu probes the real format, run under a
timeout and CPU/memory limits because it parses untrusted input.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from secstor.stores.base import StoreDriver, validate_key
from secstor.stores.local import LocalDriver

DECLARED_FORMATS = ("QCOW2", "RAW", "VHD", "VHDX", "VMDK", "OVA", "ISO")
QEMU_IMG_TIMEOUT = 60  # seconds of wall time for one qemu-img info
QEMU_IMG_CPU_SECONDS = 30
QEMU_IMG_ADDRESS_SPACE = 1 << 30  # what OpenStack allows qemu-img info; ample for any header
_OVA_MAX_MEMBERS = 1000
_VMDK_DESCRIPTOR_MAX = 64 << 10
_SAFE_VMDK_TYPES = ("monolithicSparse", "streamOptimized")  # one file, no extents elsewhere
_SECTOR = 512

# What qemu-img calls each declared format.  VHD: qemu probes only dynamic VHDs (header copy
# at offset 0) as "vpc"; a fixed VHD has just a footer and is probed as raw.
_QEMU_NAMES = {
    "QCOW2": ("qcow2",),
    "RAW": ("raw",),
    "VHD": ("vpc", "raw"),
    "VHDX": ("vhdx",),
    "VMDK": ("vmdk",),
    "OVA": ("raw",),
    "ISO": ("raw",),
}


class ImageRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    format: str  # the declared format, verified: QCOW2, RAW, VHD, VHDX, VMDK, OVA, ISO
    detected: str  # qemu-img's name for the content, e.g. qcow2, vpc, raw
    virtual_size: int  # bytes the guest sees (CloudStack's "size")
    physical_size: int  # bytes the file occupies in the store


def _read_at(f, offset: int, length: int) -> bytes:
    f.seek(offset)
    return f.read(length)


def _container_format(f, size: int) -> str | None:
    """The disk container format the bytes carry by their magic numbers, if any.

    Checked independently of qemu-img so a RAW-declared file that is really a container is
    refused even if qemu's probing changes.
    """
    head = _read_at(f, 0, 512)
    if head.startswith(b"QFI\xfb"):
        return "qcow2" if len(head) >= 8 and struct.unpack_from(">I", head, 4)[0] >= 2 else "qcow"
    if head.startswith(b"KDMV") or head.startswith(b"COWD") or head.startswith(b"# Disk DescriptorFile"):
        return "vmdk"
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    if head.startswith(b"conectix") or (size >= _SECTOR and _read_at(f, size - _SECTOR, 8) == b"conectix"):
        return "vpc"
    if head.startswith(b"QED\x00"):
        return "qed"
    if head.startswith(b"LUKS\xba\xbe"):
        return "luks"
    if len(head) >= 0x44 and head[0x40:0x44] == b"\x7f\x10\xda\xbe":
        return "vdi"
    return None


def _qcow2_references(f) -> None:
    """Refuse a backing file or an external data file straight from the qcow2 header."""
    header = _read_at(f, 0, 104)
    if len(header) < 72:
        raise ImageRejected("the qcow2 header is truncated")
    version, backing_offset, backing_size = struct.unpack_from(">IQI", header, 4)
    if backing_offset:
        name = _read_at(f, backing_offset, min(backing_size, 1023)).decode("utf-8", "replace")
        raise ImageRejected(f"the qcow2 image has a backing file ({name!r}); images that reference other files are refused")
    if version >= 3 and len(header) >= 80:
        incompatible = struct.unpack_from(">Q", header, 72)[0]
        if incompatible & 0b100:  # bit 2: external data file
            raise ImageRejected("the qcow2 image uses an external data file; images that reference other files are refused")


def _vmdk_descriptor(f) -> str | None:
    """The VMDK descriptor text: the whole file for a descriptor file, else the embedded one."""
    head = _read_at(f, 0, _VMDK_DESCRIPTOR_MAX)
    if head.startswith(b"# Disk DescriptorFile"):
        return head.decode("utf-8", "replace")
    if head.startswith(b"KDMV") and len(head) >= 44:
        offset, sectors = struct.unpack_from("<QQ", head, 28)
        if offset and sectors:
            text = _read_at(f, offset * _SECTOR, min(sectors * _SECTOR, _VMDK_DESCRIPTOR_MAX))
            return text.split(b"\x00", 1)[0].decode("utf-8", "replace")
    return None


_EXTENT = re.compile(r'^\s*(RW|RDONLY|NOACCESS)\s+\d+\s+(\w+)(?:\s+"([^"]*)")?', re.M)
_CREATE_TYPE = re.compile(r'^\s*createType\s*=\s*"?([^"\s]+)"?', re.M)
_PARENT = re.compile(r'^\s*parentFileNameHint\s*=', re.M)


def _vmdk_references(f) -> None:
    """Refuse VMDKs whose descriptor can make qemu open other files."""
    text = _vmdk_descriptor(f)
    if text is None:
        return  # an old COWD or a sparse file without descriptor: qemu-img's report decides
    match = _CREATE_TYPE.search(text)
    create_type = match.group(1) if match else "(none)"
    extents = _EXTENT.findall(text)
    if create_type not in _SAFE_VMDK_TYPES:
        files = ", ".join(repr(name) for _, _, name in extents if name)
        raise ImageRejected(
            f"the VMDK has createType {create_type}, whose descriptor references other files"
            + (f" ({files})" if files else "")
            + "; only monolithicSparse and streamOptimized VMDKs are accepted"
        )
    if len(extents) > 1 or any(kind != "SPARSE" for _, kind, _ in extents) or _PARENT.search(text):
        raise ImageRejected("the VMDK descriptor lists extra extents or a parent file; images that reference other files are refused")


def _vhd_footer(f, size: int) -> tuple[int, int] | None:
    """(disk type, current size) from a VHD footer at the end of the file, if there is one."""
    if size < _SECTOR:
        return None
    footer = _read_at(f, size - _SECTOR, _SECTOR)
    if not footer.startswith(b"conectix"):
        return None
    current_size, = struct.unpack_from(">Q", footer, 48)
    disk_type, = struct.unpack_from(">I", footer, 60)
    return disk_type, current_size


def _check_ova(path: Path) -> None:
    """An OVA is a plain tar holding an .ovf; members must be plain files with safe names,
    because extracting it later must not write outside its directory or follow links."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            names = []
            for count, member in enumerate(tar, 1):
                if count > _OVA_MAX_MEMBERS:
                    raise ImageRejected(f"the OVA has more than {_OVA_MAX_MEMBERS} members")
                name = member.name
                if name.startswith("/") or ".." in Path(name).parts:
                    raise ImageRejected(f"the OVA member {name!r} has an unsafe path")
                if not member.isfile():
                    raise ImageRejected(f"the OVA member {name!r} is not a regular file")
                names.append(name)
    except tarfile.TarError as exc:
        raise ImageRejected(f"declared format OVA does not match the content: not a tar archive ({exc})") from None
    if not any(n.lower().endswith(".ovf") for n in names):
        raise ImageRejected("the OVA contains no .ovf descriptor")


def qemu_img_info(path: Path) -> dict:
    """``qemu-img info`` as JSON, probing the format itself, under a timeout and rlimits."""
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise ImageRejected("cannot inspect the image: qemu-img is not installed on this worker (package qemu-utils)")
    # An absolute path: qemu reads "name:..." as a protocol ("nbd:", "json:") unless it starts with "/".
    cmd = [qemu_img, "info", "--output=json", str(Path(path).absolute())]
    prlimit = shutil.which("prlimit")
    if prlimit is not None:
        cmd = [prlimit, f"--as={QEMU_IMG_ADDRESS_SPACE}", f"--cpu={QEMU_IMG_CPU_SECONDS}", "--", *cmd]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=QEMU_IMG_TIMEOUT, env={"LC_ALL": "C", "PATH": os.defpath})
    except subprocess.TimeoutExpired:
        raise ImageRejected(f"qemu-img info did not finish within {QEMU_IMG_TIMEOUT} s") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ImageRejected(f"qemu-img cannot read the image: {detail[-1] if detail else f'exit status {done.returncode}'}")
    return json.loads(done.stdout)


def _check_qemu_report(info: dict) -> None:
    """The same refusals again from qemu's side: it may understand headers we do not."""
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise ImageRejected(f"the image has a backing file ({info.get('backing-filename')!r}); images that reference other files are refused")
    specific = (info.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise ImageRejected(f"the qcow2 image uses an external data file ({specific['data-file']!r}); images that reference other files are refused")
    if info.get("format") == "vmdk":
        create_type = specific.get("create-type")
        extents = specific.get("extents") or []
        if create_type not in _SAFE_VMDK_TYPES or any(e.get("filename") != info.get("filename") for e in extents):
            raise ImageRejected(f"the VMDK (createType {create_type}) references other files; images that reference other files are refused")


def inspect_image(path: os.PathLike | str, declared_format: str, *, max_virtual_size: int | None = None) -> ImageInfo:
    """Verify the file at ``path`` against ``declared_format``; raise ImageRejected if it is
    not that format, references other files, or is bigger than ``max_virtual_size``."""
    declared = declared_format.strip().upper()
    if declared not in DECLARED_FORMATS:
        raise ImageRejected(f"format {declared_format} is not supported; use one of {', '.join(DECLARED_FORMATS)}")
    path = Path(path)
    physical = path.stat().st_size
    expected = {"QCOW2": "qcow2", "VHD": "vpc", "VHDX": "vhdx", "VMDK": "vmdk"}.get(declared)
    # Everything up to qemu-img: refusals that must come before qemu opens what an image names.
    with open(path, "rb") as f:
        container = _container_format(f, physical)
        if container != expected:
            actual = f"a {container} image" if container else "not a disk container (raw data)"
            raise ImageRejected(f"declared format {declared} does not match the content, which is {actual}")
        if container == "qcow2":
            _qcow2_references(f)
        elif container == "vmdk":
            _vmdk_references(f)
        footer = _vhd_footer(f, physical) if container == "vpc" else None
        is_iso = _read_at(f, 0x8001, 5) == b"CD001"
    if footer is not None and footer[0] not in (2, 3):  # 4: differencing, i.e. a parent file
        raise ImageRejected("the VHD is a differencing disk with a parent file; images that reference other files are refused")
    if declared == "ISO" and not is_iso:
        raise ImageRejected("declared format ISO does not match the content: no ISO 9660 volume descriptor")
    if declared == "OVA":
        _check_ova(path)

    info = qemu_img_info(path)
    detected = info.get("format", "")
    if detected not in _QEMU_NAMES[declared]:
        raise ImageRejected(f"declared format {declared} does not match the content, which qemu-img reads as {detected}")
    _check_qemu_report(info)
    virtual = int(info.get("virtual-size", physical))
    if declared == "VHD" and footer is not None and detected == "raw":
        virtual = footer[1]  # qemu sees a fixed VHD as raw, footer included; the footer knows better
    if max_virtual_size is not None and virtual > max_virtual_size:
        raise ImageRejected(f"the virtual size {virtual} bytes is larger than the limit of {max_virtual_size} bytes")
    return ImageInfo(format=declared, detected=detected, virtual_size=virtual, physical_size=physical)


def inspect_store_object(
    driver: StoreDriver,
    key: str,
    declared_format: str,
    *,
    max_virtual_size: int | None = None,
    scratch_dir: os.PathLike | str | None = None,
) -> ImageInfo:
    """inspect_image for an object in a store: a Local store's file is read in place, other
    stores' objects are first copied to a temporary file in ``scratch_dir``."""
    if isinstance(driver, LocalDriver):
        return inspect_image(driver.root / validate_key(key), declared_format, max_virtual_size=max_virtual_size)
    with tempfile.NamedTemporaryFile(dir=scratch_dir, prefix="secstor-inspect-") as tmp:
        for chunk in driver.open_reader(key):
            tmp.write(chunk)
        tmp.flush()
        return inspect_image(tmp.name, declared_format, max_virtual_size=max_virtual_size)
