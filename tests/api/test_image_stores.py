"""Image stores through the real API with the cs client: Local, NFS (a stand-in mount(8) doing
real tmpfs mounts) and S3 (a moto server that checks credentials)."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from cs import CloudStackApiException
from sqlalchemy import select

from secstor.api.protocol import handle_api_call
from secstor.db.models import ImageStore, User
from secstor.security.signing import signed_params
from secstor.services.accounts import create_account, generate_keys
from tests.stores.helpers import s3_client, unmount
from tests.support.moto import moto_server_process
from tests.support.server import ServerProcess

NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def api_error(call, *args, **params) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        call(*args, **params)
    return err.value.error


def zone1_id(cs) -> str:
    return cs.listZones(name="zone1")["zone"][0]["id"]


def add_local(cs, path: Path, name: str, **params) -> dict:
    return cs.addImageStore(provider="Local", url=f"file://{path}", name=name, **params)["imagestore"]


def listed(cs, **params) -> list[dict]:
    return cs.listImageStores(**params).get("imagestore", [])


# ---- Local stores -------------------------------------------------------------------------

def test_add_local_store_creates_its_directory_and_is_listed(admin_cs, tmp_path, unique_name):
    path = tmp_path / "new" / "store"
    store = add_local(admin_cs, path, unique_name, zoneid=zone1_id(admin_cs))
    assert path.is_dir()
    assert {k: store[k] for k in ("name", "url", "protocol", "providername", "scope", "readonly", "zonename")} == {
        "name": unique_name, "url": f"file://{path}", "protocol": "file", "providername": "Local",
        "scope": "ZONE", "readonly": False, "zonename": "zone1"}
    assert store["disksizetotal"] > 0 and 0 <= store["disksizeused"] <= store["disksizetotal"]
    assert store["hasannotations"] is False
    assert listed(admin_cs, id=store["id"]) == [store]
    admin_cs.deleteImageStore(id=store["id"])


def test_store_without_zone_is_region_wide_and_name_defaults_to_url(admin_cs, tmp_path):
    url = f"file://{tmp_path / 'region'}"
    store = admin_cs.addImageStore(provider="local", url=url)["imagestore"]
    try:
        assert store["scope"] == "REGION" and "zoneid" not in store
        assert store["name"] == url and store["providername"] == "Local"
    finally:
        admin_cs.deleteImageStore(id=store["id"])


@pytest.mark.parametrize("params,param,text", [
    ({"provider": "Swift", "url": "file:///tmp/x"}, "provider", "Invalid image store provider Swift"),
    ({"url": "file:///tmp/x"}, "provider", "missing parameter provider"),
    ({"provider": "Local"}, "url", "url is required"),
    ({"provider": "Local", "url": "http://host/path"}, "url", "file:///absolute/path"),
    ({"provider": "Local", "url": "file://relative/path"}, "url", "file:///absolute/path"),
    ({"provider": "Local", "url": "file:///srv/../etc"}, "url", ".."),
    ({"provider": "NFS", "url": "nfs://host-without-export"}, "url", "no export path"),
    ({"provider": "NFS", "url": "file:///tmp/x"}, "url", "nfs://"),
    ({"provider": "Local", "url": "file:///tmp/x", "zoneid": str(uuid.uuid4())}, "zoneid", "zone"),
    ({"provider": "Local", "url": "file:///tmp/x", "zoneid": "not-a-uuid"}, "zoneid", "zoneid"),
])
def test_bad_add_is_431_naming_the_parameter_and_saves_nothing(admin_cs, unique_name, params, param, text):
    error = api_error(admin_cs.addImageStore, name=unique_name, **params)
    assert error["errorcode"] == 431 and error["cserrorcode"] == 4350
    assert text in error["errortext"] and param in error["errortext"]
    assert listed(admin_cs, name=unique_name) == []


def test_unusable_local_path_is_refused_with_the_reason(admin_cs, tmp_path, unique_name):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    error = api_error(admin_cs.addImageStore, provider="Local", url=f"file://{blocker}/store", name=unique_name)
    assert error["errorcode"] == 431
    assert str(blocker) in error["errortext"] and "url" in error["errortext"]
    assert listed(admin_cs, name=unique_name) == []


def test_duplicate_name_and_duplicate_url_are_refused(admin_cs, tmp_path, unique_name):
    store = add_local(admin_cs, tmp_path / "one", unique_name)
    error = api_error(admin_cs.addImageStore, provider="Local", url=f"file://{tmp_path / 'two'}", name=unique_name)
    assert error["errorcode"] == 431 and f"name {unique_name} already exists" in error["errortext"]
    for same_place in (store["url"], store["url"] + "/", f"file://{tmp_path}//one/."):
        error = api_error(admin_cs.addImageStore, provider="Local", url=same_place, name=unique_name + "-2")
        assert error["errorcode"] == 431 and f"{unique_name} already uses url" in error["errortext"], same_place
    assert [s["id"] for s in listed(admin_cs, keyword=unique_name)] == [store["id"]]
    admin_cs.deleteImageStore(id=store["id"])


def test_read_only_toggle_is_visible_in_filtered_lists(admin_cs, tmp_path, unique_name):
    """The Marvin test_03 pattern: set read-only, find it among the read-only stores, revert."""
    store = add_local(admin_cs, tmp_path / "ro", unique_name)
    updated = admin_cs.updateImageStore(id=store["id"], readonly=True)["imagestore"]
    assert updated["readonly"] is True
    assert store["id"] in [s["id"] for s in listed(admin_cs, readonly=True)]
    assert store["id"] not in [s["id"] for s in listed(admin_cs, readonly=False)]
    admin_cs.updateImageStore(id=store["id"], readonly=False)
    assert store["id"] not in [s["id"] for s in listed(admin_cs, readonly=True)]
    assert listed(admin_cs, id=store["id"])[0]["readonly"] is False
    admin_cs.deleteImageStore(id=store["id"])


def test_response_keys_keep_cloudstacks_spelling(runtime, server, tmp_path, unique_name):
    keys = server.admin_keys

    def call(command: str, **params):
        return handle_api_call(runtime, signed_params(command, params, keys["apikey"], keys["secretkey"]))

    store = add_local(server.cs(), tmp_path / "key", unique_name)
    reply = call("updateImageStore", id=store["id"], readonly="false")
    assert reply.status == 200 and list(reply.body) == ["updateImageStoreresponse"]
    reply = call("addImageStoreS3", accesskey="a", secretkey="b", endpoint="127.0.0.1:9")
    assert reply.status == 431 and list(reply.body) == ["addImageStoreS3Response"]
    assert call("deleteImageStore", id=store["id"]).body == {"deleteimagestoreresponse": {"success": True}}


def test_paging_and_filters(admin_cs, tmp_path, unique_name):
    zone = zone1_id(admin_cs)
    stores = [add_local(admin_cs, tmp_path / f"p{i}", f"{unique_name}-{i}", zoneid=zone) for i in range(3)]
    first = admin_cs.listImageStores(keyword=unique_name, page=1, pagesize=2)
    second = admin_cs.listImageStores(keyword=unique_name, page=2, pagesize=2)
    assert first["count"] == second["count"] == 3
    assert [s["id"] for s in first["imagestore"] + second["imagestore"]] == [s["id"] for s in stores]
    assert admin_cs.listImageStores(keyword=unique_name, page=3, pagesize=2) == {"count": 3}
    assert [s["id"] for s in listed(admin_cs, name=f"{unique_name}-1")] == [stores[1]["id"]]
    for params in ({"provider": "LOCAL"}, {"protocol": "file"}, {"zoneid": zone}):
        assert {s["id"] for s in stores} <= {s["id"] for s in listed(admin_cs, **params)}, params
    assert listed(admin_cs, keyword=unique_name, provider="S3") == []
    assert listed(admin_cs, keyword=unique_name, protocol="nfs") == []
    assert listed(admin_cs, zoneid=str(uuid.uuid4())) == []
    assert api_error(admin_cs.listImageStores, pagesize=0)["errorcode"] == 431
    for s in stores:
        admin_cs.deleteImageStore(id=s["id"])


def test_update_rename_and_its_errors(admin_cs, tmp_path, unique_name):
    store = add_local(admin_cs, tmp_path / "u", unique_name)
    other = add_local(admin_cs, tmp_path / "v", unique_name + "-other")
    renamed = admin_cs.updateImageStore(id=store["id"], name=unique_name + "-renamed")["imagestore"]
    assert renamed["name"] == unique_name + "-renamed"
    cases = [
        ({"name": other["name"]}, "name", "already exists"),
        ({"capacitybytes": -5}, "capacitybytes", "capacitybytes"),
        ({"capacitybytes": "lots"}, "capacitybytes", "capacitybytes"),
        ({"accesskey": "AKIA"}, "accesskey", "only to S3 image stores"),
        ({"readonly": "maybe"}, "readonly", "readonly"),
    ]
    for params, _param, text in cases:
        error = api_error(admin_cs.updateImageStore, id=store["id"], **params)
        assert error["errorcode"] == 431 and text in error["errortext"], params
    assert api_error(admin_cs.updateImageStore, id=str(uuid.uuid4()), readonly=True)["errorcode"] == 431
    assert api_error(admin_cs.updateImageStore, readonly=True)["errorcode"] == 431
    assert listed(admin_cs, id=store["id"])[0]["name"] == unique_name + "-renamed"
    for s in (store, other):
        admin_cs.deleteImageStore(id=s["id"])


@pytest.mark.parametrize("key,kind", [
    ("template/tmpl/2/201/201-2-abc.qcow2", "templates"),
    ("snapshots/2/15/snap1.qcow2", "snapshots"),
    ("volumes/2/9/volume.qcow2", "volumes"),
])
def test_delete_refused_while_the_store_holds_data(admin_cs, tmp_path, unique_name, key, kind):
    path = tmp_path / "store"
    store = add_local(admin_cs, path, unique_name)
    (path / key).parent.mkdir(parents=True)
    (path / key).write_bytes(b"image")
    error = api_error(admin_cs.deleteImageStore, id=store["id"])
    assert error["errorcode"] == 431
    assert error["errortext"] == f"Cannot delete image store with active {kind} backup!"
    assert len(listed(admin_cs, id=store["id"])) == 1
    (path / key).unlink()
    assert admin_cs.deleteImageStore(id=store["id"]) == {"success": True}
    assert listed(admin_cs, id=store["id"]) == []
    assert api_error(admin_cs.deleteImageStore, id=store["id"])["errorcode"] == 431
    # The name of a deleted store is free again.
    again = add_local(admin_cs, path, unique_name)
    assert again["id"] != store["id"] and again["name"] == unique_name
    admin_cs.deleteImageStore(id=again["id"])


def test_a_store_whose_contents_cannot_be_listed_is_not_deleted(admin_cs, tmp_path, unique_name):
    parent = tmp_path / "parent"
    store = add_local(admin_cs, parent / "store", unique_name)
    shutil.rmtree(parent)
    parent.write_text("the store's directory is gone")
    error = api_error(admin_cs.deleteImageStore, id=store["id"])
    assert error["errorcode"] == 534 and "contents cannot be listed" in error["errortext"]
    assert str(parent / "store") in error["errortext"]
    assert len(listed(admin_cs, id=store["id"])) == 1
    parent.unlink()
    (parent / "store").mkdir(parents=True)
    assert admin_cs.deleteImageStore(id=store["id"]) == {"success": True}


def test_list_storage_providers(admin_cs):
    image = admin_cs.listStorageProviders(type="image")
    assert image["count"] == 3
    assert image["dataStoreProvider"] == [{"name": n, "type": "image"} for n in ("Local", "NFS", "S3")]
    assert admin_cs.listStorageProviders(type="primary")["dataStoreProvider"] == [{"name": "Local", "type": "primary"}]
    error = api_error(admin_cs.listStorageProviders, type="tape")
    assert error["errorcode"] == 431 and "type" in error["errortext"]
    assert "missing parameter type" in api_error(admin_cs.listStorageProviders)["errortext"]


def test_add_secondary_storage_is_always_nfs(admin_cs, tmp_path):
    error = api_error(admin_cs.addSecondaryStorage, url=f"file://{tmp_path}")
    assert error["errorcode"] == 431 and "nfs://" in error["errortext"]
    assert "missing parameter url" in api_error(admin_cs.addSecondaryStorage)["errortext"]


@pytest.fixture(scope="module")
def user_cs(runtime, server):
    """A cs client signed with the keys of a plain User account."""
    name = f"user-{uuid.uuid4().hex[:8]}"
    with runtime.session() as s:
        account = create_account(s, runtime, name=name, role="User", username=name, password=None)
        user = s.scalars(select(User).where(User.account_id == account.id)).one()
        key, secret = generate_keys(runtime, user)
    return server.cs(key=key, secret=secret)


@pytest.mark.parametrize("command,params", [
    ("addImageStore", {"provider": "Local", "url": "file:///tmp/user-store"}),
    ("addImageStoreS3", {"accesskey": "a", "secretkey": "b", "endpoint": "127.0.0.1:1", "bucket": "b"}),
    ("addSecondaryStorage", {"url": "nfs://host/export"}),
    ("listImageStores", {}),
    ("updateImageStore", {"id": str(uuid.uuid4()), "readonly": True}),
    ("deleteImageStore", {"id": str(uuid.uuid4())}),
    ("listStorageProviders", {"type": "image"}),
    ("listCapacity", {}),
    ("listAlerts", {}),
    ("archiveAlerts", {"type": 6}),
    ("deleteAlerts", {"type": 6}),
    ("runSecondaryStorageHealthCheck", {}),
])
def test_a_user_account_cannot_touch_image_stores(user_cs, admin_cs, command, params):
    before = admin_cs.listImageStores()["count"]
    error = api_error(getattr(user_cs, command), **params)
    assert error["errorcode"] == 432
    assert admin_cs.listImageStores()["count"] == before


# ---- NFS: a stand-in mount(8) that mounts a real tmpfs (or pretends to and mounts nothing) ----

NFS_OPTIONS = "vers=3,rsize=1048576,wsize=1048576,timeo=600,retrans=2,hard"


@pytest.fixture(scope="module")
def nfs_server(tmp_path_factory, runtime, db_url):
    """A second `secstor serve` on the session database whose mount command is a script: for
    host nfs.example it mounts a 32 MiB tmpfs on the target, for any other host it exits 0
    having mounted nothing (the classic silent failure). Every call is logged."""
    if os.geteuid() != 0:
        pytest.skip("mounting tmpfs needs root")
    bin_dir = tmp_path_factory.mktemp("fake-mount")
    log = bin_dir / "mount.log"
    script = bin_dir / "mount"
    script.write_text(
        "#!/bin/bash\n"
        f'printf "%s\\n" "$*" >> {log}\n'
        'case "${@: -2:1}" in\n'
        f'  nfs.example:*) exec {shutil.which("mount")} -t tmpfs -o size=32m tmpfs "${{@: -1}}" ;;\n'
        "esac\n"
        "exit 0\n")
    script.chmod(0o755)
    # Same home as the session server: same secret key, and the same mount root, so that the
    # other server's periodic scans find these mounts too.
    srv = ServerProcess(home=runtime.config.home, database_url=db_url,
                        env={"SECSTOR_MOUNT_COMMAND": str(script)}).start()
    srv.mount_log = log
    srv.mount_root = runtime.config.resolved_nfs_mount_root
    yield srv
    srv.stop()
    if srv.mount_root.exists():
        for child in srv.mount_root.iterdir():
            unmount(child)


def mount_calls(nfs_server, source: str) -> list[str]:
    return [line for line in nfs_server.mount_log.read_text().splitlines() if f" {source} " in line]


@NEEDS_ROOT
def test_nfs_store_is_mounted_with_the_documented_options_and_passes_health(nfs_server, unique_name):
    cs = nfs_server.cs()
    url = f"nfs://nfs.example/export/{unique_name}"
    store = cs.addImageStore(provider="NFS", url=url, name=unique_name, zoneid=zone1_id(cs))["imagestore"]
    try:
        assert (store["providername"], store["protocol"], store["url"]) == ("NFS", "nfs", url)
        mount_call = mount_calls(nfs_server, f"nfs.example:/export/{unique_name}")[0]
        target = mount_call.split()[-1]
        assert mount_call == f"-t nfs -o {NFS_OPTIONS} nfs.example:/export/{unique_name} {target}"
        assert Path(target).parent == nfs_server.mount_root
        assert store["disksizetotal"] == 32 << 20  # the tmpfs standing in for the export
        checks = cs.runSecondaryStorageHealthCheck(id=store["id"])["healthcheck"]
        by_name = {c["checkname"]: c for c in checks if c["checktype"] == "store"}
        assert set(by_name) == {"mounted", "writable", "free space"}
        assert all(c["success"] for c in checks), checks
        assert target in by_name["mounted"]["details"]
    finally:
        cs.deleteImageStore(id=store["id"])
    assert not os.path.ismount(target)  # deleting the store released its mount


@NEEDS_ROOT
def test_add_secondary_storage_mounts_an_nfs_store(nfs_server, unique_name):
    cs = nfs_server.cs()
    url = f"nfs://nfs.example/export/{unique_name}"
    store = cs.addSecondaryStorage(url=url, zoneid=zone1_id(cs))["secondarystorage"]
    try:
        assert (store["providername"], store["name"], store["scope"]) == ("NFS", url, "ZONE")
    finally:
        cs.deleteImageStore(id=store["id"])


@NEEDS_ROOT
def test_nfs_store_whose_mount_did_not_happen_is_refused_and_nothing_is_written(nfs_server, unique_name):
    cs = nfs_server.cs()
    url = f"nfs://unmounted.example/export/{unique_name}"
    error = api_error(cs.addImageStore, provider="NFS", url=url, name=unique_name)
    assert error["errorcode"] == 431
    [mount_call] = mount_calls(nfs_server, f"unmounted.example:/export/{unique_name}")
    target = mount_call.split()[-1]
    assert f"{target} is not a mounted filesystem" in error["errortext"]
    assert "nothing was saved" in error["errortext"]
    assert [p for p in Path(target).rglob("*")] == []  # no probe object written into our own disk
    assert listed(cs, name=unique_name) == []


# ---- S3 against a moto server that checks credentials --------------------------------------

class S3Account:
    """An IAM user on the moto server with one or more access keys."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str):
        self.endpoint = endpoint
        self.access_key, self.secret_key = access_key, secret_key

    def iam(self):
        return boto3.session.Session().client("iam", endpoint_url=f"http://{self.endpoint}", region_name="us-east-1",
                                              aws_access_key_id=self.access_key,
                                              aws_secret_access_key=self.secret_key)

    def new_bucket(self) -> str:
        name = f"b-{uuid.uuid4().hex}"
        s3_client(self.endpoint, self.access_key, self.secret_key).create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="module")
