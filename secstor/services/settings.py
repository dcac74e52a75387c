"""Reading and changing settings: registered defaults overlaid with operators' values."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from secstor.db.engine import READ_ONLY
from secstor.db.models import ConfigurationValue
from secstor.domain.settings import Setting, all_settings, get_setting

if TYPE_CHECKING:
    from secstor.runtime import Runtime

# Values are cached briefly: settings are read on hot paths, and another process's change
# must still be seen within a second or two (settings are "dynamic").
_CACHE_SECONDS = 1.0


class SettingsService:
    def __init__(self, runtime: "Runtime"):
        self._rt = runtime
        self._lock = threading.Lock()
        self._cache: dict[str, str] = {}
        self._loaded_at = 0.0

    def _values(self) -> dict[str, str]:
        with self._lock:
            if time.monotonic() - self._loaded_at > _CACHE_SECONDS:
                # Read-only: settings are read in the middle of requests that already write.
                read_only = self._rt.engine.execution_options(**{READ_ONLY: True})
                with self._rt.session_factory(bind=read_only) as s:
                    self._cache = {r.name: r.value for r in s.scalars(select(ConfigurationValue))}
                self._loaded_at = time.monotonic()
            return self._cache

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = 0.0

    def raw(self, name: str) -> str:
        setting = get_setting(name)
        return self._values().get(name, setting.default)

    def get(self, name: str) -> Any:
        setting = get_setting(name)
        value = self._values().get(name)
        if value is None:
            return setting.parse(setting.default)
        try:
            return setting.parse(value)
        except Exception:
            # A value stored by an older version that no longer validates: fall back safely.
            return setting.parse(setting.default)

    def rows(self) -> list[tuple[Setting, str]]:
        values = self._values()
        return [(s, values.get(s.name, s.default)) for s in all_settings()]

    def set(self, session: Session, name: str, value: str) -> Setting:
        setting = get_setting(name)
        setting.parse(value)
        row = session.get(ConfigurationValue, name)
        if row is None:
            session.add(ConfigurationValue(name=name, value=value, updated=self._rt.now()))
        else:
            row.value, row.updated = value, self._rt.now()
        session.flush()
        self.invalidate()
        return setting

    def reset(self, session: Session, name: str) -> Setting:
        setting = get_setting(name)
        row = session.get(ConfigurationValue, name)
        if row is not None:
            session.delete(row)
            session.flush()
        self.invalidate()
        return setting
