"""One worker process's Prometheus metrics, served on `JOBPULSE_WORKER_METRICS_PORT` (0: not served).

Each worker serves its own, and Prometheus adds them up (`sum by (task, status) (rate(...))`): the way a
Prometheus client library is meant to be used, and what an operator scaling workers expects, one target
per worker (`--scale worker=4` gives four containers, each with the port to itself). Counting in Redis
instead, so that the web's `/metrics` showed cluster-wide totals, was weighed and left out: every web
process would report the same totals (a `sum` over them multiplies), a counter in Redis has no reset
Prometheus can see when a worker restarts, and it costs a write per job. What only Redis knows, the
queue's depth and the attempts running everywhere, the web's `/metrics` reads from Redis when scraped.

The counts are taken by `jobpulse.worker.lifecycle`, which knows each attempt's outcome; arq's
`on_job_end` hook is not told it (arq reports a failed or aborted job as complete). The registry is this
module's own, not prometheus-client's global one, so a test that imports other instrumented code sees
only ours.
"""

import logging
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

logger = logging.getLogger(__name__)

# No `*_created` series beside each counter and histogram: a second series per label set that Prometheus
# reads only with a feature flag. (A process-wide switch; the web's collector makes none either.)
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# How an attempt ended, as the `status` label says it:
#   succeeded, failed, retrying: the status this attempt recorded (`retrying`: it will run again);
#   cancelled: the job was ended elsewhere while it ran (`DELETE /jobs/{id}`; rarely, another attempt
#     took it over after a stall, or its keys expired);
#   interrupted: it could record nothing (Redis lost, the worker stopping and Redis not answering).
ATTEMPT_OUTCOMES = ("succeeded", "failed", "retrying", "cancelled", "interrupted")

JOBS_FINISHED = Counter(
    "jobpulse_worker_jobs_finished",
    "Job attempts this worker ended, by task and how they ended.",
    ["task", "status"],
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "jobpulse_worker_job_duration_seconds",
    "Run time of the job attempts this worker ended, from `running` to their last status.",
    ["task", "status"],
    # From a demo job's fraction of a second to the default one-hour timeout.
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
    registry=REGISTRY,
)
JOBS_IN_PROGRESS = Gauge(
    "jobpulse_worker_jobs_in_progress",
    "Job attempts running on this worker now (at most JOBPULSE_MAX_JOBS).",
    ["task"],
    registry=REGISTRY,
)


def declare_tasks(names: Iterable[str]) -> None:
    """Every series exists from the start, at 0, so that rate() sees the first job and alerts on "failed"
    work; called with the registry's task names when the worker's settings are built."""
    for task in names:
        JOBS_IN_PROGRESS.labels(task)
        for outcome in ATTEMPT_OUTCOMES:
            JOBS_FINISHED.labels(task, outcome)


def attempt_started(task: str) -> None:
    JOBS_IN_PROGRESS.labels(task).inc()


def attempt_ended(task: str, outcome: str, duration_s: float) -> None:
    JOBS_IN_PROGRESS.labels(task).dec()
    JOBS_FINISHED.labels(task, outcome).inc()
    JOB_DURATION.labels(task, outcome).observe(duration_s)


def serve(port: int) -> Callable[[], None]:
    """Serve the metrics on `port`, all interfaces, from a thread; returns what stops it.

    A port already taken fails the worker's start with a message naming the setting: a worker whose
    metrics nobody can scrape should not look healthy.
    """
    try:
        server, thread = start_http_server(port, registry=REGISTRY)
    except OSError as exc:
        raise RuntimeError(
            f"JOBPULSE_WORKER_METRICS_PORT={port}: cannot serve metrics there ({exc}); pick a free port, "
            "or 0 for none (one per worker when several share a host)"
        ) from exc
    logger.info("metrics on port %d", port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
