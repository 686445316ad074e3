"""The only place the web app touches arq: putting a job on the queue and asking workers to abort it.

Kept this small on purpose: arq is in maintenance-only mode upstream, and everything else in the web app
speaks only our own store.
"""

from collections import Counter
from typing import Any

from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss
from arq.utils import timestamp_ms

from jobpulse.keys import running_attempts_key


class EnqueueFailed(Exception):
    pass


class JobQueue:
    def __init__(self, redis: ArqRedis, queue_name: str) -> None:
        self._redis = redis
        self._queue_name = queue_name
        # Jobs this process has put on the queue, by task: read by jobpulse.web.metrics at scrape time.
        self.enqueued: Counter[str] = Counter()

    async def enqueue(self, task: str, job_id: str, params: dict[str, Any]) -> None:
        job = await self._redis.enqueue_job(task, params, _job_id=job_id, _queue_name=self._queue_name)
        if job is None:
            raise EnqueueFailed(f"arq already holds a job with id {job_id!r}")
        self.enqueued[task] += 1

    async def depth(self) -> tuple[int, int]:
        """`(waiting, running)`: jobs on the queue not yet started (deferred retries included), and
        attempts running now, on every worker.

        arq keeps a job in its queue's sorted set until the job finishes, so the set's size counts
        running jobs too; the running ones are the attempts with a heartbeat (`jobpulse.keys`). One round
        trip, two O(1) commands, whatever the queue's length.
        """
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self._queue_name)
            pipe.zcard(running_attempts_key())
            on_queue, running = await pipe.execute()
        return max(0, on_queue - running), running

    async def abort(self, job_id: str) -> None:
        """Ask the worker running `job_id` to cancel it; one that has not started yet will skip it."""
        await self._redis.zadd(abort_jobs_ss, {job_id: timestamp_ms()})
