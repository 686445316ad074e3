"""`worker_settings(registry)`: what arq's CLI (and `arq.Worker`) takes to run a registry's tasks.

The user's own arq settings compose with ours: their plain `functions` and `cron_jobs` run beside our
tasks, their `on_startup`/`on_shutdown`/`on_job_start`/`on_job_end` hooks run as well as ours (ours set
up first and tear down last), and any other arq setting they pass wins over our default. A few settings
would break the contract with the web (where jobs are enqueued, how they are encoded) and are refused
with the variable to set instead.
"""

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.worker import Function, func

from jobpulse import keys, queue_codec
from jobpulse.connections import StoreRedis, store_cluster
from jobpulse.registry import TaskDefinitionError, TaskRegistry
from jobpulse.settings import Settings
from jobpulse.store import JobStore
from jobpulse.uploads import UploadParams, UploadStorage
from jobpulse.worker import metrics
from jobpulse.worker.heartbeat import StallReaper
from jobpulse.worker.job_logs import configure_worker_logging, on_job_start
from jobpulse.worker.lifecycle import STORE_KEY, lifecycle_task
from jobpulse.worker.reconciler import Reconciler
from jobpulse.worker.redis_pool import WORKER_CLIENT_NAME, ReconnectingPool, worker_redis
from jobpulse.worker.report_relay import RELAY_KEY, ReportRelay
from jobpulse.worker.upload_sweeper import upload_sweeper

REAPER_KEY = "jobpulse_reaper"
RECONCILER_KEY = "jobpulse_reconciler"
METRICS_KEY = "jobpulse_metrics"
SETTINGS_KEY = "jobpulse_settings"
STORE_REDIS_KEY = "jobpulse_store_redis"

Hook = Callable[[dict[str, Any]], Awaitable[Any]]

# arq's own timeout only backs ours up: ours fires first and is reported as a failure.
_ARQ_TIMEOUT_MARGIN_S = 30

# Settings the web must agree on, or that our store relies on: set through jobpulse's Settings instead.
_REFUSED = {
    "redis_settings": "set REDIS_URL (or pass settings=Settings(redis_url=...))",
    "redis_pool": "set REDIS_URL (or pass settings=Settings(redis_url=...))",
    "queue_name": "set JOBPULSE_QUEUE_NAME, the same for the web and the worker",
    "job_serializer": "jobs are JSON on the queue (jobpulse.queue_codec); the web writes them so",
    "job_deserializer": "jobs are JSON on the queue (jobpulse.queue_codec); the web writes them so",
    "allow_abort_jobs": "DELETE /jobs/{id} needs it on",
}
_HOOKS = ("on_startup", "on_shutdown", "on_job_start", "on_job_end")


def health_check_key(queue_name: str) -> str:
    """The key this host's worker refreshes and `arq --check` with the same settings on this host reads."""
    return keys.worker_health_check_key(queue_name, socket.gethostname())


def _function_name(function: Any) -> str:
    """The name arq will give it (a plain coroutine's `__qualname__`)."""
    return function.name if isinstance(function, Function) else func(function).name


def _compose(first: Hook | None, second: Hook | None) -> Hook | None:
    """One arq hook that awaits `first`, then `second`."""
    if first is None or second is None:
        return first or second

    async def both(ctx: dict[str, Any]) -> None:
        await first(ctx)
        await second(ctx)

    return both


def _task_functions(registry: TaskRegistry, settings: Settings, theirs: Iterable[Any]) -> list[Any]:
    ours = [
        func(
            lifecycle_task(spec, settings),  # type: ignore[arg-type]
            name=spec.name,
            # We count attempts ourselves; arq must still call us once more so we can publish `failed`.
            max_tries=spec.tries(settings.max_tries) + 1,
            timeout=spec.timeout(settings.job_timeout_s) + _ARQ_TIMEOUT_MARGIN_S,
        )
        for spec in registry
    ]
    theirs = list(theirs)
    clashes = sorted({_function_name(f) for f in theirs} & set(registry.names))
    if clashes:
        raise TaskDefinitionError(
            f"functions= names {clashes}, which the task registry has too: rename one of them"
        )
    return [*ours, *theirs]


def store_redis_for(settings: Settings, queue_redis: StoreRedis) -> StoreRedis:
    """The store's Redis for a worker: arq's own client on one Redis; else a client of its own, which
    rides out an outage (or a failover) for `JOBPULSE_REDIS_RECONNECT_S` as the queue's does."""
    if settings.redis_cluster:
        return store_cluster(
            settings,
            client_name=WORKER_CLIENT_NAME,
            max_connections=settings.worker_redis_pool_size,
            ride_out_s=settings.redis_reconnect_s,
        )
    if settings.queue_apart:
        return worker_redis(settings, settings.redis_url)
    return queue_redis


