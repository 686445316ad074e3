"""The stream lane behind a user's `@app.middleware("http")` functions, on a real uvicorn and worker.

Such a function is Starlette's `BaseHTTPMiddleware`, which relays the response through a task of its own
and passes the head on only after the function returns; `mark_head_only(the_function)` declares that it
leaves bodies alone, and then streams behind it are handed off the ASGI path like any other.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request, Response
from redis.asyncio import Redis

import worker.tasks
from jobpulse.settings import Settings
from jobpulse.web import jobs_router, mark_head_only
from tests.conftest import WebServer, WorkerProcess
from tests.support.sse import ids, read_events

pytestmark = pytest.mark.anyio

PREFIX = "/api"
CallNext = Callable[[Request], Awaitable[Response]]


def shop(settings: Settings, *, mark_request_id: bool, with_timing: bool = False) -> FastAPI:
    """A user's app with an `X-Request-ID` middleware function (marked head-only or not) and, if
    `with_timing`, a second, unmarked one."""
    app = FastAPI()

    async def request_id(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        await asyncio.sleep(0.01)  # the head reaches the server a while after the stream sent it
        response.headers["X-Request-ID"] = uuid.uuid4().hex
        return response

    async def timing(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        response.headers["X-Timing"] = "1"
        return response

    if mark_request_id:
        mark_head_only(request_id)
    app.middleware("http")(request_id)
    if with_timing:
        app.middleware("http")(timing)
    app.include_router(jobs_router(worker.tasks.registry, settings=settings), prefix=PREFIX)
    return app


@pytest.fixture
async def serve(settings: Settings, redis: Redis) -> AsyncIterator[Callable[..., Awaitable[WebServer]]]:
    started: list[tuple[WebServer, WorkerProcess]] = []
    changed = settings.model_copy(update={"progress_interval_ms": 0})

    async def start(**shop_options: Any) -> WebServer:
        server = WebServer(changed, app=shop(changed, **shop_options))
        await server.start()
        process = WorkerProcess(changed)
        started.append((server, process))
        await process.start()
        return server

    try:
        yield start
    finally:
        for server, process in started:
            await process.stop()
            await server.stop()


async def _open_streams(http: httpx.AsyncClient, server: WebServer, count: int) -> list[Any]:
    response = await http.post(
        f"{PREFIX}/jobs",
        json={"task": "simulate", "params": {"steps": 50, "interval_ms": 2, "start_delay_ms": 1500}},
    )
    job = response.json()
    readers = [
        asyncio.create_task(read_events(http, job["id"], path=job["events_url"])) for _ in range(count)
    ]
    with anyio.fail_after(10):
        while server.services.hub.subscription_count < count:
            await anyio.sleep(0.01)
    return readers


async def test_streams_behind_a_marked_http_middleware_function_are_handed_off(serve: Any) -> None:
    """Regression: behind `@app.middleware("http")` every stream stayed on the ASGI path (39 KiB and a
    request task per open stream, docs/PERFORMANCE.md), marked or not: the function could not be marked
    (only its class, BaseHTTPMiddleware, shared by all of them), and the handoff came before the
    middleware's task had passed the head on to uvicorn, so it always declined."""
    server = await serve(mark_request_id=True)
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        readers = await _open_streams(http, server, 5)
        state = server.server.server_state
        with anyio.fail_after(3):
            while state.tasks:
                await anyio.sleep(0.01)
        assert not state.connections and not any(reader.done() for reader in readers)
        results = await asyncio.gather(*readers)
        params = {"steps": 1, "interval_ms": 1}
        job = (await http.post(f"{PREFIX}/jobs", json={"task": "simulate", "params": params})).json()
        async with http.stream("GET", job["events_url"]) as response:
            assert len(response.headers["x-request-id"]) == 32  # the middleware still set the head
            await response.aread()
    assert all(ids(events) == list(range(1, 54)) for events in results)


async def test_marking_one_middleware_function_leaves_streams_behind_another_on_asgi(serve: Any) -> None:
    server = await serve(mark_request_id=True, with_timing=True)
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        readers = await _open_streams(http, server, 3)
        assert len(server.server.server_state.tasks) >= 3  # each stream still holds its request task
        results = await asyncio.gather(*readers)
    assert all(ids(events) == list(range(1, 54)) for events in results)
