"""Templates and ISOs registered from ftp:// and https:// URLs, end to end through the API: a real
FTP server (pyftpdlib) and a real TLS server on loopback, whose private CA the service trusts only
once secstorage.download.ca.bundle names it."""

from __future__ import annotations

import hashlib
import time

import pytest

from tests.movers.protocol_servers import FTP_PASSWORD, FTP_USER
from tests.movers.protocol_servers import certificates, ftp, https  # noqa: F401 (fixtures)
from tests.templates.test_templates_api import delete_and_wait, listed, register, settled

pytestmark = pytest.mark.usefixtures("loopback_allowed")  # the servers are on 127.0.0.1

CA_BUNDLE = "secstorage.download.ca.bundle"


def _set(cs, name: str, value: str) -> None:
    cs.updateConfiguration(name=name, value=value)
    time.sleep(1.2)  # the server's settings cache holds values for a second


def test_template_from_an_ftp_url_is_downloaded_and_verified(admin_cs, make_zone, ftp, images, unique_name):
    zone = make_zone()
    content = images["qcow2"]
    url = ftp.add(f"{unique_name}.qcow2", content)
    t = settled(admin_cs, register(admin_cs, zone, url, unique_name,
                                   checksum="{SHA-256}" + hashlib.sha256(content).hexdigest())["id"])
    assert t["status"] == "Download Complete" and t["isready"] is True
    image, = [f for f in zone.files(0) if f.suffix == ".qcow2"]
    assert image.read_bytes() == content
    delete_and_wait(admin_cs, t["id"])


def test_iso_from_an_ftp_url_with_credentials_is_installed(admin_cs, make_zone, ftp, images, unique_name):
    zone = make_zone()
    name = f"{unique_name}.iso"
    ftp.add(name, images["iso"])
    url = ftp.url(name, f"{FTP_USER}:{FTP_PASSWORD}")
    iso = admin_cs.registerIso(name=unique_name, displaytext=unique_name, url=url, zoneid=zone.id,
                               bootable=True)["iso"][0]
    done = settled(admin_cs, iso["id"], iso=True)
    assert done["status"] == "Successfully Installed" and done["isready"] is True
    assert done["checksum"] == hashlib.sha512(images["iso"]).hexdigest()  # computed: none was given
    admin_cs.deleteIso(id=iso["id"], fetch_result=True)


def test_https_needs_its_private_ca_in_the_ca_bundle_setting(admin_cs, make_zone, https, certificates, images,
                                                             unique_name):
    zone = make_zone()
    content = images["qcow2"]
    url = https.add(f"/{unique_name}/disk.qcow2", content)
    t = settled(admin_cs, register(admin_cs, zone, url, unique_name)["id"])
    assert t["downloaddetails"][0]["downloadState"] == "DOWNLOAD_ERROR"
    assert t["status"].startswith("the TLS certificate of 127.0.0.1 is not trusted") and CA_BUNDLE in t["status"]
    assert zone.files(0) == [] and len(https.requests(f"/{unique_name}/disk.qcow2")) == 0  # no request sent

    before = admin_cs.listConfigurations(name=CA_BUNDLE)["configuration"][0].get("value", "")
    _set(admin_cs, CA_BUNDLE, str(certificates.ca))
    try:
        admin_cs.resetTemplateDownload(id=t["id"])
        t = settled(admin_cs, t["id"])
    finally:
        admin_cs.updateConfiguration(name=CA_BUNDLE, value=before)  # no other test downloads over https
    assert t["status"] == "Download Complete" and t["isready"] is True
    assert listed(admin_cs, t["id"])["checksum"] == hashlib.sha512(content).hexdigest()
    image, = [f for f in zone.files(0) if f.suffix == ".qcow2"]
    assert image.read_bytes() == content
    delete_and_wait(admin_cs, t["id"])
