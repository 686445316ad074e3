"""`jobs_router` inside a user's own FastAPI app, under a prefix, on a real uvicorn with a real worker.

What the user's app keeps (its routes, middleware, exception handlers, OpenAPI, logging) and what the
router brings (job routes under the prefix, `Location`/`events_url`/`lost` carrying it, `JobsDep`, the
stream lane in front of the app: streams handed off the ASGI path when every middleware is head-only).
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from redis.asyncio import Redis

import worker.tasks
from jobpulse.settings import Settings
from jobpulse.web import JobsDep, jobs_router, mark_head_only
from tests.conftest import WebServer, WorkerProcess
from tests.support.sse import ids, read_events

pytestmark = pytest.mark.anyio

PREFIX = "/api"


class Teapot(Exception):
    """The user's own error, answered by the user's own handler."""


class Tagged:
    """A pure ASGI middleware of the user's own that adds a response header (head only)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-mine", b"yes"))
            await send(message)

        await self.app(scope, receive, tagged if scope["type"] == "http" else send)


def user_app(settings: Settings, *, middleware: str) -> FastAPI:
    """A user's app: a route, an error handler and a middleware of its own, and the router at /api."""
    app = FastAPI(title="my shop")

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/teapot")
    async def teapot() -> None:
        raise Teapot

    @app.exception_handler(Teapot)
    async def teapot_handler(request: Request, exc: Teapot) -> JSONResponse:
        return JSONResponse({"mine": "teapot"}, status_code=418)

    @app.post("/checkout")
    async def checkout(jobs: JobsDep, steps: int = 3) -> dict[str, Any]:
        job = await jobs.submit("simulate", {"steps": steps, "interval_ms": 5})
        return {"job": job.id, "events_url": job.events_url, "status": job.status}

    if middleware == "http":

        @app.middleware("http")
        async def timing(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            response = await call_next(request)
            response.headers["x-mine"] = "yes"
            return response

    elif middleware == "head-only":
        app.add_middleware(Tagged)
    app.include_router(jobs_router(worker.tasks.registry, settings=settings), prefix=PREFIX)
    return app


@pytest.fixture
async def serve(settings: Settings, redis: Redis) -> AsyncIterator[Callable[..., Awaitable[WebServer]]]:
    started: list[WebServer] = []
    workers: list[WorkerProcess] = []

    async def start(middleware: str = "none", **changes: Any) -> WebServer:
        changed = settings.model_copy(update={"progress_interval_ms": 0, **changes})
        server = WebServer(changed, app=user_app(changed, middleware=middleware))
        await server.start()
        started.append(server)
        process = WorkerProcess(changed)
        await process.start()
        workers.append(process)
        return server

    try:
        yield start
    finally:
        for process in workers:
            await process.stop()
        for server in started:
            await server.stop()


def client(server: WebServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=20)


async def submit(http: httpx.AsyncClient, **params: Any) -> httpx.Response:
    return await http.post(f"{PREFIX}/jobs", json={"task": "simulate", "params": params})


async def test_job_routes_answer_under_the_prefix_and_point_at_it(serve: Any) -> None:
    server = await serve()
    async with client(server) as http:
        response = await submit(http, steps=5, interval_ms=5)
        assert response.status_code == 202, response.text
        job = response.json()
        assert response.headers["location"] == f"{PREFIX}/jobs/{job['id']}"
        assert job["events_url"] == f"{PREFIX}/jobs/{job['id']}/events"
        events = await read_events(http, job["id"], path=job["events_url"])
        assert ids(events) == list(range(1, 9)) and events[-1].data["status"] == "succeeded"
        state = await http.get(f"{PREFIX}/jobs/{job['id']}")
        assert state.json()["events_url"] == job["events_url"]
        script = await http.get(f"{PREFIX}/static/jobpulse.js")
        assert script.status_code == 200 and "export function watchJob" in script.text
        # Nothing of jobpulse at the root: the prefix is where it lives.
        assert (await http.post("/jobs", json={"task": "simulate", "params": {}})).status_code == 404
        assert (await http.get(f"/jobs/{job['id']}/events")).status_code == 404


async def test_a_lost_event_names_the_prefixed_stream(serve: Any) -> None:
    server = await serve(stream_maxlen=10)
    async with client(server) as http:
        job = (await submit(http, steps=30, interval_ms=1)).json()
        await http.get(f"{PREFIX}/jobs/{job['id']}", params={"wait": 20})
        resumed = await read_events(http, job["id"], path=job["events_url"], last_event_id="2")
    lost = [event for event in resumed if event.event == "lost"]
    assert lost and lost[0].data["job"]["events_url"] == f"{PREFIX}/jobs/{job['id']}/events"


async def test_the_users_app_keeps_its_routes_handlers_and_openapi(serve: Any) -> None:
    server = await serve(middleware="http")
    async with client(server) as http:
        assert (await http.get("/hello")).json() == {"hello": "world"}
        teapot = await http.get("/teapot")
        assert (teapot.status_code, teapot.json()) == (418, {"mine": "teapot"})
        # The user's own 422 is FastAPI's, untouched; jobpulse's keep their own shape.
        theirs = await http.post("/checkout", params={"steps": "many"})
        assert theirs.status_code == 422 and "input" in theirs.json()["detail"][0]
        ours = await http.get(f"{PREFIX}/jobs/x", params={"wait": "soon"})
        assert ours.status_code == 422 and set(ours.json()["detail"][0]) == {"loc", "msg", "type"}
        unknown = await http.get(f"{PREFIX}/jobs/nope")
        assert unknown.status_code == 404 and "'nope'" in unknown.json()["detail"]
        schema = (await http.get("/openapi.json")).json()
    assert schema["info"]["title"] == "my shop"
    assert {"/hello", f"{PREFIX}/jobs", f"{PREFIX}/jobs/{{job_id}}/events"} <= set(schema["paths"])
    components = schema.get("components", {}).get("schemas", {})
    refs = _refs(schema)
    assert refs and all(ref.removeprefix("#/components/schemas/") in components for ref in refs), refs


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node))
    return set()


