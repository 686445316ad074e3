"""Stopping is prompt in every state (issue 18): SIGTERM/SIGINT end each process within 2 s, Redis or not.

Real processes, each stop timed from the signal. Redis is "refused" (its server stopped: connects fail at
once) or "black-holed" (every open connection frozen and new ones accepted by a listener that never
answers, like a dead network path). The worker keeps `JOBPULSE_REDIS_RECONNECT_S` at its default (60 s):
the bug was that a stopping worker kept retrying Redis for that long (about 60 s refused, for ever
black-holed: arq's health-check `DEL` waits on a frozen connection with no timeout).
"""

import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from redis.asyncio import Redis

from jobpulse import keys
from jobpulse.registry import import_registry
from jobpulse.settings import Settings
from jobpulse.stack.redis_server import RedisServer, free_port
from jobpulse.status import JobStatus
from jobpulse.web.jobs import Jobs
from jobpulse.web.services import Services
from tests.support.processes import (
    ROOT,
    Process,
    process_env,
    wait_until_serving,
    web_process,
    worker_process,
)
from tests.support.tcp_proxy import FreezableProxy

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PROMPT_S = 2.0


def _env(redis_url: str, queue: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    # No JOBPULSE_REDIS_RECONNECT_S: its default (60 s) is what a stop used to wait out.
    return process_env(
        redis_url,
        JOBPULSE_QUEUE_NAME=queue,
        JOBPULSE_UPLOAD_DIR=str(tmp_path / "uploads"),
        JOBPULSE_WORKER_POLL_DELAY_S="0.05",
        JOBPULSE_PROGRESS_INTERVAL_MS="0",
        **extra,
    )


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to be stopped under the processes (append-only: it can return)."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(appendonly=True, directory=tmp_path / "redis").start()
    yield server
    server.cleanup()


@pytest.fixture
def queue() -> str:
    return f"stop:{uuid.uuid4().hex[:8]}"


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


@asynccontextmanager
async def proxy_to(server: RedisServer) -> AsyncIterator[FreezableProxy]:
    proxy = FreezableProxy(server.port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@contextmanager
def black_holed(proxy: FreezableProxy) -> Iterator[None]:
    """Every connection through `proxy` frozen, and new ones accepted by the kernel and never answered."""
    proxy.freeze_open_connections()
    assert proxy._server is not None
    proxy._server.close()  # stop taking connections on the proxy's port: a silent listener takes it over
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.1", proxy.port))
    silent.listen(64)
    try:
        yield
    finally:
        silent.close()


async def started_worker(env: dict[str, str], log: Path, redis: Redis, started: list[Process]) -> Process:
    """A real `arq worker.WorkerSettings`, once it polls (it has written its health-check key)."""
    worker = worker_process(env, log).start()
    started.append(worker)
    health = keys.worker_health_check_key(env["JOBPULSE_QUEUE_NAME"], socket.gethostname())
    with anyio.fail_after(20):
        while not await redis.exists(health):
            assert worker.popen is not None and worker.popen.poll() is None, worker.output()
            await anyio.sleep(0.05)
    return worker


async def stop_time(process: Process, signum: int = signal.SIGTERM, limit_s: float = 10) -> tuple[float, int]:
    """Seconds from `signum` to the process's exit, and its exit code; fails after `limit_s`."""
    signalled = time.monotonic()
    process.signal(signum)
    deadline = signalled + limit_s
    assert process.popen is not None
    while (code := process.popen.poll()) is None:
        assert time.monotonic() < deadline, (
            f"still running {limit_s:g} s after the signal:\n{process.output()}"
        )
        await anyio.sleep(0.01)
    return time.monotonic() - signalled, code


@asynccontextmanager
async def jobs_of(redis_url: str, queue: str) -> AsyncIterator[tuple[Jobs, Services]]:
    """Submitting as the web does, from this process (the reference service's tasks)."""
    settings = Settings(redis_url=redis_url, queue_name=queue, submissions_per_minute=0)
    services = await Services.start(settings, import_registry("worker.tasks:registry"))
    try:
        yield Jobs(services), services
    finally:
        await services.stop()


async def running_job(redis_url: str, queue: str, *, steps: int, interval_ms: int) -> str:
    """A `simulate` job submitted and seen `running` with some progress."""
    async with jobs_of(redis_url, queue) as (jobs, services):
        job_id = (await jobs.submit("simulate", {"steps": steps, "interval_ms": interval_ms})).id
        with anyio.fail_after(20):
            while (state := await services.store.get(job_id)) is None or state.progress < 5:
                await anyio.sleep(0.05)
        assert state.status is JobStatus.RUNNING
    return job_id


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_worker_reconnecting_to_a_stopped_redis_stops_at_once(
    own_redis: RedisServer, queue: str, tmp_path: Path, processes: list[Process], signum: int
) -> None:
    """Regression: with Redis stopped, SIGTERM took 59.8 s (the whole reconnect window)."""
    async with Redis.from_url(own_redis.url) as redis:
        worker = await started_worker(
            _env(own_redis.url, queue, tmp_path), tmp_path / "w.log", redis, processes
        )
    await anyio.sleep(0.3)  # its start-up cron job (the upload sweeper) has put away its result
    own_redis.stop()
    await anyio.sleep(1)  # its poll loop is retrying by now, for up to 60 s
    assert worker.popen is not None and worker.popen.poll() is None, worker.output()
    seconds, code = await stop_time(worker, signum)
    assert seconds < PROMPT_S, worker.output()
    assert code == 0, worker.output()  # a clean stop: its shutdown hooks ran


async def test_worker_mid_job_stops_at_once_without_redis_and_leaves_the_job_to_the_reaper(
    own_redis: RedisServer, queue: str, tmp_path: Path, processes: list[Process]
) -> None:
    """Regression: a job's own interruption writes (5 s each) and then the reconnect window, about 70 s."""
    async with Redis.from_url(own_redis.url) as redis:
        worker = await started_worker(
            _env(own_redis.url, queue, tmp_path), tmp_path / "w.log", redis, processes
        )
    job_id = await running_job(own_redis.url, queue, steps=400, interval_ms=50)
    own_redis.stop()
    seconds, _ = await stop_time(worker)  # exits 1: arq could not put the job back on the queue
    assert seconds < PROMPT_S, worker.output()
    # As after SIGKILL: the job is still `running` with its attempt's heartbeat, which the reaper reclaims.
    port = own_redis.port
    back = RedisServer(port, appendonly=True, directory=tmp_path / "redis").start()
    try:
        async with Redis.from_url(back.url) as redis:
            assert await redis.zscore(keys.running_attempts_key(), f"{job_id}:1") is not None
            assert (await redis.hget(keys.state_key(job_id), "status")) == b"running"
    finally:
        back.stop()


async def test_worker_mid_job_stops_at_once_when_redis_is_black_holed(
    own_redis: RedisServer, queue: str, tmp_path: Path, processes: list[Process]
) -> None:
    """Regression: with every Redis connection silent, SIGTERM never ended the worker (arq's close waited)."""
    async with proxy_to(own_redis) as proxy, Redis.from_url(own_redis.url) as redis:
        env = _env(proxy.url, queue, tmp_path)
        worker = await started_worker(env, tmp_path / "w.log", redis, processes)
        await running_job(own_redis.url, queue, steps=400, interval_ms=50)
        with black_holed(proxy):
            await anyio.sleep(0.5)
            seconds, _ = await stop_time(worker)
    assert seconds < PROMPT_S, worker.output()


async def test_worker_with_a_grace_period_still_lets_the_job_finish(
    own_redis: RedisServer, queue: str, tmp_path: Path, processes: list[Process]
) -> None:
    """With Redis up, `JOBPULSE_SHUTDOWN_GRACE_S` still holds: the job keeps writing and succeeds.

    A stop that gave up on Redis at the signal would fail the job's writes within half a second.
    """
    env = _env(own_redis.url, queue, tmp_path, JOBPULSE_SHUTDOWN_GRACE_S="10")
    async with Redis.from_url(own_redis.url) as redis:
        worker = await started_worker(env, tmp_path / "w.log", redis, processes)
        job_id = await running_job(own_redis.url, queue, steps=40, interval_ms=50)  # about 2 s
        seconds, code = await stop_time(worker, limit_s=15)
        state = await redis.hgetall(keys.state_key(job_id))
    assert state[b"status"] == b"succeeded", (state, worker.output())
    assert state[b"attempt"] == b"1"
    assert 1 < seconds < 10, worker.output()  # it waited for the job (about 1.9 s left), not the grace
    assert code == 0


async def test_worker_with_a_grace_period_stops_at_its_end_when_redis_is_black_holed(
    own_redis: RedisServer, queue: str, tmp_path: Path, processes: list[Process]
) -> None:
    """The grace is waited (Redis may come back), then the stop is as prompt as without one."""
    grace_s = 2
    async with proxy_to(own_redis) as proxy, Redis.from_url(own_redis.url) as redis:
        env = _env(proxy.url, queue, tmp_path, JOBPULSE_SHUTDOWN_GRACE_S=str(grace_s))
        worker = await started_worker(env, tmp_path / "w.log", redis, processes)
        await running_job(own_redis.url, queue, steps=400, interval_ms=50)
        with black_holed(proxy):
            await anyio.sleep(0.5)
            seconds, _ = await stop_time(worker, limit_s=grace_s + 10)
    assert grace_s < seconds < grace_s + PROMPT_S, worker.output()


@pytest.mark.parametrize("outage", ["refused", "black-holed"])
async def test_web_with_open_streams_stops_at_once_without_redis(
    own_redis: RedisServer, queue: str, tmp_path: Path, processes: list[Process], outage: str
) -> None:
    async with proxy_to(own_redis) as proxy:
        web, url = web_process(_env(proxy.url, queue, tmp_path), tmp_path / "web.log")
        processes.append(web.start())
        wait_until_serving(url, web)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            submitted = await client.post(
                "/jobs", json={"task": "simulate", "params": {"steps": 5, "interval_ms": 10}}
            )
            job_id = submitted.json()["id"]  # queued for ever: no worker
            lines: list[list[str]] = [[], []]

            async def read(into: list[str]) -> None:
                async with client.stream("GET", f"/jobs/{job_id}/events") as response:
                    async for line in response.aiter_lines():
                        into.append(line)

            with anyio.fail_after(20):  # the readers end with the streams
                async with anyio.create_task_group() as readers:
                    for into in lines:
                        readers.start_soon(read, into)
                    while not all(lines):
                        await anyio.sleep(0.05)
                    if outage == "refused":
                        await proxy.stop()
                        own_redis.stop()
                        await anyio.sleep(1)
                        seconds, _ = await stop_time(web)
                    else:
                        with black_holed(proxy):
                            await anyio.sleep(1)
                            seconds, _ = await stop_time(web)
    assert seconds < PROMPT_S, web.output()
    for stream in lines:
        assert any(line.startswith("retry:") for line in stream), stream


async def test_stack_stops_at_once_when_its_redis_is_gone(
    own_redis: RedisServer, queue: str, tmp_path: Path, processes: list[Process]
) -> None:
    """Regression: `python -m jobpulse.stack` (`jobpulse up`, `scripts/up`) waited 15 s for the worker."""
    port = free_port()
    env = _env(own_redis.url, queue, tmp_path)
    args = [sys.executable, "-m", "jobpulse.stack", "--port", str(port)]
    stack = Process(args, env, tmp_path / "stack.log", cwd=ROOT).start()
    processes.append(stack)
    wait_until_serving(f"http://127.0.0.1:{port}", stack)
    await running_job(own_redis.url, queue, steps=400, interval_ms=50)
    own_redis.stop()
    await anyio.sleep(1)
    seconds, code = await stop_time(stack, limit_s=30)
    assert seconds < PROMPT_S, stack.output()
    assert code == 0 and "jobpulse: stopped" in stack.output()
