"""uploadVolume, getUploadParamsForVolume (the browser POST), extractVolume, attaching an Uploaded
volume, and the upload monitor, through the real API of a real `secstor serve`, with real stores,
pools and HTTP servers."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from cs import CloudStackApiException

from secstor.services import volume_transfers as vt

from tests.templates.test_upload import post
from tests.volumes.conftest import GIB, MIB, raw_image

RESIZE_REFUSAL = "Volume should be in ready or allocated state before attempting a resize"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listed(cs, volume_id: str) -> dict:
    return cs.listVolumes(id=volume_id)["volume"][0]


def api_error(call, **params) -> tuple[int, str]:
    with pytest.raises(CloudStackApiException) as info:
        call(**params)
    error = info.value.error
    return error["errorcode"], error["errortext"]


def store_images(tmp_path: Path) -> list[Path]:
    """The volume images on this test's image stores."""
    return sorted(p for p in tmp_path.glob("store-*/volumes/*/*/*") if p.is_file())


def get(url: str, **headers: str) -> requests.Response:
    return requests.get(url, headers=headers, timeout=30)


def test_upload_volume_from_url_then_extract_resize_and_attach(fast_admin, pool_zone, serve, loopback_allowed,
                                                               ready_template, runtime, tmp_path):
    pz = pool_zone("RAW")
    content = raw_image()
    url = serve(content, "disk.raw")
    result = fast_admin.uploadVolume(zoneid=pz.zone_id, format="raw", name=f"up-{uuid.uuid4().hex[:6]}", url=url,
                                     checksum="{SHA-256}" + sha256(content))["volume"]
    volume = listed(fast_admin, result["id"])
    assert volume["state"] == "Uploaded" and volume["status"] == "Upload Complete"
    assert volume["size"] == len(content) and volume["format"] == "RAW" and "storageid" not in volume
    image, = store_images(tmp_path)
    assert image.suffix == ".raw" and sha256(image.read_bytes()) == sha256(content)

    code, text = api_error(fast_admin.resizeVolume, id=volume["id"], size=1)
    assert (code, text) == (431, RESIZE_REFUSAL)

    extract = fast_admin.extractVolume(id=volume["id"], mode="HTTP_DOWNLOAD", zoneid=pz.zone_id)["volume"]
    assert extract["id"] == volume["id"] and extract["extractMode"] == "HTTP_DOWNLOAD"
    assert extract["state"] == "DOWNLOAD_URL_CREATED" and extract["zoneid"] == pz.zone_id and extract["extractId"]
    whole = get(extract["url"])
    assert whole.status_code == 200 and sha256(whole.content) == sha256(content)

    # Attached, the Uploaded volume is copied (verified) to a pool of its zone and becomes Ready.
    template = ready_template(pz.zone_id, raw_image())
    vm = fast_admin.deployVirtualMachine(templateid=template["id"], zoneid=pz.zone_id)["virtualmachine"]
    attached = fast_admin.attachVolume(id=volume["id"], virtualmachineid=vm["id"])["volume"]
    assert attached["state"] == "Ready" and attached["virtualmachineid"] == vm["id"]
    assert pz.pool_file("RAW", attached["path"]).read_bytes() == content
    vt.remove_stale_copies(runtime)  # the image store copy is no longer needed
    assert store_images(tmp_path) == []


def test_upload_volume_with_a_wrong_checksum_ends_in_upload_error(fast_admin, pool_zone, serve, loopback_allowed,
                                                                  tmp_path):
    pz = pool_zone("RAW")
    content = raw_image()
    wrong = "0" * 64
    url = serve(content, "disk.raw")
    with pytest.raises(CloudStackApiException):
        fast_admin.uploadVolume(zoneid=pz.zone_id, format="RAW", name="bad-sum", url=url, checksum="{SHA-256}" + wrong)
    volume, = [v for v in fast_admin.listVolumes(zoneid=pz.zone_id)["volume"] if v["name"] == "bad-sum"]
    assert volume["state"] == "UploadError"
    assert f'didn\'t match the given value, "{{SHA-256}}{wrong}"' in volume["status"]
    assert store_images(tmp_path) == []


def test_browser_upload_of_a_volume(fast_admin, pool_zone, tmp_path):
    """Marvin's test_browse_volumes flow: getUploadParamsForVolume, a multipart POST, Uploaded."""
    pz = pool_zone("RAW")
    content = raw_image()
    params = fast_admin.getUploadParamsForVolume(zoneid=pz.zone_id, format="RAW", name="browser",
                                                 checksum=hashlib.md5(content).hexdigest())["getuploadparams"]
    assert params["postURL"] and params["metadata"] and params["signature"] and params["expires"].endswith("Z")
    assert listed(fast_admin, params["id"])["state"] == "NotUploaded"

    tampered = post(params, content, **{"X-signature": params["signature"][:-4] + "AAA="})
    assert tampered.status_code == 403
    assert listed(fast_admin, params["id"])["state"] == "NotUploaded" and store_images(tmp_path) == []

    answer = post(params, content)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"id": params["id"], "status": "Upload Complete"}
    volume = listed(fast_admin, params["id"])
    assert volume["state"] == "Uploaded" and volume["status"] == "Upload Complete" and volume["size"] == len(content)
    image, = store_images(tmp_path)
    assert image.read_bytes() == content
    assert api_error(fast_admin.resizeVolume, id=params["id"], size=1) == (431, RESIZE_REFUSAL)
    again = post(params, content)
    assert again.status_code == 403 and "already used" in again.json()["errortext"]


