"""The reconciler: finds jobs that our state and arq's queue disagree about, and ends them or runs them again.

Our state says what a watcher sees; arq's keys say what will run. They can part ways: a web process killed
between recording a job and enqueueing it, arq dropping a job that waited past its expiry (or one it failed
itself while Redis was away), a Redis that lost the queue but kept our keys, a worker that died (or could
not write to Redis) before its attempt's first heartbeat. Each left the job `queued`, `retrying` or
`running` for days with nothing to change it.

Every non-finished job is in its queue's sorted set (`keys.unfinished_jobs_key`), scored by Redis's clock
at its latest status (the append script keeps it) or at the reconciler's latest look at it. Every worker
runs a reconciler; one at a time, whoever of the queue's workers holds a short lease makes a pass every
quarter of `JOBPULSE_RECONCILE_AFTER_S` over the entries older than that, oldest first:

- **`queued` / `retrying`, and arq holds it nowhere**: no `arq:in-progress:<id>`, and not both
  `arq:job:<id>` and a place in the queue's sorted set (arq cannot run a queue entry whose job key is gone:
  it drops it as expired). The grace covers the web's record-then-enqueue (milliseconds); arq's own moves
  (queue → in progress → finished) are single transactions, so arq never holds a live job nowhere. Such a
  job is queued again, as its next attempt, if its task is registered here and attempts remain; else it
  fails, saying why. The event ("… queued again") is written by one script that first checks, atomically,
  that arq still holds it nowhere and that the job is as it was read (status and attempt), and that drops
  arq's leftovers (a job key off the queue, a result) so that `enqueue_job(_job_id=…)` can take the id.
  That enqueue refuses a duplicate: if the web's own (late) enqueue got there first, there is still one
  arq job, and the web takes the refusal as success (`jobpulse.web.jobs`). `_job_try` is the next attempt,
  so an attempt that arq dropped is never run again under its number.
- **`running`, without a heartbeat** for its attempt in `keys.running_attempts_key()`: its worker stopped
  before the first heartbeat, or could not write its ending (Redis out of memory: the heartbeat's own entry
  is removed, the status write refused). Handed on as the stall reaper does: `retrying` (or `failed` on
  the last attempt) and arq's in-progress key deleted; if arq no longer holds it, the next pass queues it.
- Anything else is re-scored to now (looked at, fine) and comes round again one grace later.
"""

import asyncio
import logging
import secrets
from typing import Any

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from redis.exceptions import RedisError

from jobpulse import keys
from jobpulse.registry import TaskRegistry
from jobpulse.settings import Settings
from jobpulse.status import JobStatus
from jobpulse.store import JobState, JobStore, JobStoreError, parse_state

logger = logging.getLogger(__name__)

# Entries looked at per pass; the rest (re-scored or not yet due) come round at the next passes.
_BATCH = 500

_WAITING = (JobStatus.QUEUED, JobStatus.RETRYING)


def _arq_keys(job_id: str, queue_name: str) -> tuple[str, str, str, str]:
    """arq's keys of one job as the store's `unless_held` takes them: job, in-progress, queue, result."""
    return (job_key_prefix + job_id, in_progress_key_prefix + job_id, queue_name, result_key_prefix + job_id)


