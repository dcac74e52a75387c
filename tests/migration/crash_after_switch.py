"""Test hook loaded into a worker subprocess (SECSTOR_EXTRA_JOB_MODULES): the worker kills itself
(SIGKILL) right after the first migration switch has committed, before the source is deleted, so a
test can check what a crash at that exact point leaves and how the next attempt finishes it."""

from __future__ import annotations

import os
import signal

from secstor.services.migration import Mover

_switch = Mover._switch


def _switch_then_die(self, *args, **kwargs):
    switched = _switch(self, *args, **kwargs)
    if switched:
        os.kill(os.getpid(), signal.SIGKILL)
    return switched


Mover._switch = _switch_then_die