def test_browser_upload_of_the_wrong_format_is_refused_and_removed(fast_admin, pool_zone, images, tmp_path):
    pz = pool_zone("RAW")
    params = fast_admin.getUploadParamsForVolume(zoneid=pz.zone_id, format="QCOW2", name="not-qcow2")["getuploadparams"]
    answer = post(params, raw_image())
    assert answer.status_code == 400
    volume = listed(fast_admin, params["id"])
    assert volume["state"] == "UploadError" and volume["status"] == answer.json()["errortext"]
    assert store_images(tmp_path) == []


def test_upload_parameters_are_checked(fast_admin, pool_zone):
    pz = pool_zone("RAW")
    code, text = api_error(fast_admin.getUploadParamsForVolume, zoneid=pz.zone_id, format="VHD", name="x")
    assert code == 431 and "Supported formats are RAW, QCOW2" in text
    code, text = api_error(fast_admin.uploadVolume, zoneid=pz.zone_id, format="RAW", name="x",
                           url="file:///etc/passwd")
    assert code == 431 and "Invalid url" in text
    code, text = api_error(fast_admin.getUploadParamsForVolume, zoneid=pz.zone_id, format="RAW", name="x",
                           checksum="{CRC32}00")
    assert code == 431
    assert not [v for v in fast_admin.listVolumes(zoneid=pz.zone_id).get("volume", [])]


def test_extract_of_a_volume_on_primary_returns_its_bytes(fast_admin, pool_zone, ready_template, tmp_path):
    pz = pool_zone("RAW")
    volume = fast_admin.createVolume(name="extract-me", zoneid=pz.zone_id, size=1)["volume"]
    pattern = os.urandom(MIB)
    file = pz.pool_file("RAW", listed(fast_admin, volume["id"])["path"])
    with open(file, "r+b") as f:
        f.seek(5 * MIB)
        f.write(pattern)
    # Hash 1 GiB as streams, never holding it in memory: the expected bytes are 5 MiB of zeros,
    # the pattern, then zeros up to 1 GiB.
    expected = hashlib.sha256(bytes(5 * MIB) + pattern)
    zeros = bytes(MIB)
    for _ in range(GIB // MIB - 6):
        expected.update(zeros)

    extract = fast_admin.extractVolume(id=volume["id"], mode="HTTP_DOWNLOAD", zoneid=pz.zone_id)["volume"]
    assert extract["state"] == "DOWNLOAD_URL_CREATED" and extract["name"] == "extract-me"
    got = hashlib.sha256()
    with requests.get(extract["url"], stream=True, timeout=30) as whole:
        assert whole.status_code == 200 and int(whole.headers["Content-Length"]) == GIB
        for block in whole.iter_content(MIB):
            got.update(block)
    assert got.hexdigest() == expected.hexdigest()
    part = get(extract["url"], Range=f"bytes={5 * MIB}-{6 * MIB - 1}")
    assert part.status_code == 206 and part.content == pattern
    assert part.headers["Content-Range"] == f"bytes {5 * MIB}-{6 * MIB - 1}/{GIB}"

    code, text = api_error(fast_admin.extractVolume, id=volume["id"], mode="FTP_UPLOAD", zoneid=pz.zone_id)
    assert code == 431 and "HTTP_DOWNLOAD" in text

    template = ready_template(pz.zone_id, raw_image())
    vm = fast_admin.deployVirtualMachine(templateid=template["id"], zoneid=pz.zone_id)["virtualmachine"]
    fast_admin.attachVolume(id=volume["id"], virtualmachineid=vm["id"])
    code, text = api_error(fast_admin.extractVolume, id=volume["id"], mode="HTTP_DOWNLOAD", zoneid=pz.zone_id)
    assert code == 531 and "either detached or the VM should be in stopped state" in text


def test_monitor_abandons_uploads_never_started_and_removes_expired_copies(fast_admin, pool_zone, runtime,
                                                                          tmp_path):
    pz = pool_zone("RAW")
    volume = fast_admin.getUploadParamsForVolume(zoneid=pz.zone_id, format="RAW", name="never")["getuploadparams"]
    template = fast_admin.getUploadParamsForTemplate(zoneid=pz.zone_id, format="RAW", name="never", displaytext="n",
                                                     hypervisor="KVM")["getuploadparams"]
    ready = fast_admin.createVolume(name="extracted", zoneid=pz.zone_id, size=1)["volume"]
    url = fast_admin.extractVolume(id=ready["id"], mode="HTTP_DOWNLOAD", zoneid=pz.zone_id)["volume"]["url"]
    assert len(store_images(tmp_path)) == 1

    real_clock = runtime.clock
    runtime.clock = lambda: real_clock() + timedelta(days=1)  # past upload.operation.timeout and the URL's expiry
    try:
        assert vt.abandon_expired_uploads(runtime) >= 2
        assert vt.remove_stale_copies(runtime) >= 1
    finally:
        runtime.clock = real_clock
    abandoned = listed(fast_admin, volume["id"])
    assert abandoned["state"] == "UploadAbandoned" and "Upload operation timed out" in abandoned["status"]
    t = fast_admin.listTemplates(id=template["id"], templatefilter="all")["template"][0]
    assert t["downloaddetails"][0]["downloadState"] == "ABANDONED" and "Upload operation timed out" in t["status"]
    assert store_images(tmp_path) == [] and get(url).status_code == 404
    fast_admin.deleteVolume(id=volume["id"])  # an abandoned volume can be deleted
