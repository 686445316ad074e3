"""One web process keeps a constant number of connections to each shard, however many streams it serves."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import anyio
import httpx
import pytest

from jobpulse.stack.redis_cluster import RedisCluster
from jobpulse.web.services import WEB_CLIENT_NAME
from tests.cluster.conftest import SlotOwners, submit, web_connections
from tests.conftest import StackFactory

pytestmark = pytest.mark.anyio

logger = logging.getLogger(__name__)

POOL_SIZE = 4


async def open_stream(
    exits: AsyncExitStack, client: httpx.AsyncClient, job_id: str, held: list[AsyncIterator[bytes]]
) -> None:
    """A stream held open until the test ends, read up to its first event (the hub has subscribed).

    Its byte iterator is kept in `held`: one left to the garbage collector would close the stream."""
    response = await exits.enter_async_context(client.stream("GET", f"/jobs/{job_id}/events"))
    assert response.status_code == 200
    received = b""
    chunks = response.aiter_bytes()
    held.append(chunks)
    while b"event: status" not in received:
        received += await anext(chunks)


async def test_connections_per_shard_stay_bounded_from_20_to_200_streams(
    make_cluster_stack: StackFactory, redis_cluster: RedisCluster
) -> None:
    """`JOBPULSE_REDIS_POOL_SIZE` connections per primary for commands and one for its sharded pub/sub."""
    with anyio.fail_after(5):  # earlier tests' web processes have let go of theirs
        while any((await web_connections(redis_cluster, WEB_CLIENT_NAME)).values()):
            await anyio.sleep(0.05)
    stack = await make_cluster_stack(with_worker=False, redis_pool_size=POOL_SIZE)
    hub = stack.web.services.hub
    # Jobs that wait on the queue (no worker): their streams stay open.
    jobs = list(await asyncio.gather(*(submit(stack.client, steps=1, interval_ms=0) for _ in range(200))))
    owners = SlotOwners(redis_cluster)
    shard_of = {job_id: owners.port_of(job_id) for job_id in jobs}
    # The first 20 to be watched hold a job of every shard.
    firsts = {
        port: next(job_id for job_id in jobs if shard_of[job_id] == port) for port in set(shard_of.values())
    }
    assert len(firsts) == redis_cluster.primary_count
    jobs = [*firsts.values(), *(job_id for job_id in jobs if job_id not in firsts.values())]
    seen: dict[int, list[int]] = {}
    held: list[AsyncIterator[bytes]] = []
    async with AsyncExitStack() as exits:
        # A client of their own, without the submissions' idle keep-alive connections: uvicorn closes those
        # after its 5 s keep-alive timeout, just when httpx (its expiry is 5 s too) may hand one to a stream.
        streams = await exits.enter_async_context(
            httpx.AsyncClient(base_url=stack.web.url, timeout=30, limits=httpx.Limits(max_connections=1000))
        )
        for opened, count in ((0, 20), (20, 200)):
            with anyio.fail_after(30):
                await asyncio.gather(
                    *(open_stream(exits, streams, job_id, held) for job_id in jobs[opened:count])
                )
                while hub.subscription_count < count:
                    await anyio.sleep(0.01)
            connections = await web_connections(redis_cluster, WEB_CLIENT_NAME)
            assert len(connections) == redis_cluster.primary_count
            seen[count] = [len(named) for named in connections.values()]
            for port, named in connections.items():
                assert len(named) <= POOL_SIZE + 1, (count, port, named)
                # One connection per shard holds every sharded subscription there, one per job on it.
                subscribers = [c for c in named if int(c.get("ssub", 0)) > 0]
                assert len(subscribers) == 1, (count, port, named)
                assert int(subscribers[0]["ssub"]) == sum(shard_of[j] == port for j in jobs[:count]), (
                    subscribers
                )
                assert not any(int(c.get("sub", 0)) or int(c.get("psub", 0)) for c in named), named
    logger.info("jobpulse-web connections per primary, by streams open: %s", seen)
