"""extractTemplate / extractIso and the signed, expiring URLs secstor serves for them, from Local
and S3 stores, through the real API and a real `secstor serve`."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from urllib.parse import unquote

import pytest
import requests

from tests.stores.helpers import s3_client
from tests.support.moto import moto_server_process
from tests.templates.conftest import wait_for
from tests.templates.test_templates_api import api_error
from tests.templates.test_upload import post, setting, upload_params


def job_result(cs, job: dict) -> dict:
    """The result of a job that succeeds (polled more often than cs's fetch_result does)."""
    result = wait_for(lambda: (r := cs.queryAsyncJobResult(jobid=job["jobid"]))["jobstatus"] != 0 and r,
                      interval=0.05)
    assert result["jobstatus"] == 1, result
    return result["jobresult"]


def extracted(cs, template_id: str, *, iso: bool = False, **params) -> dict:
    job = (cs.extractIso if iso else cs.extractTemplate)(id=template_id, mode="HTTP_DOWNLOAD", **params)
    return job_result(cs, job)["iso" if iso else "template"]


def uploaded(cs, zone_id: str, name: str, content: bytes, **params) -> str:
    """The id of a template (or ISO, with iso=True) uploaded into the zone and Ready."""
    ticket = upload_params(cs, zone_id, name, **params)
    assert post(ticket, content).status_code == 200
    return ticket["id"]


def test_extract_url_serves_the_image_with_ranges(admin_cs, make_zone, images, unique_name):
    zone = make_zone()
    content = images["qcow2"]
    template_id = uploaded(admin_cs, zone.id, unique_name, content)
    answer = extracted(admin_cs, template_id, zoneid=zone.id)
    # what Marvin's test_04_extract checks, then more of ExtractResponse
    assert answer["id"] == template_id and answer["extractMode"] == "HTTP_DOWNLOAD" and answer["zoneid"] == zone.id
    assert answer["state"] == "DOWNLOAD_URL_CREATED" and answer["uploadpercentage"] == 100
    assert answer["name"] == unique_name and answer["zonename"] == zone.zone["name"]
    url = unquote(answer["url"])

    whole = requests.get(url, timeout=30)
    assert whole.status_code == 200
    assert hashlib.sha256(whole.content).hexdigest() == hashlib.sha256(content).hexdigest()
    assert whole.headers["Content-Length"] == str(len(content))
    assert whole.headers["Content-Type"] == "application/octet-stream"
    assert whole.headers["Content-Disposition"].startswith("attachment; filename=")
    assert whole.headers["Accept-Ranges"] == "bytes"
    etag = whole.headers["ETag"]
    assert etag == f'"{hashlib.sha256(content).hexdigest()}"'

    part = requests.get(url, headers={"Range": "bytes=100-1123"}, timeout=30)
    assert part.status_code == 206 and part.content == content[100:1124]
    assert part.headers["Content-Range"] == f"bytes 100-1123/{len(content)}"
    assert part.headers["Content-Length"] == "1024"
    tail = requests.get(url, headers={"Range": "bytes=-10"}, timeout=30)
    assert tail.status_code == 206 and tail.content == content[-10:]
    resumed = requests.get(url, headers={"Range": "bytes=100-", "If-Range": etag}, timeout=30)
    assert resumed.status_code == 206 and resumed.content == content[100:]
    changed = requests.get(url, headers={"Range": "bytes=100-", "If-Range": '"another-version"'}, timeout=30)
    assert changed.status_code == 200 and changed.content == content
    beyond = requests.get(url, headers={"Range": f"bytes={len(content)}-"}, timeout=30)
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(content)}"
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(content)) and head.content == b""


def test_extract_iso_of_a_user(regular_user, make_zone, images, unique_name):
    zone = make_zone()
    iso_id = uploaded(regular_user.cs, zone.id, unique_name, images["iso"], iso=True, isextractable=True)
    answer = extracted(regular_user.cs, iso_id, iso=True)
    assert answer["id"] == iso_id and answer["extractMode"] == "HTTP_DOWNLOAD"
    assert requests.get(unquote(answer["url"]), timeout=30).content == images["iso"]
    error = api_error(regular_user.cs.extractTemplate, id=iso_id, mode="HTTP_DOWNLOAD")
    assert error["errorcode"] == 431 and error["errortext"] == "Unsupported format, could not extract the template"


