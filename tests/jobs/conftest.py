"""Fixtures for the job engine tests.

Every test uses its own queue name, so the workers of other tests (and of the shared `server`)
never take its jobs, and it never sees theirs in the shared session database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

import tests.support.jobs_fixtures  # noqa: F401  (registers the test handlers in this process)
from secstor.db.models import AsyncJob
from secstor.jobs import engine
from secstor.jobs.worker import Worker

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll until ``predicate()`` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def queue() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def add_job(runtime, queue) -> Callable[..., int]:
    """Enqueue a job on the test's queue; returns its id."""

    def add(handler: str = "test.echo", params: dict[str, Any] | None = None, *, max_attempts: int = 5,
            now: datetime | None = None, account_id: int | None = None, on_queue: str | None = None) -> int:
        with runtime.session() as s:
            job = engine.enqueue(s, cmd=f"run {handler}", handler=handler, params=params or {}, account_id=account_id,
                                 user_id=None, queue=on_queue or queue, now=now or runtime.now(),
                                 max_attempts=max_attempts)
            return job.id

    return add


@pytest.fixture
def job_row(runtime) -> Callable[[int], AsyncJob]:
    def get(job_id: int) -> AsyncJob:
        with runtime.session() as s:
            return s.get(AsyncJob, job_id)

    return get


@pytest.fixture
def wait_finished(job_row) -> Callable[..., AsyncJob]:
    def wait(job_id: int, timeout: float = 20.0) -> AsyncJob:
        return wait_for(lambda: (j := job_row(job_id)).state in engine.FINISHED_STATES and j, timeout,
                        what=f"job {job_id} to finish")

    return wait


@pytest.fixture
def start_worker(runtime) -> Iterator[Callable[..., Worker]]:
    """In-process workers, stopped at the end of the test."""
    started: list[Worker] = []

    def start(slots: dict[str, int | str], worker_id: str | None = None) -> Worker:
        worker = Worker(runtime, worker_id or f"inproc-{uuid.uuid4().hex[:8]}", slots, poll_interval=0.05).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(grace=10)


class WorkerProcess:
    """A real `secstor worker` subprocess."""

    def __init__(self, home: Path, database_url: str, worker_id: str, slots: str, env: dict[str, str]):
        self.worker_id = worker_id
        self.log_path = home.parent / f"{home.name}-worker-{worker_id}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "secstor.cli.main", "worker", "--home", str(home), "--database-url", database_url,
             "--id", worker_id, "--slots", slots, "--grace-seconds", "5"],
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}, cwd=REPO_ROOT, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.proc.wait()
        self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")
