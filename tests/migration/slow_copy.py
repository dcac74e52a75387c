"""Test hook loaded into worker subprocesses (SECSTOR_EXTRA_JOB_MODULES): every migration copy
waits $SECSTOR_TEST_COPY_DELAY seconds per chunk, so a test can kill a worker mid-copy."""

from __future__ import annotations

import os
import time

from secstor.services import migration

_copy_verified = migration.copy_verified
DELAY = float(os.environ.get("SECSTOR_TEST_COPY_DELAY", "0.2"))


def _slow_copy_verified(*args, progress=None, **kwargs):
    def slow_progress(done: int) -> None:
        time.sleep(DELAY)
        if progress is not None:
            progress(done)

    return _copy_verified(*args, progress=slow_progress, **kwargs)


migration.copy_verified = _slow_copy_verified
