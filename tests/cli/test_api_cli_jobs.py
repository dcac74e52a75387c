"""`secstor api` with async commands: waiting, results, failures, --no-wait."""

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from secstor.cli.api_cmd import job_progress
from secstor.cli.main import app
from tests.support.jobs_fixtures import EXTRA_MODULES
from tests.support.server import ServerProcess

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def job_server(runtime, db_url):
    """A second API process on the session database whose worker also runs the test job handlers
    (the shared server's worker never claims them: it claims only handlers it knows)."""
    srv = ServerProcess(home=runtime.config.home, database_url=db_url,
                        env={"SECSTOR_EXTRA_JOB_MODULES": EXTRA_MODULES, "PYTHONPATH": str(REPO_ROOT)}).start()
    yield srv
    srv.stop()


@pytest.fixture
def run(job_server):
    runner = CliRunner()
    clean = {name: None for name in os.environ if name.startswith("SECSTOR_")}

    def invoke(*args: str):
        return runner.invoke(app, ["api", *args, "--home", str(job_server.home), "--url", job_server.api_url],
                             env=clean)

    return invoke


def test_waits_for_the_job_and_prints_its_result(run, tmp_path):
    params = {"path": str(tmp_path / "out"), "chunks": 3, "chunk_size": 1024, "delay": 0.2}
    result = run("testRunJob", "handler=test.chunks", f"params={json.dumps(params)}")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out").stat().st_size == 3 * 1024  # the job really ran to the end
    assert any("resumedfrom" in line and "0" in line for line in result.stdout.splitlines())


def test_json_output_of_an_async_command_is_the_final_job_body(run):
    result = run("testRunJob", "handler=test.echo", 'params={"value": "hello"}', "-o", "json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)["queryasyncjobresultresponse"]
    assert (job["jobstatus"], job["jobresultcode"]) == (1, 0)
    assert job["jobresult"]["testjob"]["echo"] == "hello"


def test_failed_job_prints_its_error_and_exits_1(run):
    result = run("testRunJob", "handler=test.fail", 'params={"message": "the disk is on fire"}')
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error 431: the disk is on fire"


def test_no_wait_prints_the_job_id_and_the_job_can_be_queried(run):
    result = run("testRunJob", "handler=test.echo", "--no-wait", "-o", "json")
    assert result.exit_code == 0, result.output
    jobid = json.loads(result.stdout)["testrunjobresponse"]["jobid"]
    # queryAsyncJobResult shows the job's fields; it is not itself a job to wait for.
    query = run("queryAsyncJobResult", f"jobid={jobid}")
    assert query.exit_code == 0, query.output
    assert any("jobid" in line and jobid in line for line in query.stdout.splitlines())
    assert any("jobstatus" in line for line in query.stdout.splitlines())


@pytest.mark.nodb
@pytest.mark.parametrize("job, expected", [
    ({"jobprocstatus": 40, "progress": {"bytesdone": 4e9, "bytestotal": 1e10, "objectsdone": 1}},
     (4e9, 1e10, "bytes")),
    ({"jobprocstatus": 0, "progress": {"objects_done": 3, "objects_remaining": 7}}, (3, 10, "objects")),
    ({"jobprocstatus": 66, "progress": {"chunksdone": 2}}, (66, 100, "percent")),
    ({"jobprocstatus": 0, "progress": {"step": "echoing"}}, None),
])
def test_progress_bar_prefers_bytes_then_objects_then_percent(job, expected):
    assert job_progress(job) == expected


def test_job_timeout_stops_waiting_but_not_the_job(run, job_server):
    result = run("testRunJob", "handler=test.until_cancelled", 'params={"seconds": 30}', "--job-timeout", "0.5")
    assert result.exit_code == 1
    assert "still running after 0.5 s; it goes on" in result.stderr
    jobid = result.stderr.split("jobid=")[1].split("`")[0]
    cs = job_server.cs()
    assert cs.queryAsyncJobResult(jobid=jobid)["jobstatus"] == 0
    cs.cancelAsyncJob(jobid=jobid)
