"""`secstor serve` on an empty home creates what the README promises, once."""

import json
import sqlite3
import stat

import httpx
import pytest

from tests.support.server import ServerProcess

# The embedded default is SQLite whatever SECSTOR_TEST_DB says, so this runs once.
pytestmark = pytest.mark.nodb


def query(db, sql):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_first_start_creates_the_home_and_a_restart_keeps_it(tmp_path):
    home = tmp_path / "home"
    server = ServerProcess(home=home, database_url="").start()
    try:
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        keys_file = home / "admin-keys.json"
        assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
        keys = json.loads(keys_file.read_text())
        assert set(keys) == {"apikey", "secretkey"}
        first_log = server.log_path.read_text()
        assert keys["secretkey"] in first_log  # printed once, at creation

        cs = server.cs()
        assert cs.listZones(name="zone1")["count"] == 1
        store = cs.listImageStores(name="default")["imagestore"][0]
        assert (store["providername"], store["url"]) == ("Local", f"file://{home / 'stores' / 'default'}")
        assert (home / "stores" / "default").is_dir() and (home / "primary").is_dir()

        db = home / "secstor.db"
        assert query(db, "PRAGMA journal_mode") == [("wal",)]
        assert query(db, "SELECT path FROM storage_pools") == [(str(home / "primary"),)]
    finally:
        server.stop()

    again = ServerProcess(home=home, database_url="").start()
    try:
        second_log = again.log_path.read_text()[len(first_log):]
        assert keys["secretkey"] not in second_log and "Created the admin account" not in second_log
        assert json.loads(keys_file.read_text()) == keys
        assert query(db, "SELECT count(*) FROM accounts WHERE role = 'Admin'") == [(1,)]
        assert again.cs().listZones(name="zone1")["count"] == 1
    finally:
        again.stop()
