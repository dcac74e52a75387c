"""deleteAccount removes what the account owned: its running instance (and ROOT volume), a data
volume, its snapshots and its own template (every stored copy), and nothing of another account."""

from __future__ import annotations

import uuid

from tests.support.api import create_api_user
from tests.volumes.conftest import raw_image, wait_for


def test_deleting_an_account_removes_its_instances_volumes_snapshots_and_templates(
        server, fast_admin, pool_zone, ready_template, serve):
    pz = pool_zone("RAW")
    public = ready_template(pz.zone_id, raw_image(), "RAW", ispublic=True)
    owner = create_api_user(server, fast_admin)
    cs = server.cs(key=owner.apikey, secret=owner.secretkey, poll_interval=0.1, job_timeout=60, fetch_result=True)

    vm = cs.deployVirtualMachine(templateid=public["id"], zoneid=pz.zone_id, name="doomed")["virtualmachine"]
    assert vm["state"] == "Running"
    root = cs.listVolumes(virtualmachineid=vm["id"])["volume"][0]
    data = cs.createVolume(name="data", zoneid=pz.zone_id, size=1)["volume"]
    snap = cs.createSnapshot(volumeid=data["id"])["snapshot"]
    assert snap["state"] == "BackedUp"
    own = cs.registerTemplate(name=f"own-{uuid.uuid4().hex[:6]}", displaytext="own", format="RAW",
                              url=serve(raw_image(), "own.raw"), zoneid=pz.zone_id, hypervisor="Simulator",
                              ostypeid="1")["template"][0]
    wait_for(lambda: (fast_admin.listTemplates(id=own["id"], templatefilter="all").get("template") or [{}])[0]
             .get("isready"))
    files = [pz.pool_file("RAW", v["path"]) for v in fast_admin.listVolumes(id=root["id"])["volume"]
             + fast_admin.listVolumes(id=data["id"])["volume"]]
    assert all(f.exists() for f in files)

    assert fast_admin.deleteAccount(id=owner.account["id"]) == {"success": True}
    job = wait_for(lambda: next((j for j in fast_admin.listAsyncJobs().get("asyncjobs", [])
                                 if j.get("jobinstanceid") == owner.account["id"] and j["jobstatus"] != 0), None))
    assert job["jobstatus"] == 1, job
    result = job["jobresult"]["accountcleanup"]
    assert (result["instances"], result["snapshots"], result["volumes"], result["templates"]) == (1, 1, 1, 1)

    assert fast_admin.listVirtualMachines(id=vm["id"]) == {}
    assert fast_admin.listVolumes(id=root["id"]) == {} and fast_admin.listVolumes(id=data["id"]) == {}
    assert not any(f.exists() for f in files)  # the files are gone from the pool, not only the rows
    assert fast_admin.listSnapshots(id=snap["id"]) == {}
    assert fast_admin.listTemplates(id=own["id"], templatefilter="all") == {}
    # another account's template (the admin's public one it deployed from) is untouched
    assert fast_admin.listTemplates(id=public["id"], templatefilter="all")["template"][0]["isready"] is True
