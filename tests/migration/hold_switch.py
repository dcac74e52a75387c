"""Test hook loaded into a worker subprocess (SECSTOR_EXTRA_JOB_MODULES): a migration move whose
copy is done waits before its switch while the file $SECSTOR_TEST_HOLD_FILE exists, after
creating "$SECSTOR_TEST_HOLD_FILE.reached", so a test can act between the copy and the switch."""

from __future__ import annotations

import os
import time
from pathlib import Path

from secstor.services.migration import Mover

_switch = Mover._switch
HOLD = Path(os.environ["SECSTOR_TEST_HOLD_FILE"])
LIMIT_SECONDS = 60.0


def _held_switch(self, *args, **kwargs):
    Path(f"{HOLD}.reached").touch()
    deadline = time.monotonic() + LIMIT_SECONDS
    while HOLD.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return _switch(self, *args, **kwargs)


Mover._switch = _held_switch
