"""A region store on any S3-compatible endpoint, through the real API and `secstor serve`.

The endpoint is a moto server of this module's own that checks every request's SigV4 signature
(IAM keys) and records each request it receives, so the tests assert what went over the wire:
path-style and virtual-host addressing, the checksum headers of both checksum modes, Content-MD5
on DeleteObjects, credentials changed live, and multipart uploads that fail or whose writer is
killed leaving no parts behind. While a test runs its store is the only writable region store
(the package's is made read-only), so registrations land on it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from cs import CloudStackApiException

from secstor.services.template_sync import clean_stale_writes
from tests.region.test_staging_pull import extract, ready_everywhere
from tests.stores.helpers import s3_client
from tests.support.httpserver import Fault
from tests.support.moto import moto_server_process
from tests.templates.conftest import wait_for
from tests.templates.test_templates_api import settled

pytestmark = pytest.mark.usefixtures("loopback_allowed")

MiB = 1 << 20
PART = 5 * MiB  # S3's (and moto's) smallest part: multipart uploads of a few parts stay cheap
ALLOW_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
VIRTUAL_HOST = "s3.test"  # resolves nowhere: virtual-host requests reach moto through the store's proxy


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str]  # lower-case names

    @property
    def checksum_headers(self) -> set[str]:
        return {h for h in self.headers if h.startswith("x-amz-checksum-")}


@dataclass
class Endpoint:
    address: str  # 127.0.0.1:PORT
    access_key: str
    secret_key: str
    recording: Path
    s3: object  # boto3 clients of the test's own, built once (a client costs a fraction of a second)
    iam: object

    @property
    def port(self) -> str:
        return self.address.rsplit(":", 1)[1]

    def new_bucket(self) -> str:
        name = f"compat-{uuid.uuid4().hex[:12]}"
        self.s3.create_bucket(Bucket=name)
        return name

    def uploads(self, bucket: str) -> list[dict]:
        return self.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])

    def keys(self, bucket: str) -> list[str]:
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=bucket).get("Contents", [])]

    def _recorder(self, action: str) -> None:
        urllib.request.urlopen(urllib.request.Request(f"http://{self.address}/moto-api/recorder/{action}",
                                                      data=b"", method="POST"), timeout=10).close()

    @contextmanager
    def recorded(self) -> Iterator[list[Request]]:
        """The requests moto receives inside the block (the list is filled when it ends)."""
        self._recorder("reset-recording")
        self._recorder("start-recording")
        requests: list[Request] = []
        try:
            yield requests
        finally:
            self._recorder("stop-recording")
            requests.extend(_parse_recording(self.recording.read_text()))


def _parse_recording(text: str) -> list[Request]:
    # Concurrent requests (parallel parts) may append their JSON records back to back.
    decoder, i, out = json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        entry, i = decoder.raw_decode(text, i)
        out.append(Request(entry["method"], entry["url"], {k.lower(): v for k, v in entry["headers"].items()}))


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory) -> Iterator[Endpoint]:
    recording = tmp_path_factory.mktemp("moto-recording") / "requests.jsonl"
    with moto_server_process(env={"MOTO_RECORDER_FILEPATH": str(recording)}) as address:
        iam = boto3.session.Session().client("iam", endpoint_url=f"http://{address}", region_name="us-east-1",
                                             aws_access_key_id="testing", aws_secret_access_key="testing")
        iam.create_user(UserName="secstor")
        iam.put_user_policy(UserName="secstor", PolicyName="everything", PolicyDocument=ALLOW_ALL)
        key = iam.create_access_key(UserName="secstor")["AccessKey"]
        # From here on moto checks the signature and the access key of every request.
        urllib.request.urlopen(urllib.request.Request(f"http://{address}/moto-api/reset-auth", data=b"0",
                                                      method="POST", headers={"Content-Type": "text/plain"}),
                               timeout=10).close()
        session = boto3.session.Session()
        iam = session.client("iam", endpoint_url=f"http://{address}", region_name="us-east-1",
                             aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
        s3 = s3_client(address, key["AccessKeyId"], key["SecretAccessKey"])
        yield Endpoint(address, key["AccessKeyId"], key["SecretAccessKey"], recording, s3, iam)


@pytest.fixture(scope="module")
def cs(server):
    """The admin's client, polling async jobs every 0.1 s (admin_cs waits 2 s between polls)."""
    return server.cs(poll_interval=0.1, job_timeout=60)


@pytest.fixture(scope="module")
def big_qcow2(tmp_path_factory) -> bytes:
    """A valid qcow2 of ~11 MiB of incompressible data: three 5 MiB parts."""
    d = tmp_path_factory.mktemp("big-qcow2")
    (d / "disk.raw").write_bytes(os.urandom(11 * MiB))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "disk.raw", "disk.qcow2"], cwd=d, check=True,
                   capture_output=True)
    return (d / "disk.qcow2").read_bytes()


