"""Delete once, clean everywhere: deleting a region template removes the region copy and every
staging copy, and a staging store offline at the time is cleaned once it is back (the periodic
retry's function called directly)."""

from __future__ import annotations

import shutil

import pytest
from cs import CloudStackApiException

from secstor.services.staging import retry_pending_deletions
from tests.region.test_staging_pull import extract, ready_everywhere, staged

pytestmark = pytest.mark.usefixtures("loopback_allowed")


def store_objects(cs, store_id: str, path: str) -> list[str]:
    """Names under ``path`` on a store, as listImageStoreObjects shows them ([] once the path is gone)."""
    try:
        return [o["name"] for o in cs.listImageStoreObjects(id=store_id, path=path).get("datastoreobject", [])]
    except CloudStackApiException as exc:
        assert exc.error["errorcode"] == 431 and "doesn't exist" in exc.error["errortext"]
        return []


def test_delete_with_a_staging_store_offline_is_completed_when_it_is_back(admin_cs, runtime, region, serve, images,
                                                                          unique_name):
    content = images["qcow2"]
    t = ready_everywhere(admin_cs, region, serve(content), unique_name)
    zone1, zone2 = region.zones
    before = set(staged(region, 1))
    extract(admin_cs, t["id"], zone1)
    extract(admin_cs, t["id"], zone2)
    (pulled,) = set(staged(region, 1)) - before
    key = str(pulled.relative_to(region.staging_paths[1]))
    account_dir, template_dir = key.rsplit("/", 2)[0], key.split("/")[3]
    staging1, staging2 = region.staging
    assert template_dir in store_objects(admin_cs, staging2["id"], account_dir)

    # Zone 2's staging store goes away (its directory replaced by a file: nothing can be written).
    root = region.staging_paths[1]
    away = root.with_name(root.name + ".offline")
    root.rename(away)
    root.write_text("offline")
    try:
        admin_cs.deleteTemplate(id=t["id"], fetch_result=True)
        assert admin_cs.listTemplates(templatefilter="self", id=t["id"]).get("template", []) == []
        assert [k for k in region.objects() if k.startswith(f"{account_dir}/{template_dir}/")] == []
        assert template_dir not in store_objects(admin_cs, staging1["id"], account_dir)
        assert retry_pending_deletions(runtime) == 0  # still offline: the removal stays owed
    finally:
        root.unlink()
        away.rename(root)
    assert (root / key).exists()  # back with the copy it held when it went away
    assert retry_pending_deletions(runtime) >= 1
    assert not (root / key).exists()
    assert template_dir not in store_objects(admin_cs, staging2["id"], account_dir)
    assert retry_pending_deletions(runtime) == 0  # nothing owed any more
    shutil.rmtree(away, ignore_errors=True)
