"""Work that runs beside the API in `serve` (and in `secstor worker`): job workers and
periodic tasks (capacity scans, clean-ups). Each periodic task runs in its own thread and
never lets an exception kill the loop."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from secstor.jobs.worker import DEFAULT_GRACE_SECONDS

if TYPE_CHECKING:
    from secstor.jobs.worker import Worker
    from secstor.runtime import Runtime

log = logging.getLogger("secstor.background")


@dataclass(frozen=True)
class PeriodicTask:
    name: str
    interval: Callable[["Runtime"], float]  # seconds, read each round so settings apply live
    run: Callable[["Runtime"], None]


# Tasks that every process with background services runs. Modules append to this list.
PERIODIC_TASKS: list[PeriodicTask] = []


def periodic_task(name: str, interval: Callable[["Runtime"], float]):
    def wrap(fn: Callable[["Runtime"], None]):
        PERIODIC_TASKS.append(PeriodicTask(name, interval, fn))
        return fn

    return wrap


class BackgroundServices:
    def __init__(self, runtime: "Runtime", *, run_periodic: bool = True, workers: Sequence["Worker"] = (),
                 grace_seconds: float = DEFAULT_GRACE_SECONDS):
        self._rt = runtime
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._run_periodic = run_periodic
        self._workers = list(workers)
        # How long stop() lets running jobs finish before leaving them to their leases.
        self._grace_seconds = grace_seconds

    def ready(self) -> bool:
        return self._ready.is_set()

    def _loop(self, task: PeriodicTask) -> None:
        while not self._stop.is_set():
            try:
                task.run(self._rt)
            except Exception:
                log.exception("periodic task %s failed; will retry", task.name)
            try:
                wait = max(0.2, float(task.interval(self._rt)))
            except Exception:
                wait = 30.0
            self._stop.wait(wait)

    def start(self) -> None:
        import secstor.services.periodic  # noqa: F401  (registers the built-in tasks)

        if self._run_periodic:
            for task in PERIODIC_TASKS:
                t = threading.Thread(target=self._loop, args=(task,), name=f"periodic-{task.name}", daemon=True)
                t.start()
                self._threads.append(t)
        for worker in self._workers:
            worker.start()
        self._ready.set()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.request_stop()
        deadline = time.monotonic() + self._grace_seconds
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        for t in self._threads:
            t.join(timeout=10)
