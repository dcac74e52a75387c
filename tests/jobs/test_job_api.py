"""The async-job API end to end: a real `secstor serve` (whose embedded worker runs the test
handlers) driven with the cs client."""

from __future__ import annotations

import json
import re
import socket
import uuid
from datetime import timedelta

import pytest
from cs import CloudStackApiException
from sqlalchemy import select

from secstor.api.format import cs_date
from secstor.db.models import Account, User
from secstor.jobs import engine
from secstor.jobs.handlers import EXTRA_MODULES_ENV
from secstor.services.accounts import create_account, generate_keys
from tests.jobs.conftest import wait_for
from tests.support.jobs_fixtures import EXTRA_MODULES
from tests.support.server import ServerProcess

CS_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}$")


@pytest.fixture(scope="module")
def job_server(runtime, db_url):
    srv = ServerProcess(home=runtime.config.home, database_url=db_url, env={EXTRA_MODULES_ENV: EXTRA_MODULES}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(job_server):
    return job_server.cs(poll_interval=0.1, job_timeout=30)


@pytest.fixture(scope="module")
def admin_ids(runtime) -> dict[str, str]:
    with runtime.session() as s:
        user = s.scalars(select(User).join(Account).where(Account.name == "admin")).first()
        return {"accountid": user.account.uuid, "userid": user.uuid}


@pytest.fixture(scope="module")
def user_account(runtime, job_server):
    """A User-role account: its cs client and its ids."""
    name = f"jobuser-{uuid.uuid4().hex[:6]}"
    with runtime.session() as s:
        account = create_account(s, runtime, name=name, role="User", username=name, password=None)
        user = s.scalars(select(User).where(User.account_id == account.id)).one()
        key, secret = generate_keys(runtime, user)
        ids = {"account_id": account.id, "user_id": user.id, "accountid": account.uuid}
    return job_server.cs(key=key, secret=secret), ids


def unserved_queue() -> str:
    """A queue no worker serves: jobs there stay pending."""
    return f"idle-{uuid.uuid4().hex[:10]}"


def query_until_done(cs, jobid: str) -> dict:
    return wait_for(lambda: (r := cs.queryAsyncJobResult(jobid=jobid))["jobstatus"] != 0 and r, timeout=30,
                    what=f"job {jobid} to finish")


def test_cs_polls_an_async_job_to_its_result(admin):
    result = admin.testRunJob(handler="test.echo", params=json.dumps({"value": "hi"}), fetch_result=True)
    assert result == {"testjob": {"echo": "hi", "attempt": 1}}


def test_a_failed_job_makes_cs_raise_with_the_jobs_error(admin):
    with pytest.raises(CloudStackApiException) as err:
        admin.testRunJob(handler="test.fail", params=json.dumps({"message": "No such template"}), fetch_result=True)
    assert err.value.error == {"errorcode": 431, "errortext": "No such template"}
    assert err.value.response.status_code == 200


def test_query_async_job_result_answers_cloudstacks_fields(admin, admin_ids):
    jobid = admin.testRunJob(handler="test.echo", params=json.dumps({"value": 7}))["jobid"]
    body = query_until_done(admin, jobid)
    assert {k: body[k] for k in ("accountid", "userid", "cmd", "jobid", "jobstatus", "jobprocstatus", "jobresultcode",
                                 "jobresulttype", "jobresult")} == {
        **admin_ids, "cmd": "testRunJob", "jobid": jobid, "jobstatus": 1, "jobprocstatus": 1, "jobresultcode": 0,
        "jobresulttype": "object", "jobresult": {"testjob": {"echo": 7, "attempt": 1}}}
    assert CS_DATE.match(body["created"]) and CS_DATE.match(body["completed"])
    assert (body["progress"], body["queue"], body["attempts"]) == ({"step": "echoing"}, "default", 1)


def test_a_failed_jobs_result_has_code_530_and_the_error(admin):
    jobid = admin.testRunJob(handler="test.crash", params=json.dumps({"message": "disk exploded"}))["jobid"]
    body = query_until_done(admin, jobid)
    assert (body["jobstatus"], body["jobresultcode"]) == (2, 530)
    assert body["jobresult"] == {"errorcode": 530, "errortext": "Internal error executing job"}


def test_a_pending_job_can_be_cancelled_once(admin):
    jobid = admin.testRunJob(handler="test.echo", queue=unserved_queue())["jobid"]
    pending = admin.queryAsyncJobResult(jobid=jobid)
    assert (pending["jobstatus"], pending["jobresultcode"]) == (0, 0)
    assert "jobresult" not in pending and "completed" not in pending

    cancelled = admin.cancelAsyncJob(jobid=jobid)["asyncjobs"]
    assert (cancelled["jobid"], cancelled["jobstatus"], cancelled["jobresultcode"]) == (jobid, 3, 530)
    body = admin.queryAsyncJobResult(jobid=jobid)
    assert body["jobresult"] == {"errorcode": 530, "errortext": "The job was cancelled"}

    with pytest.raises(CloudStackApiException) as err:
        admin.cancelAsyncJob(jobid=jobid)
    assert err.value.error["errorcode"] == 431 and "already finished" in err.value.error["errortext"]


def test_cancelling_a_running_job_stops_it(admin):
    jobid = admin.testRunJob(handler="test.until_cancelled", params=json.dumps({"seconds": 30}))["jobid"]
    wait_for(lambda: "progress" in admin.queryAsyncJobResult(jobid=jobid), what="the job to run")
    assert admin.cancelAsyncJob(jobid=jobid)["asyncjobs"]["cancelrequested"] is True
    body = query_until_done(admin, jobid)
    assert (body["jobstatus"], body["jobresultcode"]) == (3, 530)


def test_a_user_sees_and_cancels_only_its_own_jobs(runtime, admin, user_account):
    user, ids = user_account
    admin_job = admin.testRunJob(handler="test.echo", queue=unserved_queue())["jobid"]
    with runtime.session() as s:
        user_job = engine.enqueue(s, cmd="createSnapshot", handler="test.echo", params={}, account_id=ids["account_id"],
                                  user_id=ids["user_id"], queue=unserved_queue(), now=runtime.now()).uuid

    for command in (user.queryAsyncJobResult, user.cancelAsyncJob):
        with pytest.raises(CloudStackApiException) as err:
            command(jobid=admin_job)
        assert err.value.error["errorcode"] == 431
        assert err.value.error["errortext"] == f"Unable to find job with specified jobid {admin_job}"
    assert user.queryAsyncJobResult(jobid=user_job)["accountid"] == ids["accountid"]
    listed = user.listAsyncJobs()
    assert listed["count"] == 1 and listed["asyncjobs"][0]["jobid"] == user_job

    # Admins see their own account's jobs, and everyone's with listall=true (as in CloudStack).
    assert user_job not in {j["jobid"] for j in admin.listAsyncJobs(fetch_list=True)}
    assert user_job in {j["jobid"] for j in admin.listAsyncJobs(listall=True, fetch_list=True)}
    assert admin_job in {j["jobid"] for j in admin.listAsyncJobs(fetch_list=True)}


def test_admin_only_job_commands_are_hidden_from_users(user_account):
    user, _ids = user_account
    for command in ("listJobQueues", "testRunJob"):
        with pytest.raises(CloudStackApiException) as err:
            getattr(user, command)(handler="test.echo")
        assert err.value.error["errorcode"] == 432


def test_list_async_jobs_filters_by_start_date(runtime, admin):
    jobid = admin.testRunJob(handler="test.echo", queue=unserved_queue())["jobid"]
    since = {j["jobid"] for j in admin.listAsyncJobs(startdate=cs_date(runtime.now() - timedelta(minutes=1)),
                                                     fetch_list=True)}
    assert jobid in since
    assert admin.listAsyncJobs(startdate=cs_date(runtime.now() + timedelta(days=1))) == {}
    with pytest.raises(CloudStackApiException) as err:
        admin.listAsyncJobs(startdate="yesterday")
    assert err.value.error["errorcode"] == 431 and "startdate" in err.value.error["errortext"]


def test_a_bad_or_missing_jobid_is_431_naming_it(admin):
    with pytest.raises(CloudStackApiException) as err:
        admin.queryAsyncJobResult(jobid="not-a-uuid")
    assert err.value.error["errorcode"] == 431 and "jobid" in err.value.error["errortext"]
    with pytest.raises(CloudStackApiException) as err:
        admin.queryAsyncJobResult()
    assert err.value.error["errortext"] == \
        "Unable to execute API command queryasyncjobresult due to missing parameter jobid"


def test_list_job_queues_shows_queue_depth_and_live_workers(admin, job_server):
    queue = unserved_queue()
    for _ in range(2):
        admin.testRunJob(handler="test.echo", queue=queue)
    body = admin.listJobQueues()
    queues = {q["name"]: q for q in body["jobqueue"]}
    assert (queues[queue]["depth"], queues[queue]["running"]) == (2, 0)
    assert queues[queue]["oldestwaitseconds"] >= 0 and {"default", "copy"} <= set(queues)
    workers = {w["id"]: w for w in body["worker"]}
    embedded = workers[f"{socket.gethostname()}-{job_server.proc.pid}"]
    assert embedded["pid"] == job_server.proc.pid and set(embedded["slots"]) == {"default", "copy"}
