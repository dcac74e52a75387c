"""`secstor serve`: the API, plus embedded workers and periodic tasks, in one process."""

from __future__ import annotations

import gc
import json
import logging
from typing import Annotated, Optional

import typer

from secstor.cli.common import ConfigOpt, DbOpt, HomeOpt, build_config, child_worker_args, setup_logging

log = logging.getLogger("secstor.serve")


def serve(
    home: HomeOpt = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    host: Annotated[Optional[str], typer.Option(help="Address to listen on. Default 127.0.0.1.")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to listen on. Default 8080.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Job workers embedded in this process "
                                                   "(0: API only, run `secstor worker` elsewhere). Default 1.")] = None,
) -> None:
    """Run the CloudStack-compatible API service.

    On first start with an empty home it creates the SQLite database, the admin account (keys
    written to <home>/admin-keys.json and printed once), zone1, the image store 'default' and
    the primary pool. GET /healthz answers 200 once the service is ready.
    """
    import uvicorn

    from secstor.api.app import create_app
    from secstor.api.metrics_routes import metrics_routes
    from secstor.api.transfer_routes import transfer_routes
    from secstor.jobs.handlers import load_handler_modules
    from secstor.jobs.worker import embedded_workers
    from secstor.services.bootstrap import bootstrap, open_runtime
    from secstor.services.background import BackgroundServices
    from secstor.services.supervisor import Supervisor

    cfg = build_config(home, config, database_url, host=host, port=port, embedded_workers=workers)
    setup_logging(cfg.log_level)
    runtime = open_runtime(cfg)
    result = bootstrap(runtime)
    if result.admin_keys:
        typer.echo("Created the admin account. Its API keys (also in "
                   f"{cfg.home / 'admin-keys.json'}, mode 0600):")
        typer.echo(json.dumps(result.admin_keys, indent=2))
    load_handler_modules()  # also before serving: extra modules may register API commands
    background = BackgroundServices(runtime, workers=embedded_workers(runtime, cfg.embedded_workers))
    # Extra `secstor worker` processes when copies wait too long (none when workers run elsewhere).
    supervisor = Supervisor(runtime, child_worker_args(cfg, config), base_workers=cfg.embedded_workers) \
        if cfg.embedded_workers else None

    def start() -> None:
        background.start()
        if supervisor:
            supervisor.start()
        # What start-up loaded (models, commands, compiled SQL) lives as long as the process:
        # out of the collector's full passes, which otherwise stall a request for 50-300 ms
        # every few large answers (docs/benchmarks.md, listTemplates).
        gc.freeze()

    def stop() -> None:
        if supervisor:
            supervisor.stop()
        background.stop()

    app = create_app(runtime, ready=background.ready, on_startup=start, on_shutdown=stop,
                     extra_routes=transfer_routes() + metrics_routes(runtime))
    log.info("secstor listening on http://%s:%s (home %s)", cfg.host, cfg.port, cfg.home)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level.lower(), access_log=False)
    runtime.close()
