"""End to end through the real entry points, with processes stopped and restarted mid-job."""

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from jobpulse.stack.redis_server import RedisServer
from tests.support.processes import Process, process_env, wait_until_serving, web_process, worker_process
from tests.support.sse import Event, ids, read_events, read_to_the_end

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def env(redis_server: RedisServer, tmp_path: Path) -> dict[str, str]:
    return process_env(
        redis_server.url,
        JOBPULSE_UPLOAD_DIR=str(tmp_path / "uploads"),
        JOBPULSE_QUEUE_NAME=f"e2e:{uuid.uuid4().hex[:8]}",
        JOBPULSE_PROGRESS_INTERVAL_MS="0",
        JOBPULSE_WORKER_POLL_DELAY_S="0.05",
    )


class Launcher:
    """Starts the real entry points for one test, logging to its tmp_path; stops them all at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[Process] = []

    def worker(self, name: str = "worker") -> Process:
        process = worker_process(self.env, self.logs / f"{name}.log").start()
        self.started.append(process)
        return process

    def web(self, name: str = "web", port: int | None = None) -> tuple[Process, str]:
        process, url = web_process(self.env, self.logs / f"{name}.log", port)
        self.started.append(process.start())
        wait_until_serving(url, process)
        return process, url


@pytest.fixture
def launch(env: dict[str, str], tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(env, tmp_path)
    yield launcher
    for process in launcher.started:
        process.stop()


async def test_submit_and_stream_through_the_real_entry_points(launch: Launcher) -> None:
    launch.worker()
    _, url = launch.web()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post(
            "/jobs", json={"task": "simulate", "params": {"steps": 10, "interval_ms": 10}}
        )
        assert response.status_code == 202
        events = await read_events(client, response.json()["id"])
    assert ids(events) == list(range(1, 14))
    assert events[-1].data == {**events[-1].data, "status": "succeeded", "result": {"steps": 10}}


def statuses(events: list[Event]) -> list[tuple[str, int]]:
    return [(e.data["status"], e.data["attempt"]) for e in events if e.event == "status"]


async def submit_simulate(client: httpx.AsyncClient, *, steps: int, interval_ms: int) -> str:
    response = await client.post(
        "/jobs", json={"task": "simulate", "params": {"steps": steps, "interval_ms": interval_ms}}
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def wait_for_progress(client: httpx.AsyncClient, job_id: str, at_least: float) -> None:
    with anyio.fail_after(10):
        while (await client.get(f"/jobs/{job_id}")).json()["progress"] < at_least:
            await anyio.sleep(0.05)


async def test_worker_sigterm_mid_job_retries_on_another_worker(launch: Launcher) -> None:
    first = launch.worker("worker1")
    _, url = launch.web()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        job_id = await submit_simulate(client, steps=30, interval_ms=50)
        reader = asyncio.create_task(read_events(client, job_id, deadline_s=60))
        await wait_for_progress(client, job_id, 20)
        first.signal(signal.SIGTERM)
        assert first.wait(10) == 0, first.output()
        with anyio.fail_after(5):
            while (await client.get(f"/jobs/{job_id}")).json()["status"] != "retrying":
                await anyio.sleep(0.05)
        launch.worker("worker2")
        events = await reader
    assert ids(events) == list(range(1, len(events) + 1))
    assert statuses(events) == [
        ("queued", 0),
        ("running", 1),
        ("retrying", 1),
        ("running", 2),
        ("succeeded", 2),
    ]
    restart = next(
        i for i, e in enumerate(events) if e.data.get("status") == "running" and e.data["attempt"] == 2
    )
    progress_after = [e.data["progress"] for e in events[restart:] if e.event == "progress"]
    assert progress_after[0] < 20 and progress_after[-1] == 100  # visibly restarted, then finished


async def test_web_restart_mid_stream_resumes_without_gap_or_duplicate(launch: Launcher) -> None:
    launch.worker()
    web, url = launch.web("web1")
    port = int(url.rsplit(":", 1)[1])
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        job_id = await submit_simulate(client, steps=60, interval_ms=50)
        before = await read_events(client, job_id, limit=15)
        web.stop()
        launch.web("web2", port=port)
        after = await read_events(client, job_id, last_event_id=before[-1].id)
    events = before + after
    assert ids(events) == list(range(1, len(events) + 1))
    assert events[-1].data["status"] == "succeeded"


async def test_web_sigterm_ends_open_streams_at_once_with_a_retry_hint(launch: Launcher) -> None:
    """Regression: uvicorn waited for ever for open SSE streams after SIGTERM."""
    launch.worker()
    web, url = launch.web()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        job_id = await submit_simulate(client, steps=100, interval_ms=100)
        received = b""
        async with client.stream("GET", f"/jobs/{job_id}/events") as stream:
            chunks = stream.aiter_bytes()
            while b"event: progress" not in received:
                received += await chunks.__anext__()
            web.signal(signal.SIGTERM)
            started = time.monotonic()
            with anyio.fail_after(5):
                async for chunk in chunks:
                    received += chunk
            closed_after = time.monotonic() - started
    assert closed_after < 2
    assert received.endswith(b"retry: 250\n")
    # uvicorn re-raises the signal once it has shut down cleanly, so the exit status is "killed by SIGTERM".
    assert web.wait(10) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in web.output()
    assert b"succeeded" not in received


@pytest.fixture
def quick_stalls(env: dict[str, str]) -> dict[str, str]:
    """Heartbeats every 0.2 s; an attempt silent for 1.5 s has lost its worker."""
    env.update(JOBPULSE_HEARTBEAT_INTERVAL_S="0.2", JOBPULSE_STALL_AFTER_S="1.5")
    return env


async def test_worker_sigkill_mid_job_is_noticed_in_seconds_and_run_again(
    launch: Launcher, quick_stalls: dict[str, str]
) -> None:
    """Without a heartbeat the job stayed `running` until arq's in-progress key expired (about an hour)."""
    doomed = launch.worker("worker1")
    _, url = launch.web()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        job_id = await submit_simulate(client, steps=30, interval_ms=50)
        reader = asyncio.create_task(read_to_the_end(client, job_id, deadline_s=30))
        await wait_for_progress(client, job_id, 20)
        doomed.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        launch.worker("worker2")
        events = await reader
        done_after = time.monotonic() - killed_at
    assert done_after < 15, "noticed in seconds (stall after 1.5 s), then ~1.5 s of work again"
    assert ids(events) == list(range(1, len(events) + 1))
    assert statuses(events) == [
        ("queued", 0),
        ("running", 1),
        ("retrying", 1),
        ("running", 2),
        ("succeeded", 2),
    ]
    stalled = next(e for e in events if e.data.get("status") == "retrying")
    assert stalled.data["error"] == (
        "stalled: the worker running attempt 1 stopped responding (no heartbeat for 1.5 s)"
    )
    restart = events.index(next(e for e in events if e.data.get("attempt") == 2))
    progress_after = [e.data["progress"] for e in events[restart:] if e.event == "progress"]
    assert progress_after[0] < 20 and progress_after[-1] == 100  # visibly restarted, then finished


