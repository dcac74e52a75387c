"""The upload monitor and uploads that started but stopped: the process receiving the POST died
(a crash, kill -9) after taking the upload, so its copy stays UPLOAD_IN_PROGRESS. Driven through the
services with the runtime's injectable clock; the objects are made and checked through the API."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest

from secstor.services import transfers
from secstor.services import volume_transfers as vt
from tests.templates.test_templates_api import api_error, listed
from tests.templates.test_upload import copy_of, upload_params


def _claim(runtime, params: dict):
    """What a POST does once its ticket is verified: take the upload (the copy goes
    UPLOAD_IN_PROGRESS). The server's own ticket check is covered by the upload tests."""
    payload = json.loads(base64.b64decode(params["metadata"]))
    return transfers.UPLOAD_KINDS[payload["kind"]].claim(runtime, payload["id"], payload)


@pytest.fixture
def later(runtime) -> Iterator:
    """``later(minutes)`` moves the runtime's clock forward (for good, until the test ends)."""
    real = runtime.clock
    offset = timedelta(0)

    def move(minutes: float) -> None:
        nonlocal offset
        offset += timedelta(minutes=minutes)

    runtime.clock = lambda: real() + offset
    yield move
    runtime.clock = real


def test_template_upload_that_stopped_mid_way_is_abandoned_and_can_be_deleted(admin_cs, runtime, later, make_zone,
                                                                                unique_name):
    zone = make_zone()
    params = upload_params(admin_cs, zone.id, unique_name)
    _claim(runtime, params)  # ... and the process dies
    assert copy_of(admin_cs, params["id"])["downloadState"] == "UPLOAD_IN_PROGRESS"
    refused = api_error(admin_cs.deleteTemplate, id=params["id"])  # stuck: it looks busy for ever
    assert refused["errorcode"] == 431 and "not currently being downloaded" in refused["errortext"]

    later(59)  # upload.operation.timeout is 60 minutes
    vt.abandon_expired_uploads(runtime)
    assert copy_of(admin_cs, params["id"])["downloadState"] == "UPLOAD_IN_PROGRESS"

    later(2)
    assert vt.abandon_expired_uploads(runtime) >= 1
    t = listed(admin_cs, params["id"])
    assert t["downloaddetails"][0]["downloadState"] == "ABANDONED" and t["isready"] is False
    assert t["status"] == ("Upload operation timed out: no data was received for 60 minutes, so the upload was "
                           "abandoned")
    assert admin_cs.deleteTemplate(id=params["id"], fetch_result=True)["success"] is True
    assert listed(admin_cs, params["id"]) is None


def test_template_upload_that_keeps_receiving_bytes_is_never_abandoned(admin_cs, runtime, later, make_zone, images,
                                                                       unique_name):
    zone = make_zone()
    content = images["qcow2"]
    params = upload_params(admin_cs, zone.id, unique_name)
    claim = _claim(runtime, params)
    third = len(content) // 3

    def slow_client():  # two hours in all, never more than 40 minutes without a byte
        for part in range(3):
            yield content[part * third : (part + 1) * third if part < 2 else None]
            later(40)
            vt.abandon_expired_uploads(runtime)
            assert copy_of(admin_cs, params["id"])["downloadState"] == "UPLOAD_IN_PROGRESS"

    stored = transfers.store_upload(runtime, claim, slow_client())
    assert stored.status == "Upload Complete"
    t = listed(admin_cs, params["id"])
    assert t["isready"] is True and t["downloaddetails"][0]["downloadState"] == "DOWNLOADED"
    admin_cs.deleteTemplate(id=params["id"], fetch_result=True)


def test_volume_upload_that_stopped_mid_way_ends_in_upload_error_and_can_be_deleted(admin_cs, runtime, later,
                                                                                    make_zone, unique_name):
    zone = make_zone()
    params = admin_cs.getUploadParamsForVolume(zoneid=zone.id, format="RAW", name=unique_name)["getuploadparams"]
    _claim(runtime, params)
    volume = admin_cs.listVolumes(id=params["id"])["volume"][0]
    assert volume["state"] == "UploadInProgress"

    later(61)
    assert vt.abandon_expired_uploads(runtime) >= 1
    volume = admin_cs.listVolumes(id=params["id"])["volume"][0]
    assert volume["state"] == "UploadError"
    assert volume["status"] == (f"Upload operation timed out for volume {params['id']}: no data was received for 60 "
                                "minutes, so the upload was abandoned")
    admin_cs.deleteVolume(id=params["id"])
    assert admin_cs.listVolumes(id=params["id"]) == {}


def test_volume_upload_finishing_after_it_was_abandoned_is_refused_and_keeps_nothing(admin_cs, runtime, later,
                                                                                      make_zone, unique_name):
    zone = make_zone()
    params = admin_cs.getUploadParamsForVolume(zoneid=zone.id, format="RAW", name=unique_name)["getuploadparams"]
    claim = _claim(runtime, params)
    later(61)
    assert vt.abandon_expired_uploads(runtime) >= 1
    # The stalled client wakes up and sends the rest: it is told the upload failed.
    with pytest.raises(transfers.UploadFailed) as refused:
        transfers.UPLOAD_KINDS[vt.VOLUME_KIND].store(runtime, claim, iter([bytes(1 << 20)]))
    assert "finished after it was given up" in refused.value.reason
    assert admin_cs.listVolumes(id=params["id"])["volume"][0]["state"] == "UploadError"
    driver = runtime.drivers.for_store(claim.up.store)
    assert driver.stat(claim.up.key) is None, "the late bytes are not kept"
    admin_cs.deleteVolume(id=params["id"])
