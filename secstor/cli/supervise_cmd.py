"""`secstor supervise`: single-host mode's worker scaling, beside `secstor serve --workers 0` or
a fixed set of `secstor worker` processes."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import typer

from secstor.cli.common import ConfigOpt, DbOpt, HomeOpt, build_config, child_worker_args, setup_logging

log = logging.getLogger("secstor.supervisor")


def supervise(
    home: HomeOpt = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    base_workers: Annotated[int, typer.Option("--base-workers", min=0, help="Workers of the queue that run anyway "
                                              "(they count towards the copy sessions).")] = 1,
    queue: Annotated[str, typer.Option("--queue", help="Job queue to scale workers for.")] = "copy",
) -> None:
    """Start extra `secstor worker` processes on this host, up to max.ssvm.count, while at least
    half of the copy sessions have waited longer than max.data.migration.wait.time minutes, and
    stop them (SIGTERM: running jobs finish) once the queue is empty.
    """
    from secstor.services.bootstrap import open_runtime
    from secstor.services.supervisor import Supervisor

    cfg = build_config(home, config, database_url)
    setup_logging(cfg.log_level)
    runtime = open_runtime(cfg)
    supervisor = Supervisor(runtime, child_worker_args(cfg, config), base_workers=base_workers, queue=queue)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("supervisor: %s received, stopping its workers", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    supervisor.start()
    stop.wait()
    supervisor.stop()
    runtime.close()
