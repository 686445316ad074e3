"""The web side when Redis misbehaves: a silent connection, and Redis gone in the middle of a stream."""

import asyncio

import anyio
import httpx
import pytest

from jobpulse.settings import Settings
from jobpulse.stack.redis_server import RedisServer
from tests.conftest import WebServer, WorkerProcess
from tests.support.sse import ids, read_to_the_end
from tests.support.tcp_proxy import FreezableProxy

pytestmark = pytest.mark.anyio


def simulate(**params: int) -> dict[str, object]:
    return {"task": "simulate", "params": params}


async def test_silent_pubsub_connection_is_replaced_and_streams_complete(settings: Settings) -> None:
    """Regression: a connection that went silent without closing stalled every stream for ever."""
    proxy = FreezableProxy(int(settings.redis_url.rsplit(":", 1)[1].split("/")[0]))
    await proxy.start()
    # The web reaches Redis through the proxy; the worker directly.
    web = WebServer(settings.model_copy(update={"redis_url": proxy.url, "hub_ping_interval_s": 0.2}))
    worker = WorkerProcess(settings.model_copy(update={"progress_interval_ms": 0}))
    await web.start()
    await worker.start()
    try:
        async with httpx.AsyncClient(base_url=web.url, timeout=30) as client:
            response = await client.post("/jobs", json=simulate(steps=40, interval_ms=25, start_delay_ms=300))
            job_id = response.json()["id"]
            reader = asyncio.create_task(read_to_the_end(client, job_id, deadline_s=30))
            await anyio.sleep(0.5)
            proxy.freeze_open_connections()  # the hub's pub/sub connection among them
            events = await reader
        assert ids(events) == list(range(1, 44))
        assert web.services.hub.reconnects >= 1
    finally:
        await worker.stop()
        await web.stop()
        await proxy.stop()


async def test_redis_gone_mid_stream_ends_the_stream_with_a_retry_hint(settings: Settings) -> None:
    with RedisServer() as server:
        web = WebServer(settings.model_copy(update={"redis_url": server.url}))
        await web.start()
        try:
            async with httpx.AsyncClient(base_url=web.url, timeout=30) as client:
                response = await client.post("/jobs", json=simulate(steps=1, interval_ms=0))
                received = b""
                async with client.stream("GET", f"/jobs/{response.json()['id']}/events") as stream:
                    chunks = stream.aiter_bytes()
                    while b"event: status" not in received:
                        received += await chunks.__anext__()
                    server.stop()
                    for channel in web.services.hub._channels.values():
                        for subscription in channel.subscriptions:
                            subscription.mark_behind()  # it must read the stream, and Redis is gone
                    with anyio.fail_after(15):
                        async for chunk in chunks:
                            received += chunk
            assert received.endswith(b"retry: 250\n")
        finally:
            await web.stop()
