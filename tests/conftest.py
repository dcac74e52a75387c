"""Shared fixtures. Expensive ones (database, server, moto) are session-scoped and shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.databases import fresh_database, test_db_kind


def pytest_collection_modifyitems(config, items):
    # Tests that touch no SQL database run once, in the SQLite pass.
    if test_db_kind() != "sqlite":
        skip = [i for i in items if i.get_closest_marker("nodb")]
        if skip:
            config.hook.pytest_deselected(items=skip)
            items[:] = [i for i in items if not i.get_closest_marker("nodb")]


@pytest.fixture(scope="session")
def db_url(tmp_path_factory) -> str:
    """One empty database (of the kind SECSTOR_TEST_DB names) for the whole session."""
    with fresh_database(tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="session")
def runtime(tmp_path_factory, db_url):
    """An in-process Runtime on the session database, schema migrated, home bootstrapped."""
    from secstor.config import Config
    from secstor.services.bootstrap import bootstrap, open_runtime

    home = tmp_path_factory.mktemp("rt-home")
    rt = open_runtime(Config(home=home, database_url=db_url))
    bootstrap(rt)
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory, db_url, runtime):
    """A real `secstor serve` process on the session database (shares the runtime's home,
    so both use the same secret key file)."""
    from tests.support.server import ServerProcess

    srv = ServerProcess(home=runtime.config.home, database_url=db_url).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def admin_cs(server):
    return server.cs()


@pytest.fixture
def unique_name(request) -> str:
    import uuid

    return f"{request.node.name[:30]}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def regular_user(server, admin_cs):
    """An account of role User with its own API keys (`.cs` signs with them)."""
    from tests.support.api import create_api_user

    return create_api_user(server, admin_cs)
