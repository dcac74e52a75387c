"""The Runtime: everything a process (API server or worker) shares, built once at start."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Callable, Iterator

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from secstor.config import Config
from secstor.db.engine import make_engine, make_session_factory
from secstor.security.secrets import SecretBox

log = logging.getLogger("secstor")


def system_clock() -> datetime:
    return datetime.now(timezone.utc)


class Runtime:
    def __init__(self, config: Config, *, engine: Engine | None = None, secrets: SecretBox | None = None,
                 clock: Callable[[], datetime] = system_clock, create_key: bool = False):
        self.config = config
        self.engine = engine or make_engine(config.resolved_database_url)
        self.session_factory: sessionmaker[Session] = make_session_factory(self.engine)
        self.secrets = secrets or SecretBox.from_file(config.resolved_secret_key_file, create=create_key)
        self.clock = clock
        # Built lazily to keep imports one-way (services import the runtime, not vice versa).
        from secstor.services.settings import SettingsService
        from secstor.services.stores import StoreDrivers

        self.settings = SettingsService(self)
        self.drivers = StoreDrivers(self)

    def now(self) -> datetime:
        return self.clock()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on any exception."""
        s = self.session_factory()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def close(self) -> None:
        self.drivers.close()
        self.engine.dispose()
