"""`secstor db ...`: schema management."""

from __future__ import annotations

import typer

from secstor.cli.common import ConfigOpt, DbOpt, HomeOpt, build_config, setup_logging

app = typer.Typer(help="Database schema management.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(home: HomeOpt = None, config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Create or upgrade the schema to the newest revision (Alembic). Safe to run repeatedly."""
    from secstor.db.migrate import current_revision
    from secstor.services.bootstrap import open_runtime

    cfg = build_config(home, config, database_url)
    setup_logging(cfg.log_level)
    runtime = open_runtime(cfg)
    typer.echo(f"schema at revision {current_revision(runtime.engine)}")
    runtime.close()
