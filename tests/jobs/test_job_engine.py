"""The engine's claim/lease/complete rules, driven with explicit times (no sleeping)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

from secstor.db.models import AsyncJob
from secstor.jobs import engine
from secstor.jobs.engine import Lease, backoff_seconds, claim, queue_metrics, request_cancel


def test_each_job_is_claimed_by_exactly_one_of_many_concurrent_workers(runtime, queue, add_job, job_row):
    job_ids = {add_job() for _ in range(30)}
    claimed: dict[str, list[int]] = {}
    start = threading.Barrier(6)
    now = runtime.now()

    def worker(name: str) -> None:
        got = claimed.setdefault(name, [])
        start.wait()
        while (job := claim(runtime.session_factory, name, [queue], 60, now)) is not None:
            got.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    all_claims = [job_id for ids in claimed.values() for job_id in ids]
    assert sorted(all_claims) == sorted(job_ids)  # every job once, none twice
    for name, ids in claimed.items():
        for job_id in ids:
            row = job_row(job_id)
            assert (row.state, row.jobstatus, row.lease_owner, row.attempts) == ("running", 0, name, 1)


def test_a_dead_workers_job_is_taken_over_once_its_lease_expires(runtime, queue, add_job, job_row):
    job_id = add_job()
    t0 = runtime.now()
    assert claim(runtime.session_factory, "worker-a", [queue], 10, t0).id == job_id
    assert claim(runtime.session_factory, "worker-b", [queue], 10, t0 + timedelta(seconds=5)) is None

    taken = claim(runtime.session_factory, "worker-b", [queue], 10, t0 + timedelta(seconds=11))
    assert taken.id == job_id
    row = job_row(job_id)
    assert (row.state, row.lease_owner, row.attempts) == ("running", "worker-b", 2)
    assert "worker-a died" in row.last_error


def test_a_worker_whose_lease_was_taken_over_can_neither_renew_nor_finish(runtime, queue, add_job, job_row):
    job_id = add_job()
    t0 = runtime.now()
    sf = runtime.session_factory
    lease_a = Lease.of(claim(sf, "worker-a", [queue], 10, t0))
    lease_b = Lease.of(claim(sf, "worker-b", [queue], 10, t0 + timedelta(seconds=11)))
    later = t0 + timedelta(seconds=12)

    assert engine.renew(sf, [lease_a], 10, later) == {job_id}
    assert not engine.complete(sf, lease_a, {"testjob": {"by": "a"}}, later)
    assert not engine.fail(sf, lease_a, 530, "a failed", later)
    assert not engine.requeue(sf, lease_a, 1, "a retry", later)
    row = job_row(job_id)
    assert (row.state, row.lease_owner, row.result_json) == ("running", "worker-b", None)

    assert engine.complete(sf, lease_b, {"testjob": {"by": "b"}}, later)
    row = job_row(job_id)
    assert (row.state, row.jobstatus, row.result_code) == ("succeeded", 1, 0)
    assert json.loads(row.result_json) == {"testjob": {"by": "b"}}


def test_a_job_same_worker_reclaimed_is_fenced_by_its_attempt(runtime, queue, add_job, job_row):
    """Even the same worker id, after its own lease expired and it claimed the job again, cannot
    finish the job through the old claim (the attempt number is the fencing token)."""
    add_job()
    t0 = runtime.now()
    sf = runtime.session_factory
    old = Lease.of(claim(sf, "worker-a", [queue], 10, t0))
    new = Lease.of(claim(sf, "worker-a", [queue], 10, t0 + timedelta(seconds=11)))
    assert not engine.complete(sf, old, {"success": True}, t0 + timedelta(seconds=12))
    assert engine.complete(sf, new, {"success": True}, t0 + timedelta(seconds=12))


def test_a_requeued_job_waits_for_its_back_off(runtime, queue, add_job, job_row):
    job_id = add_job()
    t0 = runtime.now()
    sf = runtime.session_factory
    lease = Lease.of(claim(sf, "worker-a", [queue], 60, t0))
    assert engine.requeue(sf, lease, 30, "store unreachable", t0)
    row = job_row(job_id)
    assert (row.state, row.jobstatus, row.lease_owner, row.last_error) == ("pending", 0, None, "store unreachable")

    assert claim(sf, "worker-b", [queue], 60, t0 + timedelta(seconds=28)) is None
    again = claim(sf, "worker-b", [queue], 60, t0 + timedelta(seconds=31))
    assert (again.id, again.attempts) == (job_id, 2)


def test_back_off_doubles_and_is_capped():
    assert [backoff_seconds(n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff_seconds(30) == 300


def test_a_job_whose_worker_keeps_dying_fails_after_max_attempts(runtime, queue, add_job, job_row):
    job_id = add_job(max_attempts=2)
    t0 = runtime.now()
    sf = runtime.session_factory
    claim(sf, "worker-a", [queue], 10, t0)
    claim(sf, "worker-b", [queue], 10, t0 + timedelta(seconds=11))

    assert claim(sf, "worker-c", [queue], 10, t0 + timedelta(seconds=22)) is None
    row = job_row(job_id)
    assert (row.state, row.jobstatus, row.result_code, row.attempts) == ("failed", 2, 530, 2)
    result = json.loads(row.result_json)
    assert result["errorcode"] == 530
    assert result["errortext"] == ("Job failed after 2 attempts: the worker running it died (last worker worker-b, "
                                   "lease expired) and no attempts are left")


def test_cancelling_a_pending_job_cancels_it_at_once(runtime, queue, add_job, job_row):
    job_id = add_job()
    with runtime.session() as s:
        assert request_cancel(s, s.get(AsyncJob, job_id), runtime.now()) == "cancelled"
    row = job_row(job_id)
    assert (row.state, row.jobstatus, row.result_code) == ("cancelled", 3, 530)
    assert json.loads(row.result_json) == {"errorcode": 530, "errortext": "The job was cancelled"}
    assert claim(runtime.session_factory, "worker-a", [queue], 60, runtime.now()) is None


def test_cancelling_a_running_job_asks_its_handler_to_stop(runtime, queue, add_job, job_row):
    job_id = add_job()
    claim(runtime.session_factory, "worker-a", [queue], 60, runtime.now())
    with runtime.session() as s:
        assert request_cancel(s, s.get(AsyncJob, job_id), runtime.now()) == "running"
    row = job_row(job_id)
    assert (row.state, row.cancel_requested, row.lease_owner) == ("running", True, "worker-a")


def test_a_worker_claims_only_jobs_it_has_a_handler_for(runtime, queue, add_job):
    add_job(handler="handler.this.worker.lacks")
    assert claim(runtime.session_factory, "worker-a", [queue], 60, runtime.now(), handlers=["test.echo"]) is None


def test_queue_metrics_count_pending_and_running_and_the_longest_wait(runtime, queue, add_job):
    t0 = runtime.now()
    for age in (30, 20, 10):
        add_job(now=t0 - timedelta(seconds=age))
    claim(runtime.session_factory, "worker-a", [queue], 60, t0)  # takes the oldest

    with runtime.session() as s:
        metrics = queue_metrics(s, t0)
    assert metrics[queue] == {"depth": 2, "running": 1, "oldest_wait_seconds": 20.0}
    assert {"default", "copy"} <= set(metrics)
