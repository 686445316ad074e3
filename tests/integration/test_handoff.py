"""Streams taken over from uvicorn after their head (`web/handoff.py`), and the ASGI path they fall back to.

These run the app in a real uvicorn in this event loop, so they see the server's own bookkeeping: a
handed-off stream holds no request task and no entry in the server's connections, yet delivers every
event, ends the HTTP body properly and closes the connection.
"""

import asyncio
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from redis.asyncio import Redis

import web.app
from jobpulse.settings import Settings
from jobpulse.stack.redis_server import free_port
from jobpulse.web.services import Services
from tests.conftest import Stack, StackFactory
from tests.support.sse import Event, ids, read_events

pytestmark = pytest.mark.anyio


def _complete(events: list[Event]) -> bool:
    return ids(events) == list(range(1, len(events) + 1)) and events[-1].is_terminal


async def _watchers_open(services: Services, count: int) -> None:
    with anyio.fail_after(10):
        while services.hub.subscription_count < count:
            await anyio.sleep(0.01)


async def test_open_streams_hold_no_request_task_and_get_every_event(make_stack: StackFactory) -> None:
    stack = await make_stack(progress_interval_ms=0)
    job = await stack.submit(steps=200, interval_ms=2, start_delay_ms=3000)
    readers = [asyncio.create_task(read_events(stack.client, job["id"])) for _ in range(20)]
    await _watchers_open(stack.web.services, 20)
    state = stack.web.server.server_state
    # Every request has returned (a request task ends a moment after its response is handed off) ...
    with anyio.fail_after(2):
        while state.tasks:
            await anyio.sleep(0.01)
    # ... while every stream is still open, waiting for its job, and uvicorn holds no connection of theirs.
    assert stack.web.services.hub.subscription_count == 20
    assert not any(reader.done() for reader in readers)
    assert not state.connections
    results = await asyncio.gather(*readers)
    assert all(_complete(events) and len(events) == 203 for events in results)
    assert len({tuple(ids(events)) for events in results}) == 1


async def test_a_handed_off_stream_ends_its_body_and_closes_the_connection(stack: Stack) -> None:
    job = await stack.submit(steps=3, interval_ms=10)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.web.port)
    writer.write(f"GET /jobs/{job['id']}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    with anyio.fail_after(10):
        raw = await reader.read()  # to EOF: the server closes the connection after the last chunk
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    # Walk the chunked body: every chunk well framed, then the last chunk, then nothing.
    payload = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n"
            break
        payload, body = payload + body[:size], body[size + 2 :]
    assert payload.startswith(b": connected\n")
    blocks = [block.split(b"\n") for block in payload.split(b"\n\n") if block.strip()]
    event_ids = [int(line[4:]) for lines in blocks for line in lines if line.startswith(b"id: ")]
    assert len(event_ids) >= 3 and event_ids == list(range(1, len(event_ids) + 1))
    assert b"event: status" in blocks[-1] and b'"status":"succeeded"' in blocks[-1][-1]


@pytest.fixture
async def h11_server(settings: Settings, redis: Redis) -> AsyncIterator[tuple[uvicorn.Server, str]]:
    """The app on uvicorn's h11 protocol, which the handoff does not know: streams stay on ASGI."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            web.app.build(settings),
            host="127.0.0.1",
            port=port,
            http="h11",
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await anyio.sleep(0.01)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait({task}, timeout=10)


async def test_on_a_server_it_does_not_know_the_stream_stays_on_asgi(
    h11_server: tuple[uvicorn.Server, str], make_stack: StackFactory
) -> None:
    server, url = h11_server
    stack = await make_stack(progress_interval_ms=0)  # its worker runs the job; the h11 server streams it
    job = await stack.submit(steps=30, interval_ms=5, start_delay_ms=800)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        readers = [asyncio.create_task(read_events(client, job["id"])) for _ in range(3)]
        with anyio.fail_after(10):
            while len(server.server_state.tasks) < 3:
                await anyio.sleep(0.01)
        results = await asyncio.gather(*readers)
    assert all(_complete(events) and len(events) == 33 for events in results)
    app = server.config.app
    assert isinstance(app, FastAPI)
    services: Services = app.state.jobpulse
    assert services.counters.delivered == 3 * 33  # counted on this path too