def s3_account():
    with moto_server_process() as endpoint:
        iam = boto3.session.Session().client("iam", endpoint_url=f"http://{endpoint}", region_name="us-east-1",
                                             aws_access_key_id="testing", aws_secret_access_key="testing")
        iam.create_user(UserName="secstor")
        iam.put_user_policy(UserName="secstor", PolicyName="everything", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="secstor")["AccessKey"]
        # From here on moto checks the signature and the access key of every request.
        request = urllib.request.Request(f"http://{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request, timeout=10).close()
        yield S3Account(endpoint, key["AccessKeyId"], key["SecretAccessKey"])


def s3_params(cs, account: S3Account, bucket: str, name: str) -> dict:
    return dict(accesskey=account.access_key, secretkey=account.secret_key, endpoint=account.endpoint,
                bucket=bucket, usehttps=False, name=name, zoneid=zone1_id(cs))


def add_s3(cs, account: S3Account, bucket: str, name: str) -> dict:
    return cs.addImageStoreS3(**s3_params(cs, account, bucket, name))["imagestore"]


def health_of(cs, store_id: str) -> list[dict]:
    return [c for c in cs.runSecondaryStorageHealthCheck(id=store_id)["healthcheck"] if c["checktype"] == "store"]


def test_s3_store_secrets_are_encrypted_and_never_returned(admin_cs, runtime, s3_account, unique_name):
    bucket = s3_account.new_bucket()
    response = admin_cs.addImageStoreS3(accesskey=s3_account.access_key, secretkey=s3_account.secret_key,
                                        endpoint=s3_account.endpoint, bucket=bucket, usehttps=False,
                                        s3signer="AWSS3V4SignerType", connectiontimeout=5000, maxerrorretry=1,
                                        name=unique_name)
    store = response["imagestore"]
    try:
        assert (store["providername"], store["protocol"], store["scope"]) == ("S3", "http", "REGION")
        assert store["url"] == f"http://{s3_account.endpoint}/{bucket}"
        assert store["disksizeused"] == 0 and store["disksizetotal"] == 1 << 50  # no quota configured
        listing = json.dumps(admin_cs.listImageStores())
        for text in (json.dumps(response), listing):
            assert s3_account.access_key not in text and s3_account.secret_key not in text
        with runtime.session() as s:
            row = s.scalars(select(ImageStore).where(ImageStore.uuid == store["id"])).one()
        for column in (row.secrets_enc, row.details_json, row.url):
            assert s3_account.access_key not in column and s3_account.secret_key not in column
        assert runtime.secrets.decrypt_json(row.secrets_enc) == {
            "accesskey": s3_account.access_key, "secretkey": s3_account.secret_key}
        assert json.loads(row.details_json)["connectiontimeout"] == "5000"
        assert all(c["success"] for c in health_of(admin_cs, store["id"]))
    finally:
        admin_cs.deleteImageStore(id=store["id"])


def test_s3_store_is_refused_before_saving_when_the_probe_fails(admin_cs, s3_account, unique_name):
    bucket = s3_account.new_bucket()
    cases = [
        ({"accesskey": "AKIANOSUCHKEY0000000"}, "accesskey", "InvalidAccessKeyId"),
        ({"secretkey": "wrong-secret"}, "secretkey", "SignatureDoesNotMatch"),
        ({"bucket": "no-such-bucket-here"}, "bucket", "no-such-bucket-here"),
        ({"s3signer": "MagicSigner"}, "s3signer", "S3SignerType"),
        ({"endpoint": "127.0.0.1:notaport"}, "endpoint", "endpoint"),
    ]
    for params, param, cause in cases:
        error = api_error(admin_cs.addImageStoreS3, **{**s3_params(admin_cs, s3_account, bucket, unique_name), **params})
        assert error["errorcode"] == 431, params
        assert cause in error["errortext"] and param in error["errortext"], error
        assert s3_account.secret_key not in error["errortext"]
    assert listed(admin_cs, name=unique_name) == []
    assert "missing parameter bucket" in api_error(
        admin_cs.addImageStoreS3, accesskey="a", secretkey="b", endpoint="e")["errortext"]


def test_s3_credentials_change_live_and_wrong_ones_are_refused(admin_cs, s3_account, unique_name):
    store = add_s3(admin_cs, s3_account, s3_account.new_bucket(), unique_name)
    try:
        error = api_error(admin_cs.updateImageStore, id=store["id"], secretkey="not-the-secret",
                          name=unique_name + "-renamed", readonly=True)
        assert error["errorcode"] == 431 and "SignatureDoesNotMatch" in error["errortext"]
        assert "secretkey" in error["errortext"]
        unchanged = admin_cs.listImageStores(id=store["id"])["imagestore"][0]
        assert (unchanged["name"], unchanged["readonly"]) == (unique_name, False), "a refused update changes nothing"
        assert all(c["success"] for c in health_of(admin_cs, store["id"])), "the old credentials stay in effect"

        iam = s3_account.iam()
        new_key = iam.create_access_key(UserName="secstor")["AccessKey"]
        updated = admin_cs.updateImageStore(id=store["id"], accesskey=new_key["AccessKeyId"],
                                            secretkey=new_key["SecretAccessKey"], sockettimeout=20000)["imagestore"]
        assert updated["id"] == store["id"]
        assert new_key["SecretAccessKey"] not in json.dumps(updated)
        # Revoke the old key: the running server must already use the new one, no restart.
        iam.delete_access_key(UserName="secstor", AccessKeyId=s3_account.access_key)
        s3_account.access_key, s3_account.secret_key = new_key["AccessKeyId"], new_key["SecretAccessKey"]
        assert all(c["success"] for c in health_of(admin_cs, store["id"]))
    finally:
        admin_cs.deleteImageStore(id=store["id"])


def test_s3_tuning_extensions_are_validated_saved_and_applied_live(admin_cs, runtime, s3_account, unique_name):
    store = admin_cs.addImageStoreS3(**s3_params(admin_cs, s3_account, s3_account.new_bucket(), unique_name),
                                     checksummode="WHEN_SUPPORTED", partsize=8 << 20, uploadconcurrency=2)["imagestore"]
    try:
        driver = runtime.drivers.for_store(_store_row(runtime, store["id"]))
        assert (driver.config.checksum_mode, driver.config.part_size, driver.config.max_concurrency) == \
            ("when_supported", 8 << 20, 2)
        error = api_error(admin_cs.updateImageStore, id=store["id"], partsize=1024)
        assert error["errorcode"] == 431 and "partsize" in error["errortext"]
        error = api_error(admin_cs.updateImageStore, id=store["id"], checksummode="sometimes")
        assert error["errorcode"] == 431 and "checksummode" in error["errortext"]
        admin_cs.updateImageStore(id=store["id"], checksummode="when_required", singleputmax=0)
        driver = runtime.drivers.for_store(_store_row(runtime, store["id"]))
        assert (driver.config.checksum_mode, driver.config.single_put_max, driver.config.part_size) == \
            ("when_required", 0, 8 << 20), "the update applies without a restart and keeps the other details"
    finally:
        admin_cs.deleteImageStore(id=store["id"])


def _store_row(runtime, uuid_: str) -> ImageStore:
    with runtime.session() as s:
        row = s.scalars(select(ImageStore).where(ImageStore.uuid == uuid_)).one()
        s.expunge(row)
        return row


def test_s3_store_holding_a_template_cannot_be_deleted(admin_cs, s3_account, unique_name):
    bucket = s3_account.new_bucket()
    store = add_s3(admin_cs, s3_account, bucket, unique_name)
    client = s3_client(s3_account.endpoint, s3_account.access_key, s3_account.secret_key)
    client.put_object(Bucket=bucket, Key="template/tmpl/2/201/t.qcow2", Body=b"qcow")
    error = api_error(admin_cs.deleteImageStore, id=store["id"])
    assert error["errortext"] == "Cannot delete image store with active templates backup!"
    client.delete_object(Bucket=bucket, Key="template/tmpl/2/201/t.qcow2")
    assert admin_cs.deleteImageStore(id=store["id"]) == {"success": True}
