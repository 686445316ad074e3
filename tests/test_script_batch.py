"""Progress writes made in the same event-loop turn go to Redis as one pipeline, each with its own answer.

Against the session's real Redis, through the worker's own client (`worker_redis`: pool, retries,
hiredis packing), as the worker's store uses it.
"""

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from jobpulse import keys
from jobpulse.ids import new_job_id
from jobpulse.settings import Settings
from jobpulse.status import JobStatus
from jobpulse.store import JobAlreadyFinished, JobStore, StaleAttempt
from worker.redis_pool import worker_redis

pytestmark = pytest.mark.anyio


@pytest.fixture
async def batching_store(redis: Redis, settings: Settings) -> AsyncIterator[JobStore]:
    client = worker_redis(settings)
    yield JobStore(client, settings, batch_progress=True)
    await client.aclose()


async def running_jobs(store: JobStore, count: int) -> list[str]:
    job_ids = [new_job_id() for _ in range(count)]
    for job_id in job_ids:
        await store.create(job_id, "simulate", {})
        await store.set_status(job_id, JobStatus.RUNNING, attempt=1)
    return job_ids


def batches_sent(store: JobStore) -> int:
    return store._append_progress.batches_sent  # type: ignore[union-attr]


async def progress_of(store: JobStore, job_id: str) -> list[float]:
    events = await store.read_events(job_id, 0, 1000)
    return [json.loads(e.data)["progress"] for e in events if e.type == "progress"]


async def test_writes_of_one_turn_share_one_pipeline_and_each_gets_its_own_event_id(
    batching_store: JobStore,
) -> None:
    job_ids = await running_jobs(batching_store, 20)
    before = batches_sent(batching_store)
    ids = await asyncio.gather(
        *(batching_store.set_progress(job_id, attempt=1, progress=n) for n, job_id in enumerate(job_ids))
    )
    assert batches_sent(batching_store) == before + 1
    assert ids == [3] * 20  # queued = 1, running = 2: each job's own next id
    for n, job_id in enumerate(job_ids):
        assert await progress_of(batching_store, job_id) == [n]
        state = await batching_store.get(job_id)
        assert state is not None and state.progress == n and state.last_event_id == 3


async def test_writes_of_separate_turns_go_separately_in_order(batching_store: JobStore) -> None:
    (job_id,) = await running_jobs(batching_store, 1)
    before = batches_sent(batching_store)
    for value in (10, 20, 30):
        await batching_store.set_progress(job_id, attempt=1, progress=value)
    assert batches_sent(batching_store) == before + 3
    assert await progress_of(batching_store, job_id) == [10, 20, 30]


async def test_a_refused_write_fails_only_its_own_caller(batching_store: JobStore) -> None:
    finished, stale, fine = await running_jobs(batching_store, 3)
    await batching_store.set_status(finished, JobStatus.SUCCEEDED, attempt=1)
    results = await asyncio.gather(
        batching_store.set_progress(finished, attempt=1, progress=50),
        batching_store.set_progress(stale, attempt=2, progress=50),
        batching_store.set_progress(fine, attempt=1, progress=50),
        return_exceptions=True,
    )
    assert isinstance(results[0], JobAlreadyFinished)
    assert isinstance(results[1], StaleAttempt)
    assert results[2] == 3
    assert await progress_of(batching_store, fine) == [50]
    assert await progress_of(batching_store, stale) == []


async def test_a_script_error_reaches_only_its_own_caller(redis: Redis, batching_store: JobStore) -> None:
    broken, fine = await running_jobs(batching_store, 2)
    await redis.delete(keys.events_key(broken))
    await redis.set(keys.events_key(broken), "not a stream")  # XADD inside the script fails: WRONGTYPE
    results = await asyncio.gather(
        batching_store.set_progress(broken, attempt=1, progress=50),
        batching_store.set_progress(fine, attempt=1, progress=50),
        return_exceptions=True,
    )
    assert isinstance(results[0], ResponseError)
    assert results[1] == 3


async def test_redis_losing_its_script_cache_costs_nothing(redis: Redis, batching_store: JobStore) -> None:
    job_ids = await running_jobs(batching_store, 5)
    await redis.script_flush()  # as after a restart of a Redis without persistence
    ids = await asyncio.gather(
        *(batching_store.set_progress(job_id, attempt=1, progress=7) for job_id in job_ids)
    )
    assert ids == [3] * 5
    for job_id in job_ids:
        assert await progress_of(batching_store, job_id) == [7]


async def test_a_cancelled_caller_leaves_the_others_and_its_own_write_stands(
    batching_store: JobStore,
) -> None:
    first, second = await running_jobs(batching_store, 2)
    cancelled = asyncio.ensure_future(batching_store.set_progress(first, attempt=1, progress=40))
    kept = asyncio.ensure_future(batching_store.set_progress(second, attempt=1, progress=60))
    await asyncio.sleep(0)  # both calls are in the batch
    cancelled.cancel()
    assert await kept == 3
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    # Its write was already queued with the other, and went out: a cancelled caller does not undo it.
    assert await progress_of(batching_store, first) == [40]
    assert await progress_of(batching_store, second) == [60]
