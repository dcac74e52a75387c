"""Work that runs beside the API in `serve`: embedded job workers and periodic tasks."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from secstor.runtime import Runtime

log = logging.getLogger("secstor.background")


class BackgroundServices:
    def __init__(self, runtime: "Runtime"):
        self._rt = runtime
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def ready(self) -> bool:
        return self._ready.is_set()

    def start(self) -> None:
        self._ready.set()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
