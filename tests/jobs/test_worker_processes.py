"""Real `secstor worker` processes sharing the database: kill -9 one mid-job, the other finishes it."""

from __future__ import annotations

import json
import signal

import pytest
from sqlalchemy import select

from secstor.db.models import WorkerHeartbeat
from secstor.jobs.handlers import EXTRA_MODULES_ENV
from secstor.jobs.worker import LEASE_ENV
from tests.jobs.conftest import WorkerProcess, wait_for
from tests.support.jobs_fixtures import EXTRA_MODULES, chunk_bytes

CHUNKS, CHUNK_SIZE = 24, 64 * 1024


@pytest.fixture
def two_workers(runtime, db_url, queue):
    env = {EXTRA_MODULES_ENV: EXTRA_MODULES, LEASE_ENV: "3"}
    ids = [f"{queue}-a", f"{queue}-b"]
    workers = {wid: WorkerProcess(runtime.config.home, db_url, wid, f"{queue}=1", env) for wid in ids}
    try:
        def both_beating() -> bool:
            with runtime.session() as s:
                return len(s.scalars(select(WorkerHeartbeat).where(WorkerHeartbeat.worker_id.in_(ids))).all()) == 2

        wait_for(both_beating, timeout=30, interval=0.1, what="both worker processes to start")
        yield workers
    finally:
        for w in workers.values():
            w.close()


def test_a_killed_workers_job_is_resumed_from_its_checkpoint_by_another_worker(
        runtime, two_workers, add_job, job_row, wait_finished, tmp_path):
    target = tmp_path / "image.bin"
    job_id = add_job("test.chunks", {"path": str(target), "chunks": CHUNKS, "chunk_size": CHUNK_SIZE, "delay": 0.1})

    def some_chunks_written():
        row = job_row(job_id)
        return row.checkpoint_json and json.loads(row.checkpoint_json)["next"] >= 4 and row

    owner = wait_for(some_chunks_written, timeout=30, what="the job to write some chunks").lease_owner
    victim = two_workers[owner]
    survivor = next(w for w in two_workers.values() if w is not victim)
    victim.signal(signal.SIGKILL)
    victim.wait()
    resume_point = json.loads(job_row(job_id).checkpoint_json)["next"]
    assert resume_point < CHUNKS  # killed mid-job

    job = wait_finished(job_id, timeout=30)
    assert (job.state, job.jobstatus, job.attempts, job.lease_owner) == ("succeeded", 1, 2, survivor.worker_id)
    assert json.loads(job.result_json)["testjob"]["resumedfrom"] == resume_point
    assert target.with_suffix(".attempts").read_text().split("\n")[:2] == ["1 0", f"2 {resume_point}"]
    assert target.read_bytes() == b"".join(chunk_bytes(i, CHUNK_SIZE) for i in range(CHUNKS))
    assert f"worker {survivor.worker_id} claimed job {job.uuid} (run test.chunks) attempt 2/5" in survivor.log_text()

    # SIGTERM: a clean exit that takes the worker off the live list.
    survivor.signal(signal.SIGTERM)
    assert survivor.wait(20) == 0
    with runtime.session() as s:
        assert s.get(WorkerHeartbeat, survivor.worker_id) is None


@pytest.mark.nodb
def test_the_worker_command_refuses_bad_slots_naming_the_option():
    from typer.testing import CliRunner

    from secstor.cli.main import app

    result = CliRunner().invoke(app, ["worker", "--slots", "copy=0"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "Invalid value for --slots: invalid slot 'copy=0': expected QUEUE=N with N >= 1" in result.output
