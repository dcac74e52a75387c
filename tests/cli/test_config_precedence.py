"""Configuration precedence: defaults < TOML file < SECSTOR_* environment < command-line flags."""

import os
from pathlib import Path

import pytest

from secstor.config import load_config

pytestmark = pytest.mark.nodb


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("SECSTOR_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_file_then_env_then_flag(tmp_path, monkeypatch):
    conf = write(tmp_path / "secstor.toml", '[secstor]\nport = 9001\nhost = "0.0.0.0"\n')
    assert load_config(conf).port == 9001
    monkeypatch.setenv("SECSTOR_PORT", "9002")
    assert load_config(conf).port == 9002
    cfg = load_config(conf, port=9003)
    assert cfg.port == 9003
    assert cfg.host == "0.0.0.0"  # untouched keys still come from the file


def test_top_level_keys_and_nfs_mounts_table(tmp_path):
    conf = write(tmp_path / "c.toml", 'embedded-workers = 0\n[nfs_mounts]\n"nfs://filer/export" = "/mnt/filer"\n')
    cfg = load_config(conf)
    assert cfg.embedded_workers == 0
    assert cfg.nfs_mounts == {"nfs://filer/export": "/mnt/filer"}


def test_unknown_key_is_refused_naming_it(tmp_path):
    conf = write(tmp_path / "c.toml", "[secstor]\nprot = 80\n")
    with pytest.raises(ValueError, match="'prot'"):
        load_config(conf)


def test_home_defaults_and_its_config_file(tmp_path, monkeypatch):
    assert load_config().home == tmp_path / "user" / ".local" / "share" / "secstor"
    home = tmp_path / "home"
    home.mkdir()
    write(home / "secstor.toml", "port = 8443\n")
    monkeypatch.setenv("SECSTOR_HOME", str(home))
    cfg = load_config()
    assert cfg.home == home and cfg.port == 8443
    assert cfg.resolved_database_url == f"sqlite:///{home / 'secstor.db'}"