def _start_store(ctx: dict[str, Any], settings: Settings, main_task: "asyncio.Task[Any] | None") -> JobStore:
    store_redis = ctx[STORE_REDIS_KEY] = store_redis_for(settings, ctx["redis"])
    pool = getattr(store_redis, "connection_pool", None)
    if store_redis is not ctx["redis"] and isinstance(pool, ReconnectingPool) and main_task is not None:
        pool.stop_when(main_task, watch_signals=False, grace_s=settings.shutdown_grace_s)
    return JobStore(store_redis, settings, queue_redis=ctx["redis"], batch_progress=True)


async def _close_store(ctx: dict[str, Any]) -> None:
    store_redis = ctx.pop(STORE_REDIS_KEY, None)
    if store_redis is not None and store_redis is not ctx["redis"]:
        await store_redis.aclose()


def worker_settings(
    registry: TaskRegistry,
    *,
    settings: Settings | None = None,
    owns_process: bool = True,
    **arq_settings: Any,
) -> dict[str, Any]:
    """Worker settings for `arq`: `WorkerSettings = worker_settings(tasks, functions=[other_fn])`.

    `settings` defaults to `Settings()`, read from the environment now. `owns_process` (the default, for
    `arq worker.WorkerSettings`) lets the worker configure the process's logging (jobpulse.logs) as it
    starts: arq's CLI configures its own logging after importing the settings, so that is the first
    moment ours can take over. Pass `owns_process=False` when the worker runs inside a process that
    configures its own logging (a test, an embedding program).
    """
    registry.check()
    if refused := sorted(set(arq_settings) & set(_REFUSED)):
        raise TaskDefinitionError(
            "worker_settings() does not take " + "; ".join(f"{key}: {_REFUSED[key]}" for key in refused)
        )
    settings = settings or Settings()
    metrics.declare_tasks(registry.names)
    uploads = any(issubclass(spec.params_model, UploadParams) for spec in registry)

    async def on_startup(ctx: dict[str, Any]) -> None:
        # This runs in arq's main task. Once the worker is stopping (see ReconnectingPool.stop_when), its
        # pool stops waiting for Redis, so the stop is prompt however Redis is.
        pool, main_task = ctx["redis"].connection_pool, asyncio.current_task()
        if isinstance(pool, ReconnectingPool) and main_task is not None:
            pool.stop_when(main_task, watch_signals=owns_process, grace_s=settings.shutdown_grace_s)
        if owns_process:
            configure_worker_logging(settings.log_format)
        ctx[SETTINGS_KEY] = settings
        if settings.worker_metrics_port:
            ctx[METRICS_KEY] = metrics.serve(settings.worker_metrics_port)
        ctx[STORE_KEY] = store = _start_store(ctx, settings, main_task)
        ctx[REAPER_KEY] = reaper = StallReaper(ctx["redis"], store, settings, registry)
        reaper.start()
        ctx[RECONCILER_KEY] = reconciler = Reconciler(ctx["redis"], store, settings, registry)
        reconciler.start()
        ctx[RELAY_KEY] = ReportRelay()  # progress_reporter()'s; opens its socket on first use

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        if RELAY_KEY in ctx:
            await ctx.pop(RELAY_KEY).close()
        if METRICS_KEY in ctx:
            ctx.pop(METRICS_KEY)()
        if RECONCILER_KEY in ctx:
            await ctx[RECONCILER_KEY].stop()
        if REAPER_KEY in ctx:
            await ctx[REAPER_KEY].stop()
        await _close_store(ctx)

    user_hooks = {name: arq_settings.pop(name, None) for name in _HOOKS}
    cron_jobs: list[CronJob] = []
    if uploads:
        cron_jobs.append(upload_sweeper(UploadStorage(settings.upload_dir), settings.upload_retention_s))
    cron_jobs += list(arq_settings.pop("cron_jobs", None) or [])
    ours: dict[str, Any] = {
        "functions": _task_functions(registry, settings, arq_settings.pop("functions", None) or []),
        "redis_settings": RedisSettings.from_dsn(settings.queue_url),
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
        # Written every interval, expiring one second later: `arq --check` exits 1 once this host's
        # worker has stopped polling for that long (arq's default interval is an hour).
        "health_check_interval": settings.worker_health_check_s,
        "health_check_key": health_check_key(settings.queue_name),
        "keep_result": 60,
        # Ours set up first and tear down last, so the user's hooks can use what ours made.
        "on_startup": _compose(on_startup, user_hooks["on_startup"]),
        "on_shutdown": _compose(user_hooks["on_shutdown"], on_shutdown),
        "on_job_start": _compose(on_job_start, user_hooks["on_job_start"]),
        "on_job_end": user_hooks["on_job_end"],
        "cron_jobs": cron_jobs,
    }
    return {**ours, **arq_settings}
