"""`secstor health`: check the database and every image store as an SSVM health check would."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from secstor.cli.common import ConfigOpt, DbOpt, HomeOpt, build_config

_STYLES = {"PASS": "bold green", "WARN": "bold yellow", "FAIL": "bold red"}


def health(
    home: HomeOpt = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    store: Annotated[Optional[str], typer.Option("--store", help="Check only this image store (name or id); "
                                                 "the database, clock and DNS checks always run.")] = None,
) -> None:
    """Check the database (reachable, clock skew), DNS of secstorage.download.hosts.check, and each
    image store: reachable (NFS: mounted on a separate file system), writable (write, read back and
    delete a probe object) and free space under secondary.storage.capacity.threshold.

    Prints PASS, WARN or FAIL with the reason for every check; exits with 1 if any check failed.
    """
    from secstor.domain.errors import InvalidParameter
    from secstor.runtime import Runtime
    from secstor.services.health import run_health_checks

    console = Console()
    cfg = build_config(home, config, database_url)
    try:
        # No create_key and no migration: a health check must not change the installation.
        runtime = Runtime(cfg)
    except (OSError, ValueError) as exc:
        console.print(Text("FAIL", style=_STYLES["FAIL"]), Text(f"cannot start: {exc}"))
        raise typer.Exit(1) from None
    try:
        checks = run_health_checks(runtime, store_ref=store)
    except InvalidParameter as exc:
        console.print(Text(f"error: {exc.message}", style="red"))
        raise typer.Exit(2) from None
    finally:
        runtime.close()
    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("STATUS", "CHECK", "STORE", "DETAIL"):
        table.add_column(column, overflow="fold")
    for c in checks:
        table.add_row(Text(c.status, style=_STYLES[c.status]), c.name, c.store_name or "-", c.detail)
    console.print(table)
    failed = [c for c in checks if not c.ok]
    if failed:
        console.print(Text(f"{len(failed)} of {len(checks)} checks failed", style=_STYLES["FAIL"]))
        raise typer.Exit(1)
    console.print(Text(f"all {len(checks)} checks passed", style=_STYLES["PASS"]))
