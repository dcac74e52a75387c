"""`secstor supervise` starts an extra worker when copies wait too long and stops it once the
queue is empty; GET /metrics exports what it decides on."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

from sqlalchemy import select

from secstor.db.models import WorkerHeartbeat
from secstor.jobs.handlers import EXTRA_MODULES_ENV
from secstor.services.supervisor import INTERVAL_ENV, WAIT_ENV
from tests.jobs.conftest import REPO_ROOT, wait_for
from tests.support.jobs_fixtures import EXTRA_MODULES


def extra_workers(runtime) -> list[str]:
    with runtime.session() as s:
        return list(s.scalars(select(WorkerHeartbeat.worker_id).where(WorkerHeartbeat.worker_id.like("%-extra-%"))))


def metrics(server) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        lines = reply.read().decode().splitlines()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if not line.startswith("#")}


def test_supervisor_adds_a_worker_for_waiting_copies_and_stops_it_when_the_queue_drains(
        runtime, db_url, server, admin_cs, queue, add_job, wait_finished, tmp_path):
    jobs = [add_job("test.concurrent", {"key": queue, "seconds": 1}) for _ in range(3)]
    exported = metrics(server)  # nothing serves the queue yet: its jobs wait, and /metrics says so
    assert exported[f'secstor_job_queue_depth{{queue="{queue}"}}'] == 3
    assert exported[f'secstor_job_running{{queue="{queue}"}}'] == 0
    assert exported[f'secstor_job_oldest_wait_seconds{{queue="{queue}"}}'] >= 0
    assert exported["secstor_workers"] >= 1  # the server's embedded worker

    admin_cs.updateConfiguration(name="max.ssvm.count", value="1")
    log_path = tmp_path / "supervise.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "secstor.cli.main", "supervise", "--home", str(runtime.config.home),
             "--database-url", db_url, "--base-workers", "0", "--queue", queue],
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), EXTRA_MODULES_ENV: EXTRA_MODULES, WAIT_ENV: "0.5",
                 INTERVAL_ENV: "0.2"}, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            for job in jobs:  # only a worker the supervisor starts serves this queue
                assert wait_finished(job, timeout=60).state == "succeeded"
            started = [line for line in log_path.read_text().splitlines() if "started worker" in line]
            assert len(started) == 1, log_path.read_text()  # max.ssvm.count=1
            wait_for(lambda: "stopped worker" in log_path.read_text(), timeout=30, what="the extra worker to stop")
            assert extra_workers(runtime) == []  # stopped gracefully: its heartbeat row removed
        finally:
            admin_cs.updateConfiguration(name="max.ssvm.count", value="5")
            proc.terminate()
            proc.wait(30)
