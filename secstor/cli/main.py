"""The `secstor` command line. Each sub-command lives in its own module of this package."""

from __future__ import annotations

import typer

from secstor.cli import api_cmd, db_cmd, health_cmd, serve_cmd, supervise_cmd, template_cmd, worker_cmd

app = typer.Typer(
    help="secstor: secondary storage for IaaS clouds, speaking the CloudStack API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve_cmd.serve)
app.command("worker")(worker_cmd.worker)
app.command("supervise")(supervise_cmd.supervise)
app.command("health")(health_cmd.health)
app.command("api", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(api_cmd.api)
app.add_typer(db_cmd.app, name="db")
app.add_typer(template_cmd.app, name="template")

if __name__ == "__main__":  # pragma: no cover
    app()
