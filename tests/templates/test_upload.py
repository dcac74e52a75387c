"""getUploadParamsForTemplate / getUploadParamsForIso and the browser-style multipart POST to
postURL, through the real API and a real `secstor serve`, into real stores."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from tests.templates.conftest import MIB
from tests.templates.test_templates_api import api_error, listed


def upload_params(cs, zone_id: str, name: str, *, iso: bool = False, **params) -> dict:
    if iso:
        return cs.getUploadParamsForIso(name=name, zoneid=zone_id, displaytext=name, **params)["getuploadparams"]
    params = {"format": "QCOW2", "hypervisor": "KVM", "displaytext": name, **params}
    return cs.getUploadParamsForTemplate(name=name, zoneid=zone_id, **params)["getuploadparams"]


def post(params: dict, content: bytes, **overrides: str) -> requests.Response:
    """What the CloudStack UI sends: the file as multipart field `file`, the ticket in X- headers."""
    headers = {"X-signature": params["signature"], "X-metadata": params["metadata"], "X-expires": params["expires"]}
    headers.update(overrides)
    return requests.post(params["postURL"], files={"file": ("image.bin", content)}, headers=headers, timeout=30)


def copy_of(cs, template_id: str, *, iso: bool = False) -> dict:
    return listed(cs, template_id, iso=iso)["downloaddetails"][0]


@contextmanager
def setting(cs, name: str, value: str) -> Iterator[None]:
    before = cs.listConfigurations(name=name)["configuration"][0]["value"]
    cs.updateConfiguration(name=name, value=value)
    time.sleep(1.2)  # the server's settings cache holds values for a second
    try:
        yield
    finally:
        cs.updateConfiguration(name=name, value=before)
        time.sleep(1.2)


def test_template_upload_round_trip(admin_cs, server, make_zone, images, unique_name):
    zone = make_zone()
    content = images["qcow2"]
    params = upload_params(admin_cs, zone.id, unique_name, checksum="{SHA-256}" + hashlib.sha256(content).hexdigest())
    assert params["postURL"] == f"{server.url}/upload/" + params["postURL"].rsplit("/", 1)[1]
    assert params["expires"].endswith("Z") and params["signature"] and params["metadata"]
    waiting = listed(admin_cs, params["id"])
    assert waiting["status"] == "NotUploaded" and waiting["isready"] is False and waiting["zoneid"] == zone.id
    assert copy_of(admin_cs, params["id"])["downloadState"] == "NOT_UPLOADED"

    preflight = requests.options(params["postURL"], headers={"Origin": "https://ui.example",
                                                             "Access-Control-Request-Method": "POST"}, timeout=10)
    assert preflight.status_code == 200 and "X-signature" in preflight.headers["Access-Control-Allow-Headers"]
    answer = post(params, content)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Access-Control-Allow-Origin"] == "*"

    t = listed(admin_cs, params["id"])
    assert t["status"] == "Download Complete" and t["isready"] is True
    assert t["size"] == 2 * MIB and t["physicalsize"] == len(content)
    assert copy_of(admin_cs, params["id"])["downloadState"] == "DOWNLOADED"
    image, = [f for f in zone.files(0) if f.suffix == ".qcow2"]
    assert hashlib.sha256(image.read_bytes()).hexdigest() == hashlib.sha256(content).hexdigest()
    assert (image.parent / "template.properties").is_file()

    again = post(params, images["iso"])  # a ticket uploads one file
    assert again.status_code == 403 and "already used" in again.json()["errortext"]
    assert image.read_bytes() == content


def test_user_uploads_an_iso(regular_user, make_zone, images, unique_name):
    zone = make_zone()
    params = upload_params(regular_user.cs, zone.id, unique_name, iso=True)
    assert post(params, images["iso"]).status_code == 200
    iso = listed(regular_user.cs, params["id"], iso=True)
    assert iso["status"] == "Successfully Installed" and iso["isready"] is True
    assert iso["account"] == regular_user.account["name"]
    assert iso["checksum"] == hashlib.sha512(images["iso"]).hexdigest()  # computed: none was declared


def test_wrong_checksum_ends_in_upload_error_with_nothing_stored(admin_cs, make_zone, images, unique_name):
    zone = make_zone()
    params = upload_params(admin_cs, zone.id, unique_name, checksum="{MD5}" + "0" * 32)
    answer = post(params, images["qcow2"])
    assert answer.status_code == 400 and "didn't match the given value" in answer.json()["errortext"]
    t = listed(admin_cs, params["id"])
    assert t["isready"] is False and "didn't match" in t["status"]
    assert copy_of(admin_cs, params["id"])["downloadState"] == "UPLOAD_ERROR"
    assert zone.files(0) == []


def test_declared_format_must_match_the_content(admin_cs, make_zone, unique_name):
    zone = make_zone()
    params = upload_params(admin_cs, zone.id, unique_name, format="QCOW2")
    answer = post(params, os.urandom(64 * 1024))  # raw bytes declared as QCOW2
    assert answer.status_code == 400
    t = listed(admin_cs, params["id"])
    assert t["isready"] is False and copy_of(admin_cs, params["id"])["downloadState"] == "UPLOAD_ERROR"
    assert t["status"] == answer.json()["errortext"]
    assert zone.files(0) == []


def _tampered(params: dict, what: str, other: dict) -> dict[str, str]:
    if what == "signature":
        forged = hashlib.sha256(b"forged").digest()
        return {"X-signature": base64.b64encode(forged).decode()}
    if what == "metadata":  # point the ticket at another template
        payload = json.loads(base64.b64decode(params["metadata"]))
        payload["template"] = other["id"]
        return {"X-metadata": base64.b64encode(json.dumps(payload).encode()).decode()}
    if what == "other-ticket":  # a genuine ticket, sent to the wrong URL
        return {"X-metadata": other["metadata"], "X-signature": other["signature"], "X-expires": other["expires"]}
    return {"X-expires": "2999-01-01T00:00:00.000Z"}  # what: expires, pushed into the future


@pytest.mark.parametrize("what", ["signature", "metadata", "other-ticket", "expires"])
def test_tampered_upload_is_refused_and_stores_nothing(admin_cs, make_zone, images, unique_name, what):
    zone = make_zone()
    params = upload_params(admin_cs, zone.id, unique_name)
    other = upload_params(admin_cs, zone.id, unique_name + "-other")
    answer = post(params, images["qcow2"], **_tampered(params, what, other))
    assert answer.status_code == 403 and answer.json()["errortext"]
    assert answer.headers["Access-Control-Allow-Origin"] == "*"  # so the browser can show why
    assert zone.files(0) == []
    assert copy_of(admin_cs, params["id"])["downloadState"] == "NOT_UPLOADED"
    assert copy_of(admin_cs, other["id"])["downloadState"] == "NOT_UPLOADED"
    # the genuine parameters still work
    assert post(params, images["qcow2"]).status_code == 200
    assert listed(admin_cs, params["id"])["isready"] is True


def test_expired_upload_url_is_refused(admin_cs, make_zone, images, unique_name):
    zone = make_zone()
    with setting(admin_cs, "upload.operation.timeout", "0"):
        params = upload_params(admin_cs, zone.id, unique_name)
    answer = post(params, images["qcow2"])
    assert answer.status_code == 403 and "expired" in answer.json()["errortext"]
    assert zone.files(0) == [] and copy_of(admin_cs, params["id"])["downloadState"] == "NOT_UPLOADED"


def test_a_body_that_is_not_a_multipart_form_does_not_use_up_the_ticket(admin_cs, make_zone, images, unique_name):
    zone = make_zone()
    params = upload_params(admin_cs, zone.id, unique_name)
    headers = {"X-signature": params["signature"], "X-metadata": params["metadata"], "X-expires": params["expires"]}
    answer = requests.post(params["postURL"], data=images["qcow2"], headers=headers, timeout=30)
    assert answer.status_code == 400 and "multipart/form-data" in answer.json()["errortext"]
    assert copy_of(admin_cs, params["id"])["downloadState"] == "NOT_UPLOADED"
    assert post(params, images["qcow2"]).status_code == 200


def test_upload_params_are_validated(admin_cs, make_zone, unique_name):
    zone = make_zone()
    error = api_error(admin_cs.getUploadParamsForTemplate, name=unique_name, format="QCOW2", hypervisor="KVM")
    assert error["errorcode"] == 431 and "zoneid" in error["errortext"]
    error = api_error(admin_cs.getUploadParamsForTemplate, name=unique_name, format="ISO", hypervisor="KVM",
                      zoneid=zone.id)
    assert error["errorcode"] == 431 and "Image format" in error["errortext"]
    error = api_error(admin_cs.getUploadParamsForTemplate, name=unique_name, format="QCOW2", hypervisor="KVM",
                      zoneid=zone.id, checksum="{CRC32}abcd")
    assert error["errorcode"] == 431 and "checksum" in error["errortext"].lower()
    assert admin_cs.listTemplates(templatefilter="self", name=unique_name) == {}  # nothing created
