"""resetTemplateDownload and copies that wait for (or receive) an upload: there is nothing to
download, so a reset is refused rather than turning an upload into a download with no URL."""

from __future__ import annotations

import pytest

from secstor.db.models import TemplateStoreRef
from secstor.services.template_sync import refusal_to_reset
from tests.templates.test_templates_api import api_error
from tests.templates.test_upload import upload_params


def test_reset_of_a_copy_waiting_for_its_upload_is_refused(admin_cs, make_zone, unique_name):
    zone = make_zone()
    params = upload_params(admin_cs, zone.id, unique_name)
    err = api_error(admin_cs.resetTemplateDownload, id=params["id"])
    assert err["errorcode"] == 431 and "is NOT_UPLOADED" in err["errortext"]
    listed = admin_cs.listTemplates(id=params["id"], templatefilter="all")["template"][0]
    assert listed["downloaddetails"][0]["downloadState"] == "NOT_UPLOADED"


@pytest.mark.nodb
def test_a_copy_receiving_its_upload_may_not_be_reset():
    receiving = TemplateStoreRef(state="Creating", download_state="UPLOAD_IN_PROGRESS", job_id=None)
    assert "UPLOAD_IN_PROGRESS" in refusal_to_reset(None, receiving)
    failed = TemplateStoreRef(state="Allocated", download_state="UPLOAD_ERROR", job_id=None)
    assert refusal_to_reset(None, failed) is None
