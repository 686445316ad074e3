"""`worker_settings(registry, **arq_settings)`: a user's own arq settings compose with jobpulse's, on a
real arq worker and a real Redis; what cannot work is refused before the worker starts."""

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from arq.connections import ArqRedis
from arq.cron import cron
from arq.worker import Retry, Worker, func
from pydantic import BaseModel
from redis.asyncio import Redis

from jobpulse import TaskDefinitionError, TaskRegistry, progress
from jobpulse.ids import new_job_id
from jobpulse.queue_codec import decode, encode
from jobpulse.settings import Settings
from jobpulse.store import JobStore
from jobpulse.web.queue import JobQueue
from jobpulse.worker import worker_settings
from jobpulse.worker.lifecycle import STORE_KEY

pytestmark = pytest.mark.anyio


class Nap(BaseModel):
    seconds: float = 0


tasks = TaskRegistry()


@tasks.task
async def nap(ctx: dict[str, Any], params: Nap) -> dict[str, float]:
    await progress(ctx, 50, "napping")
    await asyncio.sleep(params.seconds)
    return {"slept": params.seconds}


@tasks.task(name="short_nap", timeout_s=0.2)
async def short(ctx: dict[str, Any], params: Nap) -> None:
    await asyncio.sleep(params.seconds)


@tasks.task(name="once", max_tries=1)
async def once(ctx: dict[str, Any], params: Nap) -> None:
    raise Retry(defer=0)


@tasks.task(name="twice", max_tries=2)
async def twice(ctx: dict[str, Any], params: Nap) -> None:
    raise Retry(defer=0)


SEEN: list[str] = []


async def other_fn(ctx: dict[str, Any], word: str) -> str:
    """A plain arq function of the user's (arq names functions by their qualified name)."""
    SEEN.append(f"other_fn {word}")
    return word.upper()


