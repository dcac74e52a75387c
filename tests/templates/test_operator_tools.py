"""`secstor template seed|register|list|delete`, run as an operator runs them."""

from __future__ import annotations

import hashlib
import os

import pytest
from typer.testing import CliRunner

from secstor.cli.main import app
from tests.templates.test_templates_api import listed

pytestmark = pytest.mark.usefixtures("loopback_allowed")


@pytest.fixture
def secstor(server, db_url):
    """Run `secstor template ...` against the test installation (its home and database)."""
    runner = CliRunner()
    clean = {name: None for name in os.environ if name.startswith("SECSTOR_")}

    def invoke(*args: str, api: bool = False):
        where = ["--api-url", server.api_url] if api else ["--database-url", db_url]
        return runner.invoke(app, ["template", *args, "--home", str(server.home), *where], env=clean)

    return invoke


def _seeded(admin_cs, name: str) -> dict:
    return admin_cs.listTemplates(templatefilter="all", name=name)["template"][0]


def test_seed_from_a_file_is_ready_verified_and_idempotent(secstor, admin_cs, make_zone, images, unique_name,
                                                           tmp_path):
    zone = make_zone()
    content = images["qcow2"]
    image = tmp_path / "systemvm.qcow2"
    image.write_bytes(content)
    checksum = "{SHA-256}" + hashlib.sha256(content).hexdigest()
    args = ["seed", "--file", str(image), "--name", unique_name, "--format", "QCOW2", "--hypervisor", "KVM",
            "--checksum", checksum, "--store", zone.stores[0]["name"]]
    result = secstor(*args)
    assert result.exit_code == 0, result.output
    assert "Installed system template" in result.stdout
    t = _seeded(admin_cs, unique_name)
    assert t["templatetype"] == "SYSTEM" and t["ispublic"] is True and t["account"] == "admin"
    assert t["isready"] is True and t["status"] == "Download Complete" and t["size"] == 2 << 20
    stored, = [f for f in zone.files(0) if f.suffix == ".qcow2"]
    assert stored.read_bytes() == content
    assert "checksum=" + checksum in (stored.parent / "template.properties").read_text()

    again = secstor(*args)
    assert again.exit_code == 0 and "already installed" in again.stdout
    assert len(admin_cs.listTemplates(templatefilter="all", name=unique_name)["template"]) == 1
    admin_cs.deleteTemplate(id=t["id"], fetch_result=True)


def test_seed_with_a_wrong_checksum_stores_nothing_and_leaves_no_rows(secstor, admin_cs, make_zone, images,
                                                                      unique_name, tmp_path):
    zone = make_zone()
    image = tmp_path / "systemvm.qcow2"
    image.write_bytes(images["qcow2"])
    wrong = "{SHA-256}" + hashlib.sha256(b"another image").hexdigest()
    result = secstor("seed", "--file", str(image), "--name", unique_name, "--checksum", wrong, "--zone",
                     zone.zone["name"])
    assert result.exit_code == 1
    assert "didn't match the given value" in result.stderr
    assert zone.files(0) == []
    assert admin_cs.listTemplates(templatefilter="all", name=unique_name) == {}


def test_seed_from_a_url_then_register_list_and_delete_through_the_cli(secstor, admin_cs, make_zone, serve, images,
                                                                       unique_name):
    zone = make_zone()
    content = images["qcow2"]
    result = secstor("seed", "--url", serve(content), "--name", unique_name, "--store", zone.stores[0]["id"])
    assert result.exit_code == 0, result.output
    seeded = _seeded(admin_cs, unique_name)
    assert seeded["isready"] is True and seeded["checksum"] == hashlib.sha512(content).hexdigest()

    name = unique_name + "-reg"
    result = secstor("register", "--name", name, "--url", serve(content), "--zone", zone.zone["name"], api=True)
    assert result.exit_code == 0, result.output
    registered = admin_cs.listTemplates(templatefilter="self", name=name)["template"][0]
    assert registered["isready"] is True  # register waited for the download
    listing = secstor("list", "--name", name, api=True)
    assert listing.exit_code == 0 and registered["id"] in listing.stdout and "Download Complete" in listing.stdout

    assert secstor("delete", registered["id"], api=True).exit_code == 0
    assert listed(admin_cs, registered["id"]) is None
    assert secstor("delete", seeded["id"], api=True).exit_code == 0
    assert zone.files(0) == []


def test_register_of_a_missing_image_exits_1_with_the_reason(secstor, make_zone, web, unique_name, admin_cs):
    zone = make_zone()
    result = secstor("register", "--name", unique_name, "--url", web.url(f"/missing/{unique_name}.qcow2"),
                     "--zone", zone.id, api=True)
    assert result.exit_code == 1 and "HTTP 404 Not Found" in result.stderr
    admin_cs.deleteTemplate(id=admin_cs.listTemplates(templatefilter="self", name=unique_name)["template"][0]["id"],
                            fetch_result=True)
