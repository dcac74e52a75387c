"""`secstor worker`: a process that runs jobs (downloads, copies, migrations, backups)."""

from __future__ import annotations

from secstor.cli.common import ConfigOpt, DbOpt, HomeOpt


def worker(home: HomeOpt = None, config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Run jobs from the shared database until stopped (placeholder: see secstor.jobs.worker)."""
    raise SystemExit("not implemented yet")
