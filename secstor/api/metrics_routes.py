"""GET /metrics: job queue depth, waiting time and live workers in the Prometheus text format,
for orchestrators that scale `secstor worker` processes on other hosts. No API keys (like
/healthz): it shows counts only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from secstor.jobs.engine import queue_metrics
from secstor.jobs.worker import live_workers

if TYPE_CHECKING:
    from secstor.runtime import Runtime

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_FAMILIES = (
    ("secstor_job_queue_depth", "gauge", "Jobs waiting in the queue.", "depth"),
    ("secstor_job_oldest_wait_seconds", "gauge", "How long the longest-waiting job of the queue has waited.",
     "oldest_wait_seconds"),
    ("secstor_job_running", "gauge", "Jobs of the queue running now.", "running"),
)


def render(metrics: dict[str, dict], workers: int) -> str:
    lines = []
    for name, kind, help_text, field in _FAMILIES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f'{name}{{queue="{q}"}} {m[field]}' for q, m in sorted(metrics.items())]
    lines += ["# HELP secstor_workers Worker processes with a live heartbeat.", "# TYPE secstor_workers gauge",
              f"secstor_workers {workers}"]
    return "\n".join(lines) + "\n"


def metrics_routes(runtime: "Runtime") -> list[Route]:
    def collect() -> str:
        with runtime.session() as s:
            now = runtime.now()
            return render(queue_metrics(s, now), len(live_workers(s, now)))

    async def metrics(_request: Request) -> PlainTextResponse:
        return PlainTextResponse(await run_in_threadpool(collect), media_type=CONTENT_TYPE)

    return [Route("/metrics", metrics, methods=["GET"])]
