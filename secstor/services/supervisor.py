"""The worker supervisor of the embedded (`secstor serve`) and single-host (`secstor supervise`)
modes: starts extra `secstor worker` processes on this host, up to ``max.ssvm.count``, while
copies wait too long in a queue, and stops them (SIGTERM: they finish their jobs) once the
queue is empty. The decision is secstor.domain.worker_scaling.scaling_step.

Tests and impatient operators shorten the wait: $SECSTOR_SUPERVISOR_WAIT_SECONDS overrides
``max.data.migration.wait.time`` (minutes), $SECSTOR_SUPERVISOR_INTERVAL the check interval.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from secstor.domain.worker_scaling import QueueLoad, scaling_step
from secstor.jobs.engine import queue_metrics

if TYPE_CHECKING:
    from secstor.runtime import Runtime

log = logging.getLogger("secstor.supervisor")

WAIT_ENV = "SECSTOR_SUPERVISOR_WAIT_SECONDS"
INTERVAL_ENV = "SECSTOR_SUPERVISOR_INTERVAL"
DEFAULT_INTERVAL_SECONDS = 10.0
COPY_QUEUE = "copy"
STOP_GRACE_SECONDS = 30.0


@dataclass
class ExtraWorker:
    worker_id: str
    process: subprocess.Popen


class Supervisor:
    """Scales the workers of one queue. ``base_workers``: the workers that run anyway (the
    embedded ones, or those `secstor supervise` keeps); ``worker_args``: how a child reaches the
    same home, configuration and database."""

    def __init__(self, runtime: "Runtime", worker_args: list[str], *, base_workers: int, queue: str = COPY_QUEUE):
        self.runtime, self.worker_args, self.base_workers, self.queue = runtime, worker_args, base_workers, queue
        self.extras: list[ExtraWorker] = []
        self._started = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="worker-supervisor", daemon=True)

    def wait_threshold_seconds(self) -> float:
        override = os.environ.get(WAIT_ENV)
        return float(override) if override else 60.0 * float(self.runtime.settings.get("max.data.migration.wait.time"))

    def check(self) -> int:
        """One look at the queue; returns the step taken."""
        self._reap()
        with self.runtime.session() as s:
            m = queue_metrics(s, self.runtime.now()).get(self.queue, {"depth": 0, "running": 0,
                                                                      "oldest_wait_seconds": 0.0})
        sessions = int(self.runtime.settings.get("secstorage.max.migrate.sessions"))
        step = scaling_step(QueueLoad(m["depth"], m["running"], m["oldest_wait_seconds"]),
                            workers=self.base_workers + len(self.extras), extra_workers=len(self.extras),
                            max_extra_workers=int(self.runtime.settings.get("max.ssvm.count")),
                            sessions_per_worker=sessions, wait_threshold_seconds=self.wait_threshold_seconds())
        if step > 0:
            self._start_one(sessions, m)
        elif step < 0:
            self._stop_extras(f"queue {self.queue} is empty")
        return step

    def _start_one(self, sessions: int, metrics: dict) -> None:
        self._started += 1
        worker_id = f"{socket.gethostname()}-{os.getpid()}-extra-{self._started}"
        process = subprocess.Popen([sys.executable, "-m", "secstor.cli.main", "worker", *self.worker_args,
                                    "--id", worker_id, "--slots", f"{self.queue}={sessions}"])
        self.extras.append(ExtraWorker(worker_id, process))
        log.info("supervisor: started worker %s (pid %d): %d jobs waiting in queue %s, the oldest for %.1f s",
                 worker_id, process.pid, metrics["depth"], self.queue, metrics["oldest_wait_seconds"])

    def _stop_extras(self, why: str) -> None:
        for extra in self.extras:
            if extra.process.poll() is None:
                extra.process.send_signal(signal.SIGTERM)
        for extra in self.extras:
            try:
                extra.process.wait(STOP_GRACE_SECONDS + 5)
            except subprocess.TimeoutExpired:
                extra.process.kill()
                extra.process.wait()
            log.info("supervisor: stopped worker %s (%s)", extra.worker_id, why)
        self.extras = []

    def _reap(self) -> None:
        """Forget extra workers that ended on their own (crashed or killed)."""
        for extra in [e for e in self.extras if e.process.poll() is not None]:
            log.warning("supervisor: worker %s ended with status %s", extra.worker_id, extra.process.returncode)
            self.extras.remove(extra)

    def _loop(self) -> None:
        interval = float(os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL_SECONDS)
        while not self._stop.wait(interval):
            try:
                self.check()
            except Exception:
                log.exception("supervisor: check failed; will retry")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._stop_extras("supervisor stopping")
