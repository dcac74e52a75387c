"""A template being migrated stays usable: between its copy and its switch (held there by the
hold_switch hook) it is listed as ready and its extract URL serves the original bytes, and the
migration then ends with the template Ready on the destination only."""

from __future__ import annotations

import hashlib
from pathlib import Path

import requests

from secstor.domain.states import ObjectInStoreState
from tests.migration.conftest import complete_on, copies, finished, ready_only_on, store_id
from tests.migration.test_snapshot_chains import HOLD_SWITCH, held_switch
from tests.templates.conftest import wait_for


def test_a_template_being_migrated_stays_listed_ready_and_extractable(api_only, server, workers, zone, seed,
                                                                      runtime, tmp_path):
    cs = api_only.cs()
    user_side = server.cs(fetch_result=True, job_timeout=60)  # the session server's worker runs extracts
    z = zone(64 << 20, 64 << 20)
    template = seed(z.stores[0]["id"], 256 * 1024)
    hold = held_switch(tmp_path)
    workers(HOLD_SWITCH, SECSTOR_TEST_HOLD_FILE=str(hold))
    jobid = complete_on(cs, workers.queue, z.stores[0], z.stores[1])
    try:
        wait_for(lambda: Path(f"{hold}.reached").exists() or cs.queryAsyncJobResult(jobid=jobid)["jobstatus"],
                 timeout=30)  # copied, not yet switched
        assert Path(f"{hold}.reached").exists(), cs.queryAsyncJobResult(jobid=jobid).get("jobresult")
        source = store_id(runtime, z.stores[0]["id"])
        assert copies(runtime, template.id)[source] == ObjectInStoreState.Migrating.value
        listed = user_side.listTemplates(id=template.uuid, templatefilter="all")["template"][0]
        assert listed["isready"] is True
        assert [t["id"] for t in user_side.listTemplates(templatefilter="all", isready=True, zoneid=z.id)["template"]] \
            == [template.uuid]
        url = user_side.extractTemplate(id=template.uuid, mode="HTTP_DOWNLOAD", zoneid=z.id)["template"]["url"]
        assert hashlib.sha256(requests.get(url, timeout=30).content).hexdigest() == template.sha256
    finally:
        hold.unlink(missing_ok=True)
    job = finished(cs, jobid, timeout=60)
    assert job["jobresult"]["imagestore"]["success"] is True, job
    assert ready_only_on(runtime, template, z.stores[1]["id"])