class Reconciler:
    """Runs in every worker; `reconcile()` is one pass (tests call it directly)."""

    def __init__(self, redis: ArqRedis, store: JobStore, settings: Settings, registry: TaskRegistry) -> None:
        self._redis = redis
        self._store = store
        self._settings = settings
        self._registry = registry
        self._after_ms = int(settings.reconcile_after_s * 1000)
        self.period_s = max(0.05, settings.reconcile_after_s / 4)  # never a busy loop, however small
        self._token = secrets.token_hex(8)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                # One pass per period across all workers: the lease lasts a period and is not released.
                lease_ms = max(1, int(self.period_s * 1000))
                lease = keys.reconciler_lease_key(self._settings.queue_name)
                if await self._redis.set(lease, self._token, nx=True, px=lease_ms):
                    await self.reconcile()
            except RedisError as exc:
                logger.warning("reconciler: %s", exc)
            except Exception:
                logger.exception("reconciler failed")
            await asyncio.sleep(self.period_s)

    async def _now_ms(self) -> int:
        seconds, micros = await self._redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def reconcile(self) -> list[str]:
        """One pass; returns the ids of the jobs it changed (queued again, handed on or failed)."""
        now_ms = await self._now_ms()
        index = keys.unfinished_jobs_key(self._settings.queue_name)
        due = await self._redis.zrangebyscore(index, "-inf", now_ms - self._after_ms, start=0, num=_BATCH)
        job_ids = [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in due]
        if not job_ids:
            return []
        gone: list[str] = []
        looked_at: list[str] = []
        changed: list[str] = []
        running: dict[str, JobState] = {}
        for job_id, state, held in await self._read(job_ids):
            if state is None or state.is_terminal:
                gone.append(job_id)  # expired (active_ttl_s) or deleted: nothing left to reconcile
            elif state.status is JobStatus.RUNNING:
                running[job_id] = state
            elif held:
                looked_at.append(job_id)
            elif await self._unqueued(state):
                changed.append(job_id)
        if running:
            beats = await self._heartbeats(running)
            for job_id, state in running.items():
                if beats[job_id] is None and await self._lost(state):
                    changed.append(job_id)
                else:
                    looked_at.append(job_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            if gone:
                pipe.zrem(index, *gone)
            if looked_at:
                # Only if still there: a job that finished meanwhile must not come back.
                pipe.zadd(index, dict.fromkeys(looked_at, now_ms), xx=True)
            await pipe.execute()
        return changed

    async def _read(self, job_ids: list[str]) -> list[tuple[str, JobState | None, bool]]:
        """Each job's state, and whether arq holds it: in progress, or its job key and a queue entry.

        Two reads at once, the store's and the queue's, which may be two Redis (or a cluster and a node).
        """
        queue = self._settings.queue_name

        async def states() -> list[Any]:
            async with self._store.redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hgetall(keys.state_key(job_id))
                return await pipe.execute()

        async def held_by_arq() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.exists(job_key_prefix + job_id)
                    pipe.exists(in_progress_key_prefix + job_id)
                    pipe.zscore(queue, job_id)
                return await pipe.execute()

        raws, arq_replies = await asyncio.gather(states(), held_by_arq())
        read = []
        for n, job_id in enumerate(job_ids):
            job_key, in_progress, queued = arq_replies[3 * n : 3 * n + 3]
            held = bool(in_progress) or (bool(job_key) and queued is not None)
            raw = raws[n]
            read.append((job_id, parse_state(job_id, raw) if raw else None, held))
        return read

    async def _heartbeats(self, states: dict[str, JobState]) -> dict[str, Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id, state in states.items():
                # the member as jobpulse.worker.heartbeat names it: `<job id>:<attempt>`
                pipe.zscore(keys.running_attempts_key(), f"{job_id}:{state.attempt}")
            scores = await pipe.execute()
        return dict(zip(states, scores, strict=True))

    def _max_tries(self, task: str) -> int | None:
        spec = self._registry.get(task)
        return None if spec is None else spec.tries(self._settings.max_tries)

    async def _write(self, state: JobState, status: JobStatus, error: str, *, unless_held: bool) -> bool:
        """Record `status`, refused if the job changed since `state` was read (or arq holds it after all)."""
        try:
            await self._store.set_status(
                state.id,
                status,
                attempt=state.attempt,
                error=error,
                expect_attempt=state.attempt,
                expect_status=state.status,
                unless_held=_arq_keys(state.id, self._settings.queue_name) if unless_held else None,
            )
        except JobStoreError as exc:
            logger.info("job %s: left as it is: %s", state.id, exc, extra={"job_id": state.id})
            return False
        logger.warning("job %s: %s: %s", state.id, status.value, error, extra={"job_id": state.id})
        return True

    async def _unqueued(self, state: JobState) -> bool:
        """`state` is `queued` or `retrying`, and arq holds the job nowhere: queue it again, or fail it."""
        what = (
            f"recorded {state.status.value}, but arq had it neither queued nor running after "
            f"{self._settings.reconcile_after_s:g} s"
        )
        max_tries = self._max_tries(state.task)
        next_attempt = state.attempt + 1
        if max_tries is None:
            error = f"{what}, and its task {state.task!r} is not registered with the workers: not run"
            return await self._write(state, JobStatus.FAILED, error, unless_held=True)
        if next_attempt > max_tries:
            error = f"{what}; gave up after {max_tries} attempts"
            return await self._write(state, JobStatus.FAILED, error, unless_held=True)
        if not await self._write(state, state.status, f"{what}: queued again", unless_held=True):
            return False
        job = await self._redis.enqueue_job(
            state.task,
            state.params,
            _job_id=state.id,
            _queue_name=self._settings.queue_name,
            _job_try=next_attempt,
        )
        if job is None:  # the web's own enqueue, late, got there first: it is queued once, all the same
            logger.info("job %s: queued meanwhile by its web process", state.id)
        return True

    async def _lost(self, state: JobState) -> bool:
        """`state` is `running`, and its attempt has no heartbeat: hand it on as the stall reaper would."""
        reason = (
            f"lost: attempt {state.attempt} is recorded as running, but no worker has reported it alive for "
            f"{self._settings.reconcile_after_s:g} s (its worker stopped, or could not write to Redis)"
        )
        max_tries = self._max_tries(state.task) or self._settings.max_tries
        if state.attempt < max_tries:
            written = await self._write(state, JobStatus.RETRYING, reason, unless_held=False)
        else:
            error = f"{reason}; gave up after {max_tries} attempts"
            written = await self._write(state, JobStatus.FAILED, error, unless_held=False)
        if written:
            # arq would not run it again before this key expires (its timeout + 10 s): run it now.
            await self._redis.delete(in_progress_key_prefix + state.id)
        return written