async def test_jobsdep_starts_a_job_from_the_users_own_route(serve: Any) -> None:
    server = await serve()
    async with client(server) as http:
        started = (await http.post("/checkout", params={"steps": 2})).json()
        assert started["events_url"] == f"{PREFIX}/jobs/{started['job']}/events"
        assert started["status"] == "queued"
        events = await read_events(http, started["job"], path=started["events_url"])
        assert events[-1].data["status"] == "succeeded"
        bad = await http.post("/checkout", params={"steps": 0})
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["params", "steps"]


async def test_the_users_middleware_runs_on_streams_too(serve: Any) -> None:
    server = await serve(middleware="http")
    async with client(server) as http:
        job = (await submit(http, steps=2, interval_ms=5)).json()
        async with http.stream("GET", job["events_url"]) as response:
            assert response.headers["x-mine"] == "yes"
            assert response.headers["content-type"].startswith("text/event-stream")
            await response.aread()


async def _open_streams(http: httpx.AsyncClient, server: WebServer, count: int) -> list[Any]:
    job = (await submit(http, steps=50, interval_ms=2, start_delay_ms=1500)).json()
    readers = [
        asyncio.create_task(read_events(http, job["id"], path=job["events_url"])) for _ in range(count)
    ]
    hub = server.services.hub
    with anyio.fail_after(10):
        while hub.subscription_count < count:
            await anyio.sleep(0.01)
    return readers


@pytest.mark.parametrize("middleware", ["none", "head-only"])
async def test_streams_are_handed_off_behind_head_only_middleware(serve: Any, middleware: str) -> None:
    """The fast path in a user's app: no request task or uvicorn connection per open stream. Fails, not
    falls back, if the lane is not installed or uvicorn's internals moved (see streaming/handoff.py)."""
    if middleware == "head-only":
        mark_head_only(Tagged)
    server = await serve(middleware=middleware)
    async with client(server) as http:
        readers = await _open_streams(http, server, 5)
        state = server.server.server_state
        with anyio.fail_after(3):
            while state.tasks:
                await anyio.sleep(0.01)
        assert not state.connections and not any(reader.done() for reader in readers)
        results = await asyncio.gather(*readers)
    assert all(ids(events) == list(range(1, 54)) for events in results)


async def test_behind_other_middleware_streams_stay_on_asgi_and_still_deliver(serve: Any) -> None:
    server = await serve(middleware="http")
    async with client(server) as http:
        readers = await _open_streams(http, server, 3)
        assert len(server.server.server_state.tasks) >= 3  # each stream still holds its request task
        results = await asyncio.gather(*readers)
    assert all(ids(events) == list(range(1, 54)) for events in results)


async def test_the_hosts_logging_is_left_as_it_is(serve: Any) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level, [h.formatter for h in root.handlers])
    await serve()
    assert (list(root.handlers), root.level, [h.formatter for h in root.handlers]) == before
