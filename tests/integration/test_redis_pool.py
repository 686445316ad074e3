"""The worker's Redis pool: a fixed number of connections, however many jobs publish at once."""

import asyncio
from typing import Any

import anyio
import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from jobpulse import queue_codec
from jobpulse.ids import new_job_id
from jobpulse.settings import Settings
from jobpulse.status import JobStatus
from jobpulse.store import JobStore
from jobpulse.worker.redis_pool import WORKER_CLIENT_NAME, HiredisPackingConnection, worker_redis
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.anyio


async def worker_connections(redis: Redis) -> int:
    return sum(1 for client in await redis.client_list() if client.get("name") == WORKER_CLIENT_NAME)


class PeakConnections:
    """Samples the worker's connection count on the test's Redis until stopped; keeps the highest."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, await worker_connections(self._redis))
            await asyncio.sleep(0.005)

    async def __aenter__(self) -> "PeakConnections":
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.peak = max(self.peak, await worker_connections(self._redis))


@pytest.mark.parametrize(
    "command",
    [
        ("EVALSHA", "0" * 40, 2, "k1", "k2", "append", "progress", '{"m":"é ✓\\n"}', "", 10_000, 1.5),
        ("SET", b"key", memoryview(b"value"), -3, 0.1 + 0.2, 1e-05, 10**20),
        ("CONFIG GET", "maxmemory"),  # a command of two words
        ("SET", "big", "x" * 100_000),  # the Python packer sends it in pieces
    ],
)
def test_hiredis_packs_the_bytes_redis_py_packs(command: tuple[Any, ...]) -> None:
    ours, theirs = HiredisPackingConnection(), Connection()
    assert b"".join(ours.pack_command(*command)) == b"".join(bytes(c) for c in theirs.pack_command(*command))


@pytest.mark.parametrize("bad", [None, True, object()])
def test_hiredis_packing_refuses_what_redis_py_refuses(bad: object) -> None:
    for connection in (HiredisPackingConnection(), Connection()):
        with pytest.raises(DataError):
            connection.pack_command("SET", "key", bad)  # type: ignore[arg-type]


async def test_concurrent_store_writes_share_the_pool(redis: Redis, settings: Settings) -> None:
    """200 writes at once through the worker's client wait for its 4 connections instead of opening more."""
    settings = settings.model_copy(update={"worker_redis_pool_size": 4})
    client = worker_redis(settings)
    try:
        store = JobStore(client, settings)
        jobs = [new_job_id() for _ in range(20)]
        for job_id in jobs:
            await store.create(job_id, "simulate", {})
            await store.set_status(job_id, JobStatus.RUNNING, attempt=1)
        async with PeakConnections(redis) as connections:
            await asyncio.gather(
                *(
                    store.set_progress(job_id, attempt=1, progress=step)
                    for step in range(10)
                    for job_id in jobs
                )
            )
        assert connections.peak == 4  # all of them used, none more
        for job_id in jobs:
            state = await store.get(job_id)
            assert state is not None and state.last_event_id == 2 + 10
    finally:
        await client.aclose()


async def test_the_worker_holds_its_pool_size_however_many_jobs_publish(
    redis: Redis, settings: Settings
) -> None:
    """Regression: the worker held one Redis connection per publishing job (50-60 in the fan-out benchmark).

    40 jobs publish every update (no coalescing) at once on a worker allowed 3 connections.
    """
    settings = settings.model_copy(
        update={"worker_redis_pool_size": 3, "max_jobs": 40, "progress_interval_ms": 0}
    )
    store = JobStore(redis, settings)
    queue = ArqRedis(
        connection_pool=redis.connection_pool,
        job_serializer=queue_codec.encode,
        job_deserializer=queue_codec.decode,
    )
    params: dict[str, Any] = {"steps": 50, "interval_ms": 0}
    jobs = [new_job_id() for _ in range(40)]
    for job_id in jobs:
        await store.create(job_id, "simulate", params)
        await queue.enqueue_job("simulate", params, _job_id=job_id, _queue_name=settings.queue_name)
    worker = WorkerProcess(settings)
    async with PeakConnections(redis) as connections:
        await worker.start()
        try:
            with anyio.fail_after(30):
                while True:
                    states = [await store.get(job_id) for job_id in jobs]
                    if all(state is not None and state.is_terminal for state in states):
                        break
                    await anyio.sleep(0.05)
        finally:
            await worker.stop()
    assert connections.peak == 3
    for state in states:
        assert state is not None and state.status is JobStatus.SUCCEEDED
        assert state.last_event_id == 1 + 1 + 50 + 1  # queued, running, every update, succeeded
