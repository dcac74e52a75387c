"""Snapshots of a volume on a qcow2 pool: backed up as its guest-visible (raw) content, reverted
and turned into a new volume as qcow2 again, byte for byte."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from tests.snapshots.conftest import content
from tests.volumes.conftest import qemu_info


def qemu_write(path: Path, pattern: int) -> None:
    """Guest-like writes into a qcow2 file: 64 KiB of ``pattern`` at three scattered offsets."""
    commands = [arg for offset in ("0", "3M", "700M") for arg in ("-c", f"write -P {pattern} {offset} 64k")]
    subprocess.run(["qemu-io", "-f", "qcow2", *commands, str(path)], check=True, capture_output=True)


def guest_content(path: Path, tmp_path: Path) -> str:
    """The content digest of the guest-visible bytes of a qcow2 file (converted to a sparse raw)."""
    raw = tmp_path / f"{uuid.uuid4().hex}.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(path), str(raw)], check=True,
                   capture_output=True)
    try:
        return content(raw)
    finally:
        raw.unlink()


def test_qcow2_volume_snapshot_round_trip(fast_admin, pool_zone, tmp_path):
    pz = pool_zone("QCOW2")
    volume = fast_admin.createVolume(name="q", zoneid=pz.zone_id, size=1)["volume"]
    file = pz.pool_file("QCOW2", volume["path"])
    assert volume["format"] == "QCOW2" and qemu_info(file)["format"] == "qcow2"
    qemu_write(file, 0x5A)
    original = guest_content(file, tmp_path)

    snap = fast_admin.createSnapshot(volumeid=volume["id"])["snapshot"]
    assert snap["state"] == "BackedUp" and snap["virtualsize"] == 1 << 30
    assert 0 < snap["physicalsize"] < 1 << 20  # only the written extents were stored
    qemu_write(file, 0x33)
    assert guest_content(file, tmp_path) != original

    fast_admin.revertSnapshot(id=snap["id"])
    assert guest_content(file, tmp_path) == original
    assert qemu_info(file)["format"] == "qcow2"
    made = fast_admin.createVolume(snapshotid=snap["id"], name="q-copy")["volume"]
    made_file = pz.pool_file("QCOW2", made["path"])
    assert made["format"] == "QCOW2" and qemu_info(made_file)["format"] == "qcow2"
    assert guest_content(made_file, tmp_path) == original
