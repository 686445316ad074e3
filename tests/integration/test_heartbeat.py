"""Heartbeats and the stall reaper against a real Redis: who gets claimed, once, and who is left alone."""

import asyncio

import pytest
from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis

from jobpulse import keys
from jobpulse.ids import new_job_id
from jobpulse.settings import Settings
from jobpulse.stack.redis_server import RedisServer
from jobpulse.status import JobStatus
from jobpulse.store import JobStore
from jobpulse.worker.heartbeat import StallReaper, heartbeat
from tests.support.tcp_proxy import FreezableProxy
from worker.tasks import registry

pytestmark = pytest.mark.anyio


@pytest.fixture
def quick(settings: Settings) -> Settings:
    return settings.model_copy(update={"heartbeat_interval_s": 0.05, "stall_after_s": 0.3, "max_tries": 3})


async def running_job(store: JobStore, attempt: int = 1) -> str:
    job_id = new_job_id()
    await store.create(job_id, "simulate", {})
    await store.set_status(job_id, JobStatus.RUNNING, attempt=attempt)
    return job_id


async def test_an_attempt_beats_while_it_runs_and_is_forgotten_after(redis: Redis, quick: Settings) -> None:
    job_id = new_job_id()
    async with heartbeat(redis, job_id, 2, quick.heartbeat_interval_s):
        await asyncio.sleep(0.12)
        first = await redis.zscore(keys.running_attempts_key(), f"{job_id}:2")
        await asyncio.sleep(0.12)
        later = await redis.zscore(keys.running_attempts_key(), f"{job_id}:2")
        assert first is not None and later is not None and later > first
    assert await redis.zscore(keys.running_attempts_key(), f"{job_id}:2") is None


async def test_a_silent_attempt_is_retried_once_however_many_reapers(redis: Redis, quick: Settings) -> None:
    store = JobStore(redis, quick)
    job_id = await running_job(store)
    await redis.set(in_progress_key_prefix + job_id, b"1")
    async with heartbeat(redis, job_id, 1, quick.heartbeat_interval_s):
        pass  # one beat, then silence: the worker died
    await redis.zadd(keys.running_attempts_key(), {f"{job_id}:1": 0})  # long ago
    reapers = [StallReaper(redis, store, quick, registry) for _ in range(3)]
    claimed = await asyncio.gather(*(reaper.reap() for reaper in reapers))
    assert sorted(len(c) for c in claimed) == [0, 0, 1]
    state = await store.get(job_id)
    assert state is not None and state.status is JobStatus.RETRYING
    assert state.error == "stalled: the worker running attempt 1 stopped responding (no heartbeat for 0.3 s)"
    assert not await redis.exists(in_progress_key_prefix + job_id)  # any worker may run it now


async def test_a_live_attempt_is_left_alone(redis: Redis, quick: Settings) -> None:
    store = JobStore(redis, quick)
    job_id = await running_job(store)
    async with heartbeat(redis, job_id, 1, quick.heartbeat_interval_s):
        for _ in range(8):  # 0.4 s: longer than the stall limit, but beating all along
            await asyncio.sleep(0.05)
            assert await StallReaper(redis, store, quick, registry).reap() == []
    state = await store.get(job_id)
    assert state is not None and state.status is JobStatus.RUNNING


async def test_a_stale_attempt_of_a_job_that_moved_on_changes_nothing(redis: Redis, quick: Settings) -> None:
    """A worker that froze (not died) is reaped late: its job already runs as attempt 2 elsewhere."""
    store = JobStore(redis, quick)
    job_id = await running_job(store, attempt=2)
    await redis.set(in_progress_key_prefix + job_id, b"1")  # attempt 2's
    await redis.zadd(keys.running_attempts_key(), {f"{job_id}:1": 0})
    assert await StallReaper(redis, store, quick, registry).reap() == [f"{job_id}:1"]
    state = await store.get(job_id)
    assert state is not None and (state.status, state.attempt) == (JobStatus.RUNNING, 2)
    assert await redis.exists(in_progress_key_prefix + job_id)


async def test_the_last_attempt_stalling_fails_the_job(redis: Redis, quick: Settings) -> None:
    store = JobStore(redis, quick)
    job_id = await running_job(store, attempt=3)
    await redis.zadd(keys.running_attempts_key(), {f"{job_id}:3": 0})
    await StallReaper(redis, store, quick, registry).reap()
    state = await store.get(job_id)
    assert state is not None and state.status is JobStatus.FAILED
    assert state.error is not None and state.error.endswith("; gave up after 3 attempts")


def test_stall_limit_must_outlast_two_heartbeats() -> None:
    with pytest.raises(ValueError, match="at least twice JOBPULSE_HEARTBEAT_INTERVAL_S"):
        Settings(heartbeat_interval_s=5, stall_after_s=8)


async def test_after_an_outage_a_reaper_gives_live_workers_time_to_beat_again(
    redis: Redis, redis_server: RedisServer, quick: Settings
) -> None:
    """Redis gone for everyone for longer than the stall limit; the reaper is back before the worker is.

    The live attempt's last beat is stale by then, but it must not be taken for dead.
    """
    quick = quick.model_copy(update={"stall_after_s": 0.6})
    store = JobStore(redis, quick)
    job_id = await running_job(store)
    reaper_path, worker_path = FreezableProxy(redis_server.port), FreezableProxy(redis_server.port)
    for proxy in (reaper_path, worker_path):
        await proxy.start()
    reaper_redis = Redis.from_url(reaper_path.url, socket_connect_timeout=0.2, socket_timeout=0.2)
    worker_redis = Redis.from_url(worker_path.url, socket_connect_timeout=0.2, socket_timeout=0.2)
    reaper = StallReaper(reaper_redis, JobStore(reaper_redis, quick), quick, registry)
    reaper.start()
    try:
        async with heartbeat(worker_redis, job_id, 1, quick.heartbeat_interval_s):
            await asyncio.sleep(0.2)
            for proxy in (reaper_path, worker_path):
                await proxy.stop()  # the outage: connections cut, new ones refused
            await asyncio.sleep(1.0)  # longer than the stall limit
            reaper_path = await restarted(reaper_path)
            await asyncio.sleep(0.25)  # the reaper is back; the worker not yet
            worker_path = await restarted(worker_path)
            await asyncio.sleep(1.0)
        state = await store.get(job_id)
        assert state is not None and state.status is JobStatus.RUNNING, state
    finally:
        await reaper.stop()
        for client in (reaper_redis, worker_redis):
            await client.aclose()
        for proxy in (reaper_path, worker_path):
            await proxy.stop()


async def restarted(proxy: FreezableProxy) -> FreezableProxy:
    again = FreezableProxy(proxy.target_port)
    again.port = proxy.port
    await again.start()
    return again
