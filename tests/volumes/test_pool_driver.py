"""The POSIX pool driver and the volume/instance state machines, without a database."""

from __future__ import annotations

import pytest

from secstor.domain.errors import IllegalTransition
from secstor.domain.volumes import VM, VOLUME, VmEvent, VolumeEvent
from secstor.primary.posix import PosixPool, reflink

pytestmark = pytest.mark.nodb


def test_clone_of_a_raw_file_keeps_content_and_holes(tmp_path):
    pool = PosixPool(tmp_path)
    source = tmp_path / "template-cache" / "t"
    source.parent.mkdir()
    with open(source, "wb") as f:
        f.write(b"x" * 65536)
        f.truncate(8 << 20)
    method = pool.clone("template-cache/t", "RAW", "vol", "RAW", 16 << 20)
    clone = tmp_path / "vol"
    assert clone.stat().st_size == 16 << 20 and clone.read_bytes()[:65536] == b"x" * 65536
    assert clone.stat().st_blocks * 512 < 1 << 20  # holes were not filled in
    # the method is what the file system offers, found by trying
    probe = tmp_path / "probe"
    assert method == ("reflink" if reflink(source, probe) else "sparse-copy")
    assert not list(tmp_path.glob("*.part"))


def test_state_machines_refuse_impossible_steps():
    assert VOLUME.next_state("Ready", VolumeEvent.ResizeRequested) == "Resizing"
    assert VOLUME.next_state("Resizing", VolumeEvent.OperationFailed) == "Ready"
    with pytest.raises(IllegalTransition):
        VOLUME.next_state("Uploaded", VolumeEvent.ResizeRequested)
    assert VM.next_state("Running", VmEvent.StopRequested) == "Stopping"
    with pytest.raises(IllegalTransition):
        VM.next_state("Running", VmEvent.DestroyRequested)  # stopped first
