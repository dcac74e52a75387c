"""Options and helpers shared by the sub-commands."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from secstor.config import Config, load_config

HomeOpt = Annotated[Optional[Path], typer.Option("--home", help="secstor home directory (database, keys, default "
                                                  "stores). Default: $SECSTOR_HOME or ~/.local/share/secstor.")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="TOML configuration file (see "
                                                    "docs/configuration.md). Default: $SECSTOR_CONFIG or <home>/secstor.toml.")]
DbOpt = Annotated[Optional[str], typer.Option("--database-url", envvar="SECSTOR_DATABASE_URL",
                                              help="SQLAlchemy URL: sqlite:///path, postgresql://..., mysql://... "
                                                   "Default: SQLite in the home.")]


def build_config(home: Path | None, config: Path | None, database_url: str | None, **extra) -> Config:
    return load_config(config, home=home, database_url=database_url, **extra)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


def child_worker_args(cfg: Config, config: Path | None) -> list[str]:
    """Options that give a `secstor worker` started by this process the same home, configuration
    and database."""
    args = ["--home", str(cfg.home), "--database-url", cfg.resolved_database_url]
    return args + (["--config", str(config)] if config else [])
