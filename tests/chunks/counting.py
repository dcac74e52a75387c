"""Count what a ChunkStore asks of its store: calls on a real driver, and S3 API operations.

Shared by tests/chunks and bench/chunk_requests.py.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from secstor.stores import S3Driver
from secstor.stores.base import StoreDriver


class CountingDriver:
    """Forwards every call to a real driver and counts the calls by method name.

    ``on_list(prefix)`` runs after a listing was taken and before the caller sees it, so a
    test can make something happen between a listing and what the caller does with it.
    """

    def __init__(self, driver: StoreDriver, on_list: Callable[[str], None] | None = None) -> None:
        self.driver = driver
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._on_list = on_list

    def __getattr__(self, name: str):
        attr = getattr(self.driver, name)
        if not callable(attr):
            return attr

        def counted(*args, **kwargs):
            with self._lock:
                self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted

    def list(self, prefix: str = ""):
        with self._lock:
            self.calls["list"] += 1
        listing = list(self.driver.list(prefix))
        if self._on_list is not None:
            self._on_list(prefix)
        return iter(listing)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()


@contextmanager
def s3_operations(driver: S3Driver) -> Iterator[Counter[str]]:
    """S3 API operations (HeadObject, PutObject, ...) the driver's client makes meanwhile."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def count(model, **_kwargs) -> None:
        with lock:
            counts[model.name] += 1

    events = driver._client.meta.events
    events.register("before-call.s3", count)
    try:
        yield counts
    finally:
        events.unregister("before-call.s3", count)
