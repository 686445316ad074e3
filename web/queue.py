"""The only place the web app touches arq: putting a job on the queue and asking workers to abort it.

Kept this small on purpose: arq is in maintenance-only mode upstream, and everything else in the web app
speaks only our own store.
"""

from typing import Any

from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss
from arq.utils import timestamp_ms


class EnqueueFailed(Exception):
    pass


class JobQueue:
    def __init__(self, redis: ArqRedis, queue_name: str) -> None:
        self._redis = redis
        self._queue_name = queue_name

    async def enqueue(self, task: str, job_id: str, params: dict[str, Any]) -> None:
        job = await self._redis.enqueue_job(task, params, _job_id=job_id, _queue_name=self._queue_name)
        if job is None:
            raise EnqueueFailed(f"arq already holds a job with id {job_id!r}")

    async def abort(self, job_id: str) -> None:
        """Ask the worker running `job_id` to cancel it; one that has not started yet will skip it."""
        await self._redis.zadd(abort_jobs_ss, {job_id: timestamp_ms()})
