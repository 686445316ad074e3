"""Heartbeats for running jobs, and the reaper that retries a job whose worker stopped beating.

arq has no heartbeat: a worker killed with SIGKILL leaves its job "in progress" until arq's in-progress key
expires, which is the job timeout plus 40 s, an hour by default. So every running attempt records itself
in one sorted set, scored by Redis's own clock every `JOBPULSE_HEARTBEAT_INTERVAL_S`, and every worker
runs a reaper. An attempt silent for `JOBPULSE_STALL_AFTER_S` is claimed by exactly one reaper (the
claim removes it atomically), marked `retrying` (or `failed` after the last attempt) with the reason, and
its arq in-progress key is deleted so that any worker picks the job up at its next poll.

A worker that was only frozen, not dead, cannot overwrite the new attempt: status and progress are
fenced on the attempt number, so its next `progress()` raises `JobAborted`.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobpulse import keys
from jobpulse.registry import TaskRegistry
from jobpulse.settings import Settings
from jobpulse.status import JobStatus
from jobpulse.store import JobStore, JobStoreError

logger = logging.getLogger(__name__)

# Scores are Redis's clock in milliseconds, so workers on machines whose clocks disagree agree on staleness.
_BEAT = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], t[1] * 1000 + math.floor(t[2] / 1000), ARGV[1])
return 1
"""

_CLAIM_STALE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local oldest_alive = now - tonumber(ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', oldest_alive, 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(stale) do
  redis.call('ZREM', KEYS[1], member)
end
return stale
"""

_CLAIM_BATCH = 100


def _member(job_id: str, attempt: int) -> str:
    return f"{job_id}:{attempt}"


@contextlib.asynccontextmanager
async def heartbeat(redis: Redis, job_id: str, attempt: int, interval_s: float) -> AsyncIterator[None]:
    """Beat for one attempt while the block runs; forget it when the block ends, however it ends."""
    member = _member(job_id, attempt)
    beat = redis.register_script(_BEAT)

    async def beat_forever() -> None:
        while True:
            try:
                await beat(keys=[keys.running_attempts_key()], args=[member])
            except RedisError as exc:
                logger.warning("job %s: heartbeat failed: %s", job_id, exc)
            await asyncio.sleep(interval_s)

    task = asyncio.create_task(beat_forever(), name=f"heartbeat {member}")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(RedisError, TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.shield(redis.zrem(keys.running_attempts_key(), member))


class StallReaper:
    """Retries (or fails) jobs whose attempt has gone silent; one runs in every worker.

    After losing Redis itself, a reaper waits a whole stall period before reaping again: the outage most
    likely silenced every worker's heartbeats too, and live workers need a moment to beat again. Without
    the wait, a Redis outage longer than the stall limit would have every running job run twice.
    """

    def __init__(self, redis: Redis, store: JobStore, settings: Settings, registry: TaskRegistry) -> None:
        self._redis = redis
        self._store = store
        self._settings = settings
        self._registry = registry
        self._claim = redis.register_script(_CLAIM_STALE)
        self._task: asyncio.Task[None] | None = None
        # When this reaper last regained Redis after losing it (loop time); -inf: never lost it.
        self._in_contact_since = float("-inf")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stall reaper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        lost = False
        while True:
            try:
                if not lost and loop.time() - self._in_contact_since >= self._settings.stall_after_s:
                    await self.reap()
                else:
                    await self._redis.ping()
                if lost:
                    lost = False
                    self._in_contact_since = loop.time()
            except RedisError as exc:
                lost = True
                logger.warning("stall reaper: %s", exc)
            except Exception:
                logger.exception("stall reaper failed")
            await asyncio.sleep(self._settings.heartbeat_interval_s)

    async def _max_tries(self, job_id: str) -> int:
        """The job's task's attempt limit (a task may set its own), the settings' for an unknown task."""
        state = await self._store.get(job_id)
        spec = self._registry.get(state.task) if state is not None else None
        return self._settings.max_tries if spec is None else spec.tries(self._settings.max_tries)

    async def reap(self) -> list[str]:
        """Claim every stalled attempt and hand its job on; returns the members claimed."""
        stall_ms = int(self._settings.stall_after_s * 1000)
        claimed = await self._claim(keys=[keys.running_attempts_key()], args=[stall_ms, _CLAIM_BATCH])
        members = [m.decode() if isinstance(m, bytes) else str(m) for m in claimed]
        for member in members:
            job_id, _, attempt = member.rpartition(":")
            if attempt.isdigit():
                await self._hand_on(job_id, int(attempt))
        return members

    async def _hand_on(self, job_id: str, attempt: int) -> None:
        settings = self._settings
        reason = (
            f"stalled: the worker running attempt {attempt} stopped responding "
            f"(no heartbeat for {settings.stall_after_s:g} s)"
        )
        max_tries = await self._max_tries(job_id)
        retry = attempt < max_tries
        status = JobStatus.RETRYING if retry else JobStatus.FAILED
        error = reason if retry else f"{reason}; gave up after {max_tries} attempts"
        try:
            await self._store.set_status(job_id, status, attempt=attempt, error=error, expect_attempt=attempt)
        except JobStoreError as exc:
            logger.info(
                "job %s: attempt %d went silent, but the job has moved on: %s",
                job_id,
                attempt,
                exc,
                extra={"job_id": job_id},  # the reaper runs outside the job: tag its lines (jobpulse.logs)
            )
            return
        logger.warning("job %s: %s", job_id, error, extra={"job_id": job_id})
        # arq would not run the job again before this key expires (its timeout + 10 s): run it now.
        await self._redis.delete(in_progress_key_prefix + job_id)