def store_details(endpoint: Endpoint, bucket: str, *, virtual_host: bool = False, **extra: str) -> dict[str, str]:
    details = {"accesskey": endpoint.access_key, "secretkey": endpoint.secret_key, "bucket": bucket,
               "usehttps": "false", "partsize": str(PART), "singleputmax": str(PART), **extra}
    if virtual_host:
        # bucket.s3.test does not resolve here; the proxy (moto itself) gets the absolute URL.
        details.update(endpoint=f"{VIRTUAL_HOST}:{endpoint.port}", pathstyle="false",
                       proxy=f"http://{endpoint.address}")
    else:
        details.update(endpoint=endpoint.address, pathstyle="true")
    return details


def as_details_map(details: dict[str, str]) -> dict[str, str]:
    params = {}
    for i, (key, value) in enumerate(details.items()):
        params[f"details[{i}].key"], params[f"details[{i}].value"] = key, value
    return params


@contextmanager
def sole_region_store(cs, region, name: str, details: dict[str, str]) -> Iterator[dict]:
    """A region-wide S3 store added with addImageStore (CloudStack's generic form, which carries
    any S3 detail), the only writable one while the block runs."""
    store = cs.addImageStore(provider="S3", name=name, **as_details_map(details))["imagestore"]
    assert store["scope"] == "REGION"
    was_readonly = cs.listImageStores(id=region.store["id"])["imagestore"][0]["readonly"]
    cs.updateImageStore(id=region.store["id"], readonly=True)
    try:
        yield store
    finally:
        cs.updateImageStore(id=region.store["id"], readonly=was_readonly)
        cs.deleteImageStore(id=store["id"])


@pytest.mark.parametrize("virtual_host,checksum_mode", [(False, "when_required"), (True, "when_supported")],
                         ids=["path-style,when_required", "virtual-host,when_supported"])
def test_round_trip_through_the_region_store(cs, region, endpoint, serve, big_qcow2, unique_name, virtual_host,
                                             checksum_mode):
    bucket = endpoint.new_bucket()
    details = store_details(endpoint, bucket, virtual_host=virtual_host, checksummode=checksum_mode)
    with sole_region_store(cs, region, unique_name, details):
        with endpoint.recorded() as requests:
            t = ready_everywhere(cs, region, serve(big_qcow2, "disk.qcow2"), unique_name)
            # Zone 2 pulls the region copy into its staging store, verified against its checksum.
            assert extract(cs, t["id"], region.zones[1]) == big_qcow2
        [image] = [k for k in endpoint.keys(bucket) if k.endswith(".qcow2")]
        head = endpoint.s3.head_object(Bucket=bucket, Key=image, ChecksumMode="ENABLED")
        with endpoint.recorded() as deletes:
            cs.deleteTemplate(id=t["id"], fetch_result=True)
        assert [k for k in endpoint.keys(bucket) if k.startswith("template/")] == []

    host = f"{bucket}.{VIRTUAL_HOST}:{endpoint.port}" if virtual_host else endpoint.address
    ours = [r for r in requests if r.headers.get("host") == host and "/moto-api/" not in r.url]
    image_path = f"/{image}" if virtual_host else f"/{bucket}/{image}"
    image_requests = [r for r in ours if r.url.split("?")[0].endswith(image_path)]
    assert image_requests and all(r.headers["authorization"].startswith("AWS4-HMAC-SHA256 ") for r in ours)
    parts = [r for r in image_requests if r.method == "PUT" and "uploadId=" in r.url]
    assert len(parts) == 3  # 11 MiB in 5 MiB parts
    assert any(r.method == "GET" for r in image_requests)  # read back by zone 2's pull
    writes = [r for r in ours if r.method == "PUT"]
    if checksum_mode == "when_supported":
        # The SDK default since boto3 1.36: a CRC32 with every upload, kept by the server.
        assert all(r.checksum_headers == {"x-amz-checksum-crc32"} for r in writes)
        assert "ChecksumCRC32" in head
    else:
        # What Ceph RGW and MinIO need: no checksum headers unless the operation requires one.
        assert all(not r.checksum_headers for r in writes)
        assert "ChecksumCRC32" not in head
    [bulk_delete] = [r for r in deletes if r.method == "POST" and r.url.endswith("?delete")]
    assert "content-md5" in bulk_delete.headers  # refused without it by older Ceph RGW and MinIO


def test_virtual_host_name_that_does_not_resolve_is_refused_before_saving(cs, endpoint, unique_name):
    """Without the proxy bucket.s3.test resolves nowhere: the probe says so and nothing is saved."""
    bucket = endpoint.new_bucket()
    details = store_details(endpoint, bucket, virtual_host=True)
    del details["proxy"]
    with pytest.raises(CloudStackApiException) as err:
        cs.addImageStore(provider="S3", name=unique_name, **as_details_map({**details, "maxerrorretry": "0"}))
    assert err.value.error["errorcode"] == 431 and f"{bucket}.{VIRTUAL_HOST}" in err.value.error["errortext"]
    assert cs.listImageStores(name=unique_name).get("imagestore", []) == []


