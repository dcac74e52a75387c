"""The committed reference docs match the code, so they never drift."""

import json
import os
import subprocess
import sys
from dataclasses import fields

import pytest

from secstor.config import Config
from secstor.tools.gendocs import DOCS_DIR, generated_docs

pytestmark = pytest.mark.nodb

# Tables in the TOML file only: load_config reads no environment variable for them.
FILE_ONLY_KEYS = {"nfs_mounts"}


@pytest.mark.parametrize("name", ["settings.md", "api.md"])
def test_generated_docs_are_current(name):
    path = DOCS_DIR / name
    committed = path.read_text() if path.exists() else ""
    assert committed == generated_docs()[name], (
        f"docs/{name} is out of date: run `python -m secstor.tools.gendocs` and commit the result")


def test_generator_output_does_not_depend_on_hash_seed():
    script = "import json; from secstor.tools.gendocs import generated_docs; print(json.dumps(generated_docs()))"
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": "12345"},
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == generated_docs()


def test_configuration_doc_names_every_config_key():
    text = (DOCS_DIR / "configuration.md").read_text()
    missing = [f.name for f in fields(Config) if f"`{f.name}`" not in text
               or (f.name not in FILE_ONLY_KEYS and f"SECSTOR_{f.name.upper()}" not in text)]
    assert not missing, f"docs/configuration.md does not document config keys {missing}"
