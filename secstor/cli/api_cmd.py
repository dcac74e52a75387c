"""`secstor api COMMAND key=value ...`: a built-in cloudmonkey."""

from __future__ import annotations

import typer


def api(ctx: typer.Context, command: str) -> None:
    """Call an API command (placeholder)."""
    raise SystemExit("not implemented yet")
