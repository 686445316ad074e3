"""Two Redis roles on two single nodes: the job store on `REDIS_URL`, arq's queue on its own
(`JOBPULSE_QUEUE_REDIS_URL`). Each key lands on the Redis of its role, and a job runs, streams, is
cancelled and is counted as on one Redis. (The same split with the store on a cluster: tests/cluster.)"""

import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from arq.constants import job_key_prefix, result_key_prefix
from redis.asyncio import Redis

from jobpulse import keys
from jobpulse.settings import Settings
from jobpulse.stack.redis_server import RedisServer
from tests.conftest import StackFactory
from tests.support.sse import read_events

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def queue_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def queue_redis(queue_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(queue_server.url)
    yield client
    await client.aclose()


async def test_each_key_lives_on_the_redis_of_its_role(
    make_stack: StackFactory, redis: Redis, queue_redis: Redis, queue_server: RedisServer
) -> None:
    stack = await make_stack(queue_redis_url=queue_server.url)
    queue_name = stack.settings.queue_name
    job = await stack.submit(steps=3, interval_ms=10)
    events = await read_events(stack.client, job["id"])
    assert [e.data.get("status") for e in events if e.event == "status"] == ["queued", "running", "succeeded"]
    assert [e.id for e in events] == [str(n) for n in range(1, len(events) + 1)]

    job_id = job["id"]
    # The job's state and history: the store's Redis only.
    assert await redis.exists(keys.state_key(job_id), keys.events_key(job_id)) == 2
    assert await queue_redis.exists(keys.state_key(job_id), keys.events_key(job_id)) == 0
    # arq's result (written just after our final event) and the workers' bookkeeping: the queue's only.
    with anyio.fail_after(5):
        while not await queue_redis.exists(result_key_prefix + job_id):
            await anyio.sleep(0.01)
    assert await redis.exists(result_key_prefix + job_id, job_key_prefix + job_id) == 0
    assert await redis.exists(keys.unfinished_jobs_key(queue_name), queue_name) == 0


async def test_a_job_waiting_on_the_queue_is_filed_there_and_cancelled_through_both(
    make_stack: StackFactory, redis: Redis, queue_redis: Redis, queue_server: RedisServer
) -> None:
    stack = await make_stack(with_worker=False, queue_redis_url=queue_server.url)
    queue_name = stack.settings.queue_name
    job = await stack.submit(steps=3, interval_ms=10)
    job_id = job["id"]
    assert await queue_redis.zscore(queue_name, job_id) is not None  # arq's queue
    assert await queue_redis.zscore(keys.unfinished_jobs_key(queue_name), job_id) is not None  # the index
    assert await redis.exists(job_key_prefix + job_id, queue_name) == 0

    response = await stack.client.delete(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    # The final status took it out of the index, after it was written.
    assert await queue_redis.zscore(keys.unfinished_jobs_key(queue_name), job_id) is None
    ready = await stack.client.get("/readyz")
    assert ready.status_code == 200, ready.text


async def test_readiness_needs_both(make_stack: StackFactory, queue_server: RedisServer) -> None:
    """The queue's Redis gone: the process cannot take jobs, so it says it is not ready."""
    dead = RedisServer()
    stack = await make_stack(with_worker=False, queue_redis_url=dead.url, redis_timeout_s=0.5)
    ready = await stack.client.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.json()["redis"] == "unavailable"


def test_a_cluster_needs_a_queue_redis_of_its_own() -> None:
    with pytest.raises(ValueError, match="JOBPULSE_QUEUE_REDIS_URL"):
        Settings(redis_url="redis://127.0.0.1:1/0", redis_cluster=True)
    settings = Settings(redis_url="redis://a:1/0", redis_cluster=True, queue_redis_url="redis://b:2/0")
    assert (settings.queue_url, settings.queue_apart) == ("redis://b:2/0", True)
    assert Settings(queue_redis_url="").queue_redis_url is None  # compose passes unset variables as ""
    one = Settings(redis_url=f"redis://127.0.0.1:{uuid.uuid4().int % 1000 + 1}/0")
    assert (one.queue_url, one.queue_apart) == (one.redis_url, False)