def test_extract_refusals(admin_cs, regular_user, make_zone, images, unique_name):
    zone = make_zone()
    admins = uploaded(admin_cs, zone.id, unique_name + "-a", images["qcow2"], isextractable=True, ispublic=True)
    users = uploaded(regular_user.cs, zone.id, unique_name + "-u", images["qcow2"])  # not extractable
    waiting = upload_params(admin_cs, zone.id, unique_name + "-w")["id"]  # never uploaded

    error = api_error(admin_cs.extractTemplate, id=admins, mode="FTP_UPLOAD", url="ftp://example.com/x")
    assert error["errorcode"] == 431 and "FTP_UPLOAD is not supported" in error["errortext"]
    error = api_error(admin_cs.extractTemplate, id=admins, mode="SCP")
    assert error["errorcode"] == 431 and "extract Mode" in error["errortext"]
    error = api_error(regular_user.cs.extractTemplate, id=users, mode="HTTP_DOWNLOAD")
    assert error["errorcode"] == 431
    assert error["errortext"] == f"Unable to extract template id={users} as it's not extractable"
    error = api_error(regular_user.cs.extractTemplate, id=admins, mode="HTTP_DOWNLOAD")  # not the owner
    assert error["errorcode"] == 531
    error = api_error(admin_cs.extractTemplate, id=waiting, mode="HTTP_DOWNLOAD")
    assert error["errorcode"] == 431 and error["errortext"] == "The template has not been downloaded"
    assert extracted(admin_cs, users)["id"] == users  # an admin may extract what is not extractable


def test_expired_or_forged_extract_url_is_refused(admin_cs, make_zone, images, unique_name):
    zone = make_zone()
    template_id = uploaded(admin_cs, zone.id, unique_name, images["qcow2"])
    with setting(admin_cs, "extract.url.expiration.interval", "0"):
        expired = unquote(extracted(admin_cs, template_id)["url"])
    answer = requests.get(expired, timeout=30)
    assert answer.status_code == 403 and "expired" in answer.json()["errortext"]

    valid = unquote(extracted(admin_cs, template_id)["url"])
    prefix, token, filename = valid.rsplit("/", 2)
    body, mac = token.split(".")
    forged = f"{prefix}/{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{mac}/{filename}"
    assert requests.get(forged, timeout=30).status_code == 403
    assert requests.get(valid, timeout=30).status_code == 200


# ---- S3 -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_server_process() as endpoint:
        yield endpoint


def test_upload_to_and_extract_from_an_s3_store(admin_cs, make_zone, images, s3_endpoint, unique_name):
    zone = make_zone(stores=0)
    bucket = f"b-{uuid.uuid4().hex}"
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    store = admin_cs.addImageStoreS3(accesskey="testing", secretkey="testing", endpoint=s3_endpoint, bucket=bucket,
                                     usehttps=False, name=unique_name, zoneid=zone.id)["imagestore"]
    content = images["qcow2"]
    template_id = uploaded(admin_cs, zone.id, unique_name, content)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any(k.endswith(".qcow2") for k in keys) and any(k.endswith("template.properties") for k in keys)

    url = unquote(extracted(admin_cs, template_id, zoneid=zone.id)["url"])
    whole = requests.get(url, timeout=30)
    assert whole.status_code == 200 and hashlib.sha256(whole.content).digest() == hashlib.sha256(content).digest()
    assert whole.headers["Content-Length"] == str(len(content))
    part = requests.get(url, headers={"Range": "bytes=4096-8191"}, timeout=30)
    assert part.status_code == 206 and part.content == content[4096:8192]

    # leave no store behind whose endpoint dies with this module
    assert job_result(admin_cs, admin_cs.deleteTemplate(id=template_id))["success"] is True
    admin_cs.deleteImageStore(id=store["id"])