class Calls:
    """What the user's own hooks and functions saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.store_at_startup = False


async def running_worker(settings: Settings, **arq: Any) -> tuple[Worker, asyncio.Task[None]]:
    kwargs = worker_settings(tasks, settings=settings, owns_process=False, **arq)
    worker = Worker(**kwargs, handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    with anyio.fail_after(10):
        while STORE_KEY not in worker.ctx:
            if task.done():
                task.result()
            await anyio.sleep(0.005)
    return worker, task


async def stop(worker: Worker, task: asyncio.Task[None]) -> None:
    worker.allow_pick_jobs = False
    worker.burst, worker.max_burst_jobs = True, 0
    done, _ = await asyncio.wait({task}, timeout=5)
    if not done:
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if worker.on_shutdown is not None:
        await worker.on_shutdown(worker.ctx)
    await worker.pool.aclose()


@pytest.fixture
async def arq_redis(settings: Settings, redis: Redis) -> AsyncIterator[ArqRedis]:
    client = ArqRedis.from_url(settings.redis_url)
    client.job_serializer, client.job_deserializer = encode, decode
    yield client
    await client.aclose()


async def run_job(
    settings: Settings, redis: Redis, queue: ArqRedis, task: str, **params: Any
) -> dict[str, Any]:
    """Record and enqueue a job as the web does, then wait for its last status."""
    store = JobStore(redis, settings)
    job_id = new_job_id()
    await store.create(job_id, task, params)
    await JobQueue(queue, settings.queue_name).enqueue(task, job_id, params)
    with anyio.fail_after(15):
        while not (state := await store.get(job_id)) or not state.is_terminal:
            await anyio.sleep(0.02)
    events = await store.read_events(job_id, 0, 100)
    return {"state": state, "statuses": [json.loads(e.data)["status"] for e in events if e.type == "status"]}


async def test_the_users_functions_hooks_and_cron_run_beside_ours(
    settings: Settings, redis: Redis, arq_redis: ArqRedis
) -> None:
    calls = Calls()
    SEEN[:] = []
    calls.seen = SEEN

    async def on_startup(ctx: dict[str, Any]) -> None:
        calls.store_at_startup = STORE_KEY in ctx  # ours ran first: the user's hook can use it
        calls.seen.append("startup")

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        calls.seen.append("shutdown")

    async def on_job_start(ctx: dict[str, Any]) -> None:
        calls.seen.append(f"job_start {ctx['job_id']}")

    async def on_job_end(ctx: dict[str, Any]) -> None:
        calls.seen.append(f"job_end {ctx['job_id']}")

    async def tick(ctx: dict[str, Any]) -> None:
        calls.seen.append("cron")

    worker, task = await running_worker(
        settings,
        functions=[other_fn],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        on_job_start=on_job_start,
        on_job_end=on_job_end,
        cron_jobs=[cron(tick, run_at_startup=True, keep_result=0)],
        max_jobs=3,
    )
    try:
        assert worker.max_jobs == 3  # another arq setting, passed through
        done = await run_job(settings, redis, arq_redis, "nap", seconds=0)
        assert done["statuses"] == ["queued", "running", "succeeded"]
        job_id = done["state"].id
        plain = await arq_redis.enqueue_job("other_fn", "hi", _queue_name=settings.queue_name)
        assert plain is not None
        assert await plain.result(timeout=10) == "HI"
        with anyio.fail_after(10):
            while "cron" not in calls.seen:
                await anyio.sleep(0.02)
    finally:
        await stop(worker, task)
    assert calls.store_at_startup
    assert {"startup", f"job_start {job_id}", f"job_end {job_id}", "other_fn hi", "shutdown"} <= set(
        calls.seen
    )
    assert calls.seen[-1] == "shutdown"


async def test_per_task_timeout_and_tries_override_the_settings(
    settings: Settings, redis: Redis, arq_redis: ArqRedis
) -> None:
    worker, task = await running_worker(settings.model_copy(update={"max_tries": 5}))
    try:
        timed_out = await run_job(settings, redis, arq_redis, "short_nap", seconds=2)
        assert timed_out["state"].error == "timed out after 0.2 s"
        gave_up = await run_job(settings, redis, arq_redis, "once")
        assert gave_up["statuses"] == ["queued", "running", "failed"]
        assert "gave up after 1 attempts" in (gave_up["state"].error or "")
        retried = await run_job(settings, redis, arq_redis, "twice")
        assert retried["statuses"] == ["queued", "running", "retrying", "running", "failed"]
    finally:
        await stop(worker, task)


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("queue_name", "JOBPULSE_QUEUE_NAME"),
        ("redis_settings", "REDIS_URL"),
        ("job_serializer", "JSON on the queue"),
        ("allow_abort_jobs", "DELETE /jobs/{id}"),
    ],
)
def test_settings_that_would_break_the_contract_are_refused(
    settings: Settings, setting: str, says: str
) -> None:
    with pytest.raises(TaskDefinitionError, match=says):
        refused: dict[str, Any] = {setting: None}
        worker_settings(tasks, settings=settings, **refused)


def test_a_plain_function_named_like_a_task_is_refused(settings: Settings) -> None:
    with pytest.raises(TaskDefinitionError, match=r"functions= names \['nap'\]"):
        worker_settings(tasks, settings=settings, functions=[func(other_fn, name="nap")])


@pytest.mark.slow
def test_the_arq_cli_refuses_to_start_with_a_bad_task_and_says_what_to_fix(
    tmp_path: Path, settings: Settings
) -> None:
    """A user's own project, its own worker.py, a task without a params model: `arq` exits at once."""
    (tmp_path / "tasks.py").write_text(
        textwrap.dedent(
            """
            from jobpulse import TaskRegistry

            tasks = TaskRegistry()

            @tasks.task(max_tries=0)
            async def resize(ctx, params: dict) -> None: ...
            """
        )
    )
    (tmp_path / "worker.py").write_text(
        "from jobpulse.worker import worker_settings\nfrom tasks import tasks\n\n"
        "WorkerSettings = worker_settings(tasks)\n"
    )
    env = {"REDIS_URL": settings.redis_url, "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-m", "arq", "worker.WorkerSettings"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode != 0
    assert "task 'resize'" in run.stderr
    assert "must be annotated with a pydantic model" in run.stderr
    assert "max_tries must be a whole number from 1 to 100" in run.stderr
