"""Cost does not grow with watchers: 300 subscribers, one pub/sub connection, identical histories."""

import asyncio
from typing import Any

import anyio
import pytest

from jobpulse.web.services import WEB_CLIENT_NAME
from tests.conftest import Stack, StackFactory
from tests.support.sse import ids, read_events

pytestmark = pytest.mark.anyio


async def web_connections(redis: Any) -> int:
    clients = await redis.client_list()
    return sum(1 for client in clients if client.get("name") == WEB_CLIENT_NAME)


async def test_300_subscribers_add_no_redis_connections(make_stack: StackFactory) -> None:
    stack = await make_stack(progress_interval_ms=0)
    job = await stack.submit(steps=50, interval_ms=20, start_delay_ms=3000)
    # A first watcher warms the process up: the hub's connection and the command pool.
    first = asyncio.create_task(read_events(stack.client, job["id"]))
    with anyio.fail_after(5):
        while stack.web.services.hub.subscription_count < 1:
            await anyio.sleep(0.01)
    await anyio.sleep(0.2)
    baseline = await web_connections(stack.redis)
    assert 1 <= baseline <= stack.settings.redis_pool_size + 1

    readers = [asyncio.create_task(read_events(stack.client, job["id"])) for _ in range(299)]
    with anyio.fail_after(20):
        while stack.web.services.hub.subscription_count < 300:
            await anyio.sleep(0.05)
    during = await web_connections(stack.redis)
    assert during <= stack.settings.redis_pool_size + 1, "connections grew with subscribers"
    pubsub = [
        c for c in await stack.redis.client_list() if c.get("name") == WEB_CLIENT_NAME and int(c["sub"]) > 0
    ]
    assert len(pubsub) == 1  # one pub/sub connection for all 300
    assert stack.web.services.hub.channel_count == 1

    histories = await asyncio.gather(first, *readers)
    for history in histories:
        assert history == histories[0]
    assert ids(histories[0]) == list(range(1, 54))
    assert await web_connections(stack.redis) <= stack.settings.redis_pool_size + 1


async def test_each_live_event_is_encoded_once_for_all_subscribers(stack: Stack) -> None:
    job = await stack.submit(steps=1, interval_ms=0, start_delay_ms=60_000)
    with anyio.fail_after(5):
        while (await stack.job(job["id"]))["status"] != "running":
            await anyio.sleep(0.02)
    hub = stack.web.services.hub
    subscriptions = [await hub.open(job["id"], after=2) for _ in range(3)]
    try:
        for subscription in subscriptions:
            assert await subscription.next_chunk(0.05) == b""  # caught up, nothing new yet
        await stack.web.services.store.set_progress(job["id"], attempt=1, progress=50)
        with anyio.fail_after(5):
            while not all(subscription._queue for subscription in subscriptions):
                await anyio.sleep(0.01)
        events = [subscription._queue[0] for subscription in subscriptions]
        assert events[0].id == 3  # queued, running, then this one
        assert all(event is events[0] for event in events)  # one parsed event, shared
        chunks = [await subscription.next_chunk(1) for subscription in subscriptions]
        assert all(chunk is chunks[0] for chunk in chunks)  # one encoding, shared
    finally:
        for subscription in subscriptions:
            hub.release(subscription)
