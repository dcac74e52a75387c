"""Test hook loaded into worker subprocesses (SECSTOR_EXTRA_JOB_MODULES): every snapshot chunk
write waits $SECSTOR_TEST_CHUNK_DELAY seconds first, so a test can kill a worker mid-backup."""

from __future__ import annotations

import os
import time

from secstor.chunks import ChunkStore

_put_chunk = ChunkStore.put_chunk
DELAY = float(os.environ.get("SECSTOR_TEST_CHUNK_DELAY", "0.2"))


def _slow_put_chunk(self, *args, **kwargs):
    time.sleep(DELAY)
    return _put_chunk(self, *args, **kwargs)


ChunkStore.put_chunk = _slow_put_chunk
