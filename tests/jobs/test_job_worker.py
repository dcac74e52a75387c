"""In-process workers running the test handlers: outcomes, retries, cancellation, limits, stop."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from secstor.db.models import AsyncJob, WorkerHeartbeat
from secstor.jobs import engine
from secstor.jobs.engine import request_cancel
from secstor.jobs.worker import LEASE_ENV
from tests.jobs.conftest import wait_for
from tests.support.jobs_fixtures import concurrency


def test_a_successful_job_stores_its_result_and_progress(queue, add_job, start_worker, wait_finished):
    start_worker({queue: 1})
    job = wait_finished(add_job("test.echo", {"value": "hello"}))
    assert (job.state, job.jobstatus, job.result_code, job.result_type) == ("succeeded", 1, 0, "object")
    assert json.loads(job.result_json) == {"testjob": {"echo": "hello", "attempt": 1}}
    assert json.loads(job.progress_json) == {"step": "echoing"} and job.jobprocstatus == 1
    assert job.completed is not None and job.lease_expires is None


def test_a_handler_error_fails_the_job_with_its_code_and_text(queue, add_job, start_worker, wait_finished):
    start_worker({queue: 1})
    job = wait_finished(add_job("test.fail", {"message": "Template is not in Ready state"}))
    assert (job.state, job.jobstatus, job.result_code) == ("failed", 2, 530)
    assert json.loads(job.result_json) == {"errorcode": 431, "errortext": "Template is not in Ready state"}


def test_an_unexpected_exception_fails_the_job_without_leaking_it(queue, add_job, start_worker, wait_finished,
                                                                   caplog):
    start_worker({queue: 1})
    with caplog.at_level(logging.ERROR, logger="secstor.worker"):
        job = wait_finished(add_job("test.crash", {"message": "password=hunter2"}))
    assert (job.jobstatus, job.result_code) == (2, 530)
    assert json.loads(job.result_json) == {"errorcode": 530, "errortext": "Internal error executing job"}
    crash_logs = [r for r in caplog.records if job.uuid in r.getMessage()]
    assert crash_logs and "password=hunter2" in (crash_logs[0].exc_text or "")


def test_a_retryable_error_runs_the_job_again(queue, add_job, start_worker, wait_finished):
    start_worker({queue: 1})
    job = wait_finished(add_job("test.retry", {"succeed_on": 3, "delay": 0.05}))
    assert (job.state, job.attempts) == ("succeeded", 3)
    assert json.loads(job.result_json) == {"testjob": {"attempt": 3}}
    assert job.last_error == "transient failure on attempt 2"


def test_a_job_that_keeps_failing_transiently_fails_after_max_attempts(queue, add_job, start_worker, wait_finished):
    start_worker({queue: 1})
    job = wait_finished(add_job("test.retry", {"delay": 0.05}, max_attempts=2))
    assert (job.state, job.jobstatus, job.result_code, job.attempts) == ("failed", 2, 530, 2)
    assert json.loads(job.result_json) == {
        "errorcode": 530, "errortext": "transient failure on attempt 2 (gave up after 2 attempts)"}


def test_cancelling_a_running_job_stops_its_handler(runtime, queue, add_job, start_worker, job_row, wait_finished):
    start_worker({queue: 1})
    job_id = add_job("test.until_cancelled", {"seconds": 60})
    wait_for(lambda: job_row(job_id).progress_json, what="the job to report progress")
    with runtime.session() as s:
        assert request_cancel(s, s.get(AsyncJob, job_id), runtime.now()) == "running"
    job = wait_finished(job_id, timeout=10)
    assert (job.state, job.jobstatus, job.result_code) == ("cancelled", 3, 530)
    assert json.loads(job.result_json)["errortext"] == "The job was cancelled"


def test_running_jobs_per_queue_never_exceed_the_live_setting(runtime, queue, add_job, start_worker, wait_finished):
    setting = "secstorage.max.migrate.sessions"  # the limit of the "copy" queue
    with runtime.session() as s:
        runtime.settings.set(s, setting, "2")
    try:
        start_worker({queue: setting})
        first = [add_job("test.concurrent", {"key": f"{queue}-a", "seconds": 0.3}) for _ in range(6)]
        for job_id in first:
            wait_finished(job_id)
        assert concurrency(f"{queue}-a")["max"] == 2

        with runtime.session() as s:  # raised while the worker runs: it takes effect without a restart
            runtime.settings.set(s, setting, "3")
        second = [add_job("test.concurrent", {"key": f"{queue}-b", "seconds": 0.3}) for _ in range(6)]
        for job_id in second:
            wait_finished(job_id)
        assert concurrency(f"{queue}-b")["max"] == 3
    finally:
        with runtime.session() as s:
            runtime.settings.reset(s, setting)


def test_heartbeats_keep_a_long_job_with_its_worker(queue, add_job, start_worker, job_row, wait_finished,
                                                    monkeypatch):
    """With a 1 s lease, a 2.5 s job is never taken over by the idle second worker."""
    monkeypatch.setenv(LEASE_ENV, "1")
    start_worker({queue: 1}, f"{queue}-a")
    job_id = add_job("test.until_cancelled", {"seconds": 2.5})
    wait_for(lambda: job_row(job_id).lease_owner == f"{queue}-a", what="worker a to claim the job")
    start_worker({queue: 1}, f"{queue}-b")
    job = wait_finished(job_id)
    assert (job.state, job.attempts, job.lease_owner) == ("succeeded", 1, f"{queue}-a")


def test_graceful_stop_lets_running_jobs_finish(runtime, queue, add_job, start_worker, job_row, wait_finished):
    worker = start_worker({queue: 1})
    job_id = add_job("test.concurrent", {"key": queue, "seconds": 0.5})
    wait_for(lambda: job_row(job_id).state == "running", what="the job to start")
    assert worker.stop(grace=10) is True
    assert job_row(job_id).state == "succeeded"
    with runtime.session() as s:
        assert s.get(WorkerHeartbeat, worker.worker_id) is None


def test_a_job_still_running_after_the_grace_time_is_left_to_its_lease(runtime, queue, add_job, start_worker,
                                                                        job_row):
    worker = start_worker({queue: 1})
    job_id = add_job("test.until_cancelled", {"seconds": 60})
    wait_for(lambda: job_row(job_id).state == "running", what="the job to start")
    assert worker.stop(grace=0.2) is False
    # The handler gives up at its next step and nothing renews the lease any more, so another
    # worker takes the job over once the lease expires.
    wait_for(lambda: not any(worker.running().values()), what="the abandoned handler to stop")
    row = job_row(job_id)
    assert (row.state, row.lease_owner) == ("running", worker.worker_id)
    assert engine.claim(runtime.session_factory, "next-worker", [queue], 60, row.lease_expires) is None
    assert engine.claim(runtime.session_factory, "next-worker", [queue], 60,
                        row.lease_expires + timedelta(seconds=1)).id == job_id
