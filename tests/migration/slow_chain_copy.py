"""Test hook loaded into worker subprocesses (SECSTOR_EXTRA_JOB_MODULES): every chunk of a
snapshot chain being migrated takes $SECSTOR_TEST_CHUNK_DELAY seconds more to copy, so a test
can act while a chain move is in progress."""

from __future__ import annotations

import os
import time

from secstor.services.migration_kinds import SnapshotChainKind

_copy_object = SnapshotChainKind.copy_object
DELAY = float(os.environ.get("SECSTOR_TEST_CHUNK_DELAY", "0.5"))


def _slow_copy_object(self, src, dst, key, on_bytes):
    copied = _copy_object(self, src, dst, key, on_bytes)
    if copied:
        time.sleep(DELAY)
    return copied


SnapshotChainKind.copy_object = _slow_copy_object
