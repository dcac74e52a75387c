"""When to add or remove worker processes (CloudStack's SSVM scaling, with processes instead of
system VMs): pure decision, no I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueLoad:
    """One job queue as secstor.jobs.engine.queue_metrics reports it."""

    depth: int  # jobs waiting
    running: int
    oldest_wait_seconds: float


def scaling_step(load: QueueLoad, *, workers: int, extra_workers: int, max_extra_workers: int,
                 sessions_per_worker: int, wait_threshold_seconds: float) -> int:
    """+1: start one more worker; -n: stop the n extra workers; 0: leave things as they are.

    A worker is added when at least half of the copy sessions of the running ``workers``
    (``sessions_per_worker`` each) are taken by jobs waiting, the oldest of them longer than
    ``wait_threshold_seconds`` (the metrics give the oldest wait only: the others waited less
    but still waited), and fewer than ``max_extra_workers`` extras run. Extras are stopped once
    the queue is empty: nothing waiting and nothing running.
    """
    if load.depth == 0 and load.running == 0:
        return -extra_workers
    half_the_sessions = max(1, -(-(sessions_per_worker * workers) // 2))
    if (extra_workers < max_extra_workers and load.oldest_wait_seconds > wait_threshold_seconds
            and load.depth >= half_the_sessions):
        return 1
    return 0
