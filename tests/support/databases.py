"""Real database servers for tests: one fresh database per test session.

SECSTOR_TEST_DB chooses the server: sqlite (default), postgresql or mysql (MariaDB).
SECSTOR_TEST_PG_URL / SECSTOR_TEST_MYSQL_URL point at the admin connection.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get("SECSTOR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_ADMIN_URL = os.environ.get("SECSTOR_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def test_db_kind() -> str:
    kind = os.environ.get("SECSTOR_TEST_DB", "sqlite").lower()
    if kind not in ("sqlite", "postgresql", "mysql"):
        raise RuntimeError(f"SECSTOR_TEST_DB must be sqlite, postgresql or mysql, not {kind}")
    return kind


@contextmanager
def fresh_database(tmp_dir: Path, kind: str | None = None) -> Iterator[str]:
    """Create an empty database, yield its URL, drop it afterwards."""
    kind = kind or test_db_kind()
    if kind == "sqlite":
        yield f"sqlite:///{tmp_dir / f'test-{uuid.uuid4().hex[:8]}.db'}"
        return
    name = f"secstor_t_{uuid.uuid4().hex[:12]}"
    admin_url = PG_ADMIN_URL if kind == "postgresql" else MYSQL_ADMIN_URL
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if kind == "postgresql":
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        else:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()
