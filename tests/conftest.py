"""Fixtures: a private redis-server for the session, and a real stack (uvicorn + arq worker) per test.

The Redis server is started by the session on a free port with its own data directory; the suite never
talks to any other Redis and only flushes the database of the server it started.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
import uvicorn
from arq.worker import Worker
from fastapi import FastAPI
from redis.asyncio import Redis

import web.app
import worker
from jobpulse.settings import Settings
from jobpulse.stack.redis_server import RedisServer, free_port
from jobpulse.web.services import Services
from jobpulse.worker.lifecycle import STORE_KEY


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    await client.flushdb()  # the server is this session's own
    yield client
    await client.aclose()


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_server.url,
        queue_name=f"test:{uuid.uuid4().hex[:8]}",
        worker_poll_delay_s=0.05,
        keepalive_s=15,
        upload_dir=tmp_path / "uploads",
        # As in tests.support.processes.NO_CLIENT_LIMITS: the tests of the limits set their own.
        submissions_per_minute=0,
        max_streams_per_client=0,
    )


def _arq_finishing_tasks() -> list[asyncio.Task[Any]]:
    names = {"Worker.finish_job", "Worker.finish_failed_job"}
    return [task for task in asyncio.all_tasks() if getattr(task.get_coro(), "__qualname__", "") in names]


class WorkerProcess:
    """An arq worker running in this event loop: real arq, real Redis, stoppable and restartable."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker: Worker | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        kwargs: dict[str, Any] = worker.build(self.settings, owns_process=False)
        self.worker = Worker(**kwargs, handle_signals=False)
        self._task = asyncio.create_task(self.worker.async_run())
        while STORE_KEY not in self.worker.ctx:  # connected, and on_startup has run
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """Stop as arq does on SIGTERM: running jobs are cancelled (and re-queued by arq)."""
        # Not handle_sig(): it would also cancel arq's main loop wherever it is; see below.
        if self._task is not None and self.worker is not None:
            worker = self.worker
            for job in worker.tasks.values():
                job.cancel()  # what SIGTERM does to running jobs: arq re-queues them
            # Let arq's loop return by itself after its current poll: cancelling it mid-poll can strand a
            # pipeline holding a connection (an "Unclosed client session" warning at garbage collection).
            worker.allow_pick_jobs = False
            worker.burst, worker.max_burst_jobs = True, 0
            done, _ = await asyncio.wait({self._task}, timeout=self.settings.worker_poll_delay_s + 5)
            if not done:
                self._task.cancel()
            await asyncio.gather(*worker.tasks.values(), self._task, return_exceptions=True)
            # arq records a job's end in a shielded task that outlives the cancelled job: let it finish
            # before its connection pool goes away.
            await asyncio.gather(*_arq_finishing_tasks(), return_exceptions=True)
            if worker.on_shutdown is not None:
                await worker.on_shutdown(worker.ctx)
            await self.worker.pool.aclose()
        self._task = None


class WebServer:
    """An app served by a real uvicorn on a free port in this event loop: by default the reference
    service's for `settings`, or any app that includes jobpulse's router (`app=`)."""

    def __init__(self, settings: Settings, app: FastAPI | None = None) -> None:
        self.settings = settings
        self.app = app if app is not None else web.app.build(settings)
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1
            )
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def services(self) -> Services:
        services: Services = self.app.state.jobpulse
        return services

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=10)
            assert done, "uvicorn did not stop within 10 s"


@dataclass
class Stack:
    settings: Settings
    web: WebServer
    worker: WorkerProcess
    client: httpx.AsyncClient
    redis: Redis

    async def submit(self, task: str = "simulate", **params: Any) -> dict[str, Any]:
        response = await self.client.post("/jobs", json={"task": task, "params": params})
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    async def job(self, job_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


async def start_stack(settings: Settings, redis: Redis, *, with_worker: bool = True) -> Stack:
    web = WebServer(settings)
    await web.start()
    worker = WorkerProcess(settings)
    if with_worker:
        await worker.start()
    client = httpx.AsyncClient(
        base_url=web.url,
        timeout=httpx.Timeout(30),
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000),
    )
    return Stack(settings, web, worker, client, redis)


async def stop_stack(stack: Stack) -> None:
    await stack.client.aclose()
    await stack.worker.stop()
    await stack.web.stop()


class StackFactory(Protocol):
    async def __call__(self, *, with_worker: bool = True, **settings: Any) -> Stack: ...


@pytest.fixture
async def make_stack(settings: Settings, redis: Redis) -> AsyncIterator[StackFactory]:
    """Starts stacks with some settings changed; stops them all when the test ends."""
    started: list[Stack] = []

    async def make(*, with_worker: bool = True, **changes: Any) -> Stack:
        stack = await start_stack(settings.model_copy(update=changes), redis, with_worker=with_worker)
        started.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in reversed(started):
            await stop_stack(stack)


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()
