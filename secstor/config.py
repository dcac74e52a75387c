"""Process configuration: a TOML file, overridden by SECSTOR_* environment variables,
overridden by command-line flags.

Configuration is what a process needs before it can reach the database (where it listens,
which database, where its home and key files are). Everything an operator tunes at run time
is a *setting* in the database instead (see ``secstor.domain.settings``).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


def default_home() -> Path:
    """``$SECSTOR_HOME``, else ``$XDG_DATA_HOME/secstor`` (``~/.local/share/secstor``)."""
    if env := os.environ.get("SECSTOR_HOME"):
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "secstor"


@dataclass(frozen=True)
class Config:
    """Documented in docs/configuration.md; keep both in step."""

    home: Path = field(default_factory=default_home)
    host: str = "127.0.0.1"
    port: int = 8080
    # Empty means the embedded SQLite database at <home>/secstor.db.
    database_url: str = ""
    # Fernet key that encrypts secrets (S3 keys, API secret keys) at rest. Kept outside the
    # database on purpose: a stolen database dump alone reveals no secret.
    secret_key_file: str = ""
    # Base URL that clients use to reach this service (for upload and extract URLs).
    public_url: str = ""
    # Where workers mount NFS exports, and NFS URLs an operator has mounted by hand.
    nfs_mount_root: str = ""
    nfs_mounts: dict[str, str] = field(default_factory=dict)
    mount_command: str = "mount"
    # Workers embedded in `serve` (0 = API only; run `secstor worker` elsewhere).
    embedded_workers: int = 1
    worker_id: str = ""
    log_level: str = "INFO"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'secstor.db'}"

    @property
    def resolved_secret_key_file(self) -> Path:
        return Path(self.secret_key_file) if self.secret_key_file else self.home / "secret.key"

    @property
    def resolved_public_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def resolved_nfs_mount_root(self) -> Path:
        return Path(self.nfs_mount_root) if self.nfs_mount_root else self.home / "mnt"


_ENV_PREFIX = "SECSTOR_"


def _coerce(name: str, raw: Any, current: Any) -> Any:
    if isinstance(current, bool):
        if isinstance(raw, bool):
            return raw
        return str(raw).strip().lower() in ("1", "true", "yes", "on")
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float):
        return float(raw)
    if isinstance(current, Path):
        return Path(raw)
    if isinstance(current, dict):
        if not isinstance(raw, dict):
            raise ValueError(f"config key {name!r} must be a table")
        return {str(k): str(v) for k, v in raw.items()}
    return str(raw)


def load_config(path: Path | None = None, **overrides: Any) -> Config:
    """Build the configuration: defaults < TOML file < environment < explicit overrides.

    The file is ``path``, else ``$SECSTOR_CONFIG``, else ``<home>/secstor.toml`` if present.
    """
    cfg = Config()
    known = {f.name for f in fields(Config)}
    values: dict[str, Any] = {}

    home_override = overrides.get("home") or os.environ.get("SECSTOR_HOME")
    home = Path(home_override) if home_override else cfg.home
    candidate = path or (Path(os.environ["SECSTOR_CONFIG"]) if os.environ.get("SECSTOR_CONFIG") else None)
    if candidate is None and (home / "secstor.toml").is_file():
        candidate = home / "secstor.toml"
    if candidate is not None:
        data = tomllib.loads(Path(candidate).read_text())
        section = data.get("secstor", data)
        for key, raw in section.items():
            key = key.replace("-", "_")
            if key not in known:
                raise ValueError(f"unknown configuration key {key!r} in {candidate}")
            values[key] = raw

    for f in fields(Config):
        env = os.environ.get(_ENV_PREFIX + f.name.upper())
        if env is not None and f.name != "nfs_mounts":
            values[f.name] = env

    for key, raw in overrides.items():
        if raw is not None:
            values[key] = raw

    coerced = {k: _coerce(k, v, getattr(cfg, k)) for k, v in values.items()}
    return replace(cfg, **coerced)
