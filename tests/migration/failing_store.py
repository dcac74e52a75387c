"""Test hook loaded into a worker subprocess (SECSTOR_EXTRA_JOB_MODULES): the Local store rooted
at $SECSTOR_TEST_FAILING_ROOT fails every write past its first MiB, as a destination whose
device has gone bad: small files still land, images fail half-written."""

from __future__ import annotations

import os

from secstor.stores.base import StoreError
from secstor.stores.local import _LocalWriter

ROOT = os.path.realpath(os.environ["SECSTOR_TEST_FAILING_ROOT"])
LIMIT = 1 << 20

_write = _LocalWriter._write


def _failing_write(self, data: bytes) -> None:
    if os.path.realpath(self._driver.root) == ROOT and self.bytes_written + len(data) > LIMIT:
        raise StoreError(f"input/output error writing {self.key!r} (injected)")
    _write(self, data)


_LocalWriter._write = _failing_write
