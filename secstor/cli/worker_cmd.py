"""`secstor worker`: a process that runs jobs (downloads, copies, migrations, backups)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated, Optional

import typer

from secstor.cli.common import ConfigOpt, DbOpt, HomeOpt, build_config, setup_logging

log = logging.getLogger("secstor.worker")


def worker(
    home: HomeOpt = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    worker_id: Annotated[Optional[str], typer.Option("--id", help="Worker id shown in logs, job leases and "
                                                     "listJobQueues. Default: config worker_id, else "
                                                     "<hostname>-<pid>.")] = None,
    slots: Annotated[Optional[str], typer.Option("--slots", help="Queues to serve and how many of their jobs to run "
                                                 "at once, e.g. default=4,copy=2. Default: queues default and copy, "
                                                 "limited by the settings secstorage.worker.job.slots and "
                                                 "secstorage.max.migrate.sessions (read live).")] = None,
    grace_seconds: Annotated[float, typer.Option("--grace-seconds", help="On SIGTERM/SIGINT, how long running jobs "
                                                 "may take to finish; after that they are left to another worker "
                                                 "(a second signal stops at once).")] = 30.0,
) -> None:
    """Run jobs from the shared database until stopped, plus the periodic background tasks.

    Any number of workers (and `secstor serve`'s embedded ones) can share one PostgreSQL or
    MariaDB database; a job whose worker dies is taken over by another once its lease expires
    (setting job.lease.seconds; $SECSTOR_JOB_LEASE_SECONDS overrides it for this process).
    """
    from secstor.jobs.worker import Worker, default_worker_id, parse_slots
    from secstor.services.background import BackgroundServices
    from secstor.services.bootstrap import open_runtime

    try:
        queue_slots = parse_slots(slots) if slots is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--slots") from None
    cfg = build_config(home, config, database_url)
    setup_logging(cfg.log_level)
    runtime = open_runtime(cfg)
    job_worker = Worker(runtime, worker_id or cfg.worker_id or default_worker_id(), queue_slots)
    background = BackgroundServices(runtime, workers=[job_worker], grace_seconds=grace_seconds)

    stop = threading.Event()

    def on_signal(signum, _frame):
        if stop.is_set():
            log.warning("worker %s: second signal, stopping now", job_worker.worker_id)
            raise SystemExit(1)
        log.info("worker %s: %s received, finishing running jobs (up to %gs)", job_worker.worker_id,
                 signal.Signals(signum).name, grace_seconds)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    background.start()
    stop.wait()
    background.stop()
    runtime.close()
