"""The arq worker configuration, built from our `Settings`."""

import socket
from typing import Any

from arq.connections import RedisSettings
from arq.worker import func

from jobpulse import queue_codec
from jobpulse.settings import Settings
from jobpulse.store import JobStore
from jobpulse.tasks import TASK_PARAMS
from jobpulse.uploads import UploadStorage
from worker import metrics
from worker.heartbeat import StallReaper
from worker.job_logs import configure_worker_logging, on_job_start
from worker.lifecycle import STORE_KEY, lifecycle_task
from worker.redis_pool import worker_redis
from worker.tasks import TASK_IMPLS
from worker.tasks.process_upload import UPLOADS_KEY, UploadReading
from worker.upload_sweeper import upload_sweeper

REAPER_KEY = "jobpulse_reaper"
METRICS_KEY = "jobpulse_metrics"

# arq's `health_check_key` default (`<queue>:health-check`) is one key for every worker on the queue:
# with four workers, `arq --check` passed while any one was alive, and one worker stopping deleted the
# key the other three's checks read. Ours adds the host name, which is the container's in Docker and
# the pod's on Kubernetes, and which `arq --check` computes the same in the same container.
HEALTH_CHECK_SUFFIX = ":health-check:"


def health_check_key(queue_name: str) -> str:
    """The key this host's worker refreshes and `arq --check worker.WorkerSettings` on this host reads."""
    return f"{queue_name}{HEALTH_CHECK_SUFFIX}{socket.gethostname()}"


# arq's own timeout only backs ours up: ours fires first and is reported as a failure.
_ARQ_TIMEOUT_MARGIN_S = 30


def _check_registry() -> None:
    if set(TASK_IMPLS) != set(TASK_PARAMS):
        raise RuntimeError(
            "jobpulse.tasks.TASK_PARAMS and worker.tasks.TASK_IMPLS must name the same tasks; "
            f"params only: {sorted(set(TASK_PARAMS) - set(TASK_IMPLS))}, "
            f"implementations only: {sorted(set(TASK_IMPLS) - set(TASK_PARAMS))}"
        )


def build_worker_settings(settings: Settings, *, owns_process: bool = False) -> dict[str, Any]:
    """Keyword arguments for `arq.Worker`; arq's CLI accepts such a dict as worker settings.

    `owns_process` is for `arq worker.WorkerSettings`: the worker then configures the process's logging
    (jobpulse.logs) as it starts. arq's CLI configures its own logging after importing the settings and
    before starting the worker, so this is the first moment ours can take over; arq's first two lines
    (`Starting worker for ...` and Redis's version) come before it, in arq's format.
    """
    _check_registry()

    async def on_startup(ctx: dict[str, Any]) -> None:
        if owns_process:
            configure_worker_logging(settings.log_format)
        if settings.worker_metrics_port:
            ctx[METRICS_KEY] = metrics.serve(settings.worker_metrics_port)
        ctx[STORE_KEY] = store = JobStore(ctx["redis"], settings, batch_progress=True)
        ctx[UPLOADS_KEY] = UploadReading.start(settings)
        ctx[REAPER_KEY] = reaper = StallReaper(ctx["redis"], store, settings)
        reaper.start()

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        if METRICS_KEY in ctx:
            ctx.pop(METRICS_KEY)()
        if REAPER_KEY in ctx:
            await ctx[REAPER_KEY].stop()
        if UPLOADS_KEY in ctx:
            ctx[UPLOADS_KEY].stop()

    functions = [
        func(
            lifecycle_task(name, TASK_IMPLS[name], TASK_PARAMS[name], settings),  # type: ignore[arg-type]
            name=name,
            # We count attempts ourselves; arq must still call us once more so we can publish `failed`.
            max_tries=settings.max_tries + 1,
            timeout=settings.job_timeout_s + _ARQ_TIMEOUT_MARGIN_S,
        )
        for name in sorted(TASK_PARAMS)
    ]
    return {
        "functions": functions,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "redis_pool": worker_redis(settings),
        # Never pickle: see jobpulse.queue_codec.
        "job_serializer": queue_codec.encode,
        "job_deserializer": queue_codec.decode,
        "queue_name": settings.queue_name,
        "max_jobs": settings.max_jobs,
        "allow_abort_jobs": True,
        # arq's graceful stop: on SIGTERM/SIGINT, no new jobs, and running ones get this long to finish.
        "job_completion_wait": settings.shutdown_grace_s,
        "poll_delay": settings.worker_poll_delay_s,
        # Written every interval, expiring one second later: `arq --check worker.WorkerSettings` exits 1 once
        # this host's worker has stopped polling for that long (arq's default interval is an hour).
        "health_check_interval": settings.worker_health_check_s,
        "health_check_key": health_check_key(settings.queue_name),
        "keep_result": 60,
        "on_startup": on_startup,
        "on_job_start": on_job_start,
        "on_shutdown": on_shutdown,
        "cron_jobs": [upload_sweeper(UploadStorage(settings.upload_dir), settings.upload_retention_s)],
    }