async def test_worker_sigkill_on_the_last_attempt_fails_the_job_in_seconds(
    launch: Launcher, quick_stalls: dict[str, str]
) -> None:
    quick_stalls["JOBPULSE_MAX_TRIES"] = "1"
    doomed = launch.worker("worker1")
    _, url = launch.web()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        job_id = await submit_simulate(client, steps=100, interval_ms=50)
        await wait_for_progress(client, job_id, 5)
        doomed.signal(signal.SIGKILL)
        started = time.monotonic()
        launch.worker("worker2")
        events = await read_to_the_end(client, job_id, deadline_s=20)
        noticed_after = time.monotonic() - started
    assert statuses(events)[-1] == ("failed", 1)
    assert events[-1].data["error"] == (
        "stalled: the worker running attempt 1 stopped responding (no heartbeat for 1.5 s); "
        "gave up after 1 attempts"
    )
    assert noticed_after < 10


async def test_worker_sigterm_with_a_grace_period_lets_the_running_job_finish(
    launch: Launcher, env: dict[str, str]
) -> None:
    env["JOBPULSE_SHUTDOWN_GRACE_S"] = "20"
    worker = launch.worker()
    _, url = launch.web()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        job_id = await submit_simulate(client, steps=30, interval_ms=50)
        await wait_for_progress(client, job_id, 20)
        worker.signal(signal.SIGTERM)
        waiting = await client.post(
            "/jobs", json={"task": "simulate", "params": {"steps": 1, "interval_ms": 0}}
        )
        events = await read_events(client, job_id, deadline_s=20)
        assert await anyio.to_thread.run_sync(worker.wait, 20) == 0, worker.output()
        assert (await client.get(f"/jobs/{waiting.json()['id']}")).json()["status"] == "queued"
    assert statuses(events) == [("queued", 0), ("running", 1), ("succeeded", 1)]


async def test_redis_restart_mid_job_loses_and_repeats_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    """Redis with its append-only file, as in docker-compose, stopped and started again under a job."""
    redis = RedisServer(appendonly=True, directory=tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    redis.start()
    launch = Launcher({**env, "REDIS_URL": redis.url}, tmp_path)
    try:
        worker = launch.worker()
        _, url = launch.web()
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            job_id = await submit_simulate(client, steps=60, interval_ms=50)
            reader = asyncio.create_task(read_to_the_end(client, job_id, deadline_s=60, through_outages=True))
            await wait_for_progress(client, job_id, 20)
            await anyio.to_thread.run_sync(redis.stop)
            refused = await client.post(
                "/jobs", json={"task": "simulate", "params": {"steps": 1, "interval_ms": 0}}
            )
            assert refused.status_code == 503 and "Redis is unavailable" in refused.json()["detail"]
            await anyio.sleep(1)
            await anyio.to_thread.run_sync(redis.start)
            events = await reader
            after = await client.post(
                "/jobs", json={"task": "simulate", "params": {"steps": 3, "interval_ms": 0}}
            )
            assert after.status_code == 202
            final = await read_to_the_end(client, after.json()["id"], deadline_s=20, through_outages=True)
        assert ids(events) == list(range(1, len(events) + 1))
        assert statuses(events) == [("queued", 0), ("running", 1), ("succeeded", 1)]
        assert final[-1].data["status"] == "succeeded"
        assert worker.popen is not None and worker.popen.poll() is None, "the worker rode it out"
    finally:
        for process in launch.started:
            process.stop()
        redis.cleanup()
