"""Progress writes made while another is on its way go to Redis together, each with its own answer.

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
from jobpulse.script_batch import ScriptBatcher
from jobpulse.settings import Settings
from jobpulse.status import JobStatus
from jobpulse.store import JobAlreadyFinished, JobStore, StaleAttempt
from jobpulse.worker.redis_pool import worker_redis

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


def batcher(store: JobStore) -> ScriptBatcher:
    append = store._append_progress
    assert isinstance(append, ScriptBatcher)
    return append


async def progress_of(store: JobStore, job_id: str) -> list[float]:
    events = await store.read_events(job_id, 0, 1000)
    return [json.loads(e.data)["progress"] for e in events if e.type == "progress"]


async def test_writes_made_while_one_is_on_its_way_go_together_each_with_its_own_event_id(
    batching_store: JobStore,
) -> None:
    job_ids = await running_jobs(batching_store, 20)
    before = batcher(batching_store).sends
    ids = await asyncio.gather(
        *(batching_store.set_progress(job_id, attempt=1, progress=n) for n, job_id in enumerate(job_ids))
    )
    assert batcher(batching_store).sends == before + 2  # the first at once, the 19 behind it together
    assert ids == [3] * 20  # queued = 1, running = 2: each job's own next id
    for n, job_id in enumerate(job_ids):
        assert await progress_of(batching_store, job_id) == [n]
        state = await batching_store.get(job_id)
        assert state is not None and state.progress == n and state.last_event_id == 3


async def test_writes_one_after_another_each_go_at_once_in_order(batching_store: JobStore) -> None:
    (job_id,) = await running_jobs(batching_store, 1)
    before = batcher(batching_store).sends
    for value in (10, 20, 30):
        await batching_store.set_progress(job_id, attempt=1, progress=value)
    assert batcher(batching_store).sends == before + 3
    assert await progress_of(batching_store, job_id) == [10, 20, 30]


async def test_queued_writes_reach_redis_in_the_order_they_were_made(batching_store: JobStore) -> None:
    (job_id,) = await running_jobs(batching_store, 1)
    # Not how the reporter calls it (it awaits each write of a job), but the order must hold anyway.
    ids = await asyncio.gather(
        *(batching_store.set_progress(job_id, attempt=1, progress=value) for value in range(1, 31))
    )
    assert ids == list(range(3, 33))
    assert await progress_of(batching_store, job_id) == list(range(1, 31))


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
    first, broken, last = await running_jobs(batching_store, 3)
    await redis.delete(keys.events_key(broken))
    await redis.set(keys.events_key(broken), "not a stream")  # XADD inside the script fails: WRONGTYPE
    results = await asyncio.gather(
        batching_store.set_progress(first, attempt=1, progress=50),  # on its way at once
        batching_store.set_progress(broken, attempt=1, progress=50),  # these two queued: one pipeline
        batching_store.set_progress(last, attempt=1, progress=50),
        return_exceptions=True,
    )
    assert results[0] == 3
    assert isinstance(results[1], ResponseError)
    assert results[2] == 3


async def test_redis_losing_its_script_cache_costs_a_batch_nothing(
    redis: Redis, batching_store: JobStore
) -> None:
    job_ids = await running_jobs(batching_store, 5)
    append = batcher(batching_store)
    # Hold the queue as a send on its way would, so that all five go as one pipeline of EVALSHA.
    append._in_flight = True
    writes = [
        asyncio.ensure_future(batching_store.set_progress(job_id, attempt=1, progress=7))
        for job_id in job_ids
    ]
    await asyncio.sleep(0.01)
    assert not any(write.done() for write in writes)
    await redis.script_flush()  # as after a restart of a Redis without persistence
    append._send_next()  # the held send is answered
    assert await asyncio.gather(*writes) == [3] * 5
    for job_id in job_ids:
        assert await progress_of(batching_store, job_id) == [7]


async def test_a_cancelled_queued_caller_leaves_the_others_and_its_own_write_stands(
    batching_store: JobStore,
) -> None:
    first, second, third = await running_jobs(batching_store, 3)
    writes = [
        asyncio.ensure_future(batching_store.set_progress(job_id, attempt=1, progress=value))
        for job_id, value in ((first, 40), (second, 50), (third, 60))
    ]
    await asyncio.sleep(0)  # the first is on its way, the other two queued behind it
    writes[1].cancel()
    assert await writes[0] == 3
    assert await writes[2] == 3
    with pytest.raises(asyncio.CancelledError):
        await writes[1]
    # Its write was queued with the third, and went out: a cancelled caller does not undo it.
    assert await progress_of(batching_store, second) == [50]
    assert await progress_of(batching_store, third) == [60]
