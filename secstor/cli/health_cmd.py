"""`secstor health`: check every image store as an SSVM health check would."""

from __future__ import annotations

from secstor.cli.common import ConfigOpt, DbOpt, HomeOpt


def health(home: HomeOpt = None, config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Check stores (placeholder)."""
    raise SystemExit("not implemented yet")
