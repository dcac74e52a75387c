"""`secstor api` against a real `secstor serve` process."""

import json
import os

import httpx
import pytest
from typer.testing import CliRunner

from secstor.cli.main import app
from secstor.security.signing import signed_params


@pytest.fixture
def run(server):
    """Run `secstor api ...` with the server's home (its admin keys) and a clean environment."""
    runner = CliRunner()
    clean = {name: None for name in os.environ if name.startswith("SECSTOR_")}

    def invoke(*args: str, env: dict[str, str] | None = None):
        return runner.invoke(app, ["api", *args, "--home", str(server.home)],
                             env={**clean, "SECSTOR_PORT": str(server.port), **(env or {})})

    return invoke


def test_list_prints_a_table_with_a_row_per_item(run):
    # No --url: the endpoint comes from the configuration (SECSTOR_PORT), the keys from the home.
    result = run("listZones", "name=zone1")
    assert result.exit_code == 0, result.output
    header, row = [line for line in result.stdout.splitlines() if "│" in line or "┃" in line][:2]
    assert "name" in header and "allocationstate" in header
    assert "zone1" in row and "Enabled" in row


def test_single_object_prints_key_value_rows(run, unique_name):
    result = run("createZone", f"name={unique_name}", "description=[b]not markup[/b]")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any("name" in line and unique_name in line for line in lines)
    assert any("[b]not markup[/b]" in line for line in lines)


def test_json_output_is_the_raw_response_body(run, server):
    result = run("listZones", "name=zone1", "--output", "json")
    assert result.exit_code == 0, result.output
    keys = server.admin_keys
    direct = httpx.get(server.api_url, params=signed_params("listZones", {"name": "zone1"}, keys["apikey"],
                                                             keys["secretkey"])).json()
    assert json.loads(result.stdout) == direct
    assert direct["listzonesresponse"]["zone"][0]["name"] == "zone1"


def test_bad_parameter_prints_the_431_error_and_exits_1(run):
    result = run("listZones", "id=not-a-uuid")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error 431: ")
    assert "parameter id" in result.stderr
    assert result.stdout == ""


def test_unknown_command_exits_1_with_432(run):
    result = run("listNothingAtAll")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error 432: The given command does not exist")


def test_keys_from_environment_win_over_the_home(run, server):
    result = run("listZones", env={"SECSTOR_API_KEY": server.admin_keys["apikey"], "SECSTOR_SECRET_KEY": "wrong"})
    assert result.exit_code == 1
    assert result.stderr.startswith("Error 401: unable to verify user credentials")


def test_malformed_parameter_is_a_usage_error(run):
    result = run("listZones", "zone1")
    assert result.exit_code == 2
    assert "expected key=value" in result.output


def test_help_explains_with_examples():
    result = CliRunner().invoke(app, ["api", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.stdout
    assert "secstor api updateImageStore id=STORE_ID readonly=true" in result.stdout