def test_failed_upload_aborts_its_multipart_upload(cs, region, endpoint, web, unique_name):
    bucket = endpoint.new_bucket()
    content = os.urandom(16 * MiB)
    # The source drops the connection after 12 MiB and cannot resume: the download fails for good.
    url = web.add(f"/{uuid.uuid4().hex[:12]}/disk.qcow2", content, fault=Fault(drop_after=12 * MiB, times=None),
                  ignore_range=True)
    with sole_region_store(cs, region, unique_name, store_details(endpoint, bucket)):
        with endpoint.recorded() as requests:
            t = cs.registerTemplate(name=unique_name, displaytext=unique_name, format="QCOW2", hypervisor="KVM",
                                    url=url, zoneid=region.zones[0]["id"])["template"][0]
            failed = settled(cs, t["id"])
        assert failed["isready"] is False and "ignored the request to resume" in failed["status"]
        parts = [r for r in requests if r.method == "PUT" and "uploadId=" in r.url]
        assert len(parts) >= 2  # it failed mid-multipart, with parts on the server
        assert any(r.method == "DELETE" and "uploadId=" in r.url for r in requests)  # AbortMultipartUpload
        assert endpoint.uploads(bucket) == []
        assert endpoint.keys(bucket) == []
        cs.deleteTemplate(id=t["id"], fetch_result=True)


KILLED_WRITER = """
import json, sys, time
from secstor.stores import driver_for
details = json.loads(sys.stdin.readline())
writer = driver_for("S3", "", details, mounter=None).open_writer("template/tmpl/2/999/killed.qcow2")
writer.write(bytes(12 << 20))  # two 5 MiB parts go out; the rest waits in the buffer
print("writing", flush=True)
time.sleep(600)
"""


def test_writer_killed_mid_upload_leaves_parts_the_cleanup_task_aborts(cs, runtime, region, endpoint,
                                                                       unique_name):
    bucket = endpoint.new_bucket()
    details = store_details(endpoint, bucket)
    with sole_region_store(cs, region, unique_name, details):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        try:
            proc.stdin.write(json.dumps(details) + "\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == "writing\n"

            def parts_landed():
                uploads = endpoint.uploads(bucket)
                if not uploads:
                    return None
                listed = endpoint.s3.list_parts(Bucket=bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"])
                return len(listed.get("Parts", [])) == 2

            wait_for(parts_landed)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert len(endpoint.uploads(bucket)) == 1  # a dead writer aborts nothing
        assert clean_stale_writes(runtime) >= 1
        assert endpoint.uploads(bucket) == [] and endpoint.keys(bucket) == []


def test_credentials_changed_live_serve_the_next_transfer(cs, region, endpoint, serve, images, unique_name):
    bucket = endpoint.new_bucket()
    iam, user = endpoint.iam, f"rotating-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="everything", PolicyDocument=ALLOW_ALL)
    old_key = iam.create_access_key(UserName=user)["AccessKey"]
    details = {**store_details(endpoint, bucket), "accesskey": old_key["AccessKeyId"],
               "secretkey": old_key["SecretAccessKey"]}
    try:
        with sole_region_store(cs, region, unique_name, details) as store:
            with pytest.raises(CloudStackApiException) as err:
                cs.updateImageStore(id=store["id"], secretkey="not-the-secret")
            error = err.value.error
            assert error["errorcode"] == 431 and "SignatureDoesNotMatch" in error["errortext"]
            assert "secretkey" in error["errortext"]

            new_key = iam.create_access_key(UserName=user)["AccessKey"]
            cs.updateImageStore(id=store["id"], accesskey=new_key["AccessKeyId"],
                                      secretkey=new_key["SecretAccessKey"])
            # The old key stops working at once; the running server must already sign with the new one.
            iam.delete_access_key(UserName=user, AccessKeyId=old_key["AccessKeyId"])
            with endpoint.recorded() as requests:
                t = ready_everywhere(cs, region, serve(images["qcow2"]), unique_name)
                assert extract(cs, t["id"], region.zones[1]) == images["qcow2"]
            signed = [r.headers["authorization"] for r in requests if "authorization" in r.headers]
            assert signed and all(f"Credential={new_key['AccessKeyId']}/" in a for a in signed)
            cs.deleteTemplate(id=t["id"], fetch_result=True)
            assert [k for k in endpoint.keys(bucket) if k.startswith("template/")] == []
    finally:
        for key in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
            iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
        iam.delete_user_policy(UserName=user, PolicyName="everything")
        iam.delete_user(UserName=user)
