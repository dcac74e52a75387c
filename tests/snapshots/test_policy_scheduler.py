"""The policy scheduler with a controllable clock: it takes a RECURRING snapshot when a policy is
due, never twice for one run, and keeps only the newest maxsnaps."""

from __future__ import annotations

from datetime import timedelta

from secstor.db.models import SnapshotPolicy
from secstor.runtime import Runtime
from secstor.services.snapshots import run_due_policies
from tests.snapshots.conftest import wait_for


def test_scheduler_takes_due_snapshots_once_and_prunes_beyond_maxsnaps(fast_admin, pool_zone, runtime):
    pz = pool_zone("RAW")
    volume = fast_admin.createVolume(name="sched", zoneid=pz.zone_id, size=1)["volume"]
    policy = fast_admin.createSnapshotPolicy(volumeid=volume["id"], intervaltype="HOURLY", schedule="07",
                                             timezone="Asia/Kolkata", maxsnaps=2)["snapshotpolicy"]
    with runtime.session() as s:
        due = s.query(SnapshotPolicy).filter_by(uuid=policy["id"]).one().next_run_at
    assert due.astimezone(timezone_kolkata()).minute == 7
    clock = [due - timedelta(seconds=1)]
    scheduler = Runtime(runtime.config, engine=runtime.engine, secrets=runtime.secrets, clock=lambda: clock[0])
    assert run_due_policies(scheduler) == []  # not yet due

    def settled(count: int) -> list[dict] | None:
        """The volume's snapshots once there are ``count``, all BackedUp (pruning done)."""
        listed = fast_admin.listSnapshots(volumeid=volume["id"]).get("snapshot", [])
        return listed if len(listed) == count and all(s["state"] == "BackedUp" for s in listed) else None

    taken = []
    for run in range(3):
        clock[0] = due + timedelta(hours=run)
        assert len(run_due_policies(scheduler)) == 1
        assert run_due_policies(scheduler) == []  # a second scheduler finds the run claimed
        taken.append(wait_for(lambda: settled(min(run + 1, 2)))[-1]["id"])
    kept = settled(2)
    assert [s["id"] for s in kept] == taken[1:]  # the oldest was deleted
    assert all(s["snapshottype"] == "RECURRING" and s["intervaltype"] == "HOURLY" for s in kept)
    listed = fast_admin.listSnapshots(volumeid=volume["id"], intervaltype="HOURLY")
    assert listed["count"] == 2


def timezone_kolkata():
    from zoneinfo import ZoneInfo

    return ZoneInfo("Asia/Kolkata")
