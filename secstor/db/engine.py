"""Engine and session factory for SQLite (embedded), PostgreSQL and MariaDB/MySQL."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def normalise_url(url: str) -> str:
    """Pick the drivers we ship for bare ``postgresql://`` and ``mysql://`` URLs."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    elif u.drivername in ("mysql", "mariadb"):
        u = u.set(drivername=f"{u.drivername}+pymysql")
        if "charset" not in u.query:
            u = u.update_query_dict({"charset": "utf8mb4"})
    return u.render_as_string(hide_password=False)


# Execution option for read-only transactions (see the SQLite begin listener below).
READ_ONLY = "secstor_read_only"


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            # WAL lets the API read while a worker writes; busy_timeout waits out the writer
            # instead of failing with "database is locked".
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        # A deferred transaction that reads and then writes fails at once with "database is
        # locked" when another connection wrote meanwhile (SQLite cannot upgrade its snapshot),
        # and busy_timeout does not help. BEGIN IMMEDIATE takes the write lock up front, so
        # writers queue on busy_timeout instead. Transactions here are short by design.
        # Read-only work done while the same thread holds a write transaction (the settings cache
        # reloading in the middle of a request) opts out with read_only=True: with IMMEDIATE it
        # would wait for its own caller until busy_timeout. WAL readers never block.
        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - trivial
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

        engine.dialect._secstor_sqlite = True  # type: ignore[attr-defined]
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True, pool_recycle=3600)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
