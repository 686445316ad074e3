"""The lifecycle wrapper's statuses for every way a task can end, on a real Redis store."""

import asyncio
import json
from typing import Any

import pytest
from arq.worker import Retry
from redis.asyncio import Redis

from jobpulse.ids import new_job_id
from jobpulse.registry import TaskSpec
from jobpulse.settings import Settings
from jobpulse.status import JobStatus
from jobpulse.store import JobStore
from jobpulse.worker.errors import TaskFailed
from jobpulse.worker.lifecycle import STORE_KEY, describe, lifecycle_task
from jobpulse.worker.progress import progress
from worker.tasks.simulate import SimulateParams

pytestmark = pytest.mark.anyio

PARAMS = {"steps": 1, "interval_ms": 0}


async def run_task(
    redis: Redis, settings: Settings, impl: Any, *, attempt: int = 1, job_id: str | None = None
) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """Runs `impl` as arq would, for a job created here; returns the job id and its events."""
    store = JobStore(redis, settings)
    if job_id is None:
        job_id = new_job_id()
        await store.create(job_id, "simulate", PARAMS)
    run = lifecycle_task(TaskSpec("simulate", impl, SimulateParams), settings)
    await run({STORE_KEY: store, "job_id": job_id, "job_try": attempt}, PARAMS)
    return job_id, await events(store, job_id)


async def events(store: JobStore, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, json.loads(e.data)) for e in await store.read_events(job_id, 0, 1000)]


def statuses(history: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [data["status"] for kind, data in history if kind == "status"]


async def test_success_publishes_running_then_succeeded_with_result(redis: Redis, settings: Settings) -> None:
    async def impl(ctx: dict[str, Any], params: SimulateParams) -> dict[str, int]:
        await progress(ctx, 50)
        return {"answer": 42}

    _, history = await run_task(redis, settings, impl)
    assert statuses(history) == ["queued", "running", "succeeded"]
    assert history[-1][1]["result"] == {"answer": 42}
    assert history[-2] == ("progress", {**history[-2][1], "progress": 50})


async def test_exception_fails_the_job_with_its_message(redis: Redis, settings: Settings) -> None:
    async def impl(ctx: dict[str, Any], params: SimulateParams) -> None:
        raise ValueError("boom")

    _, history = await run_task(redis, settings, impl)
    assert statuses(history) == ["queued", "running", "failed"]
    assert history[-1][1]["error"] == "ValueError: boom"


async def test_timeout_fails_the_job(redis: Redis, settings: Settings) -> None:
    async def impl(ctx: dict[str, Any], params: SimulateParams) -> None:
        await asyncio.sleep(10)

    _, history = await run_task(redis, settings.model_copy(update={"job_timeout_s": 0.1}), impl)
    assert statuses(history)[-1] == "failed"
    assert history[-1][1]["error"] == "timed out after 0.1 s"


async def test_attempt_past_the_limit_fails_without_running(redis: Redis, settings: Settings) -> None:
    """Regression: the `failed` for a job past its last attempt was fenced on an attempt never run."""
    called = False

    async def impl(ctx: dict[str, Any], params: SimulateParams) -> None:
        nonlocal called
        called = True

    store = JobStore(redis, settings)
    job_id = new_job_id()
    await store.create(job_id, "simulate", PARAMS)
    await store.set_status(job_id, JobStatus.RUNNING, attempt=2)  # then the worker died (SIGKILL)
    two_tries = settings.model_copy(update={"max_tries": 2})
    _, history = await run_task(redis, two_tries, impl, attempt=3, job_id=job_id)
    assert not called
    assert statuses(history) == ["queued", "running", "failed"]
    assert history[-1][1]["error"] == "gave up after 2 attempts"
    assert history[-1][1]["attempt"] == 2


async def test_cancelled_while_queued_never_starts(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    job_id = new_job_id()
    await store.create(job_id, "simulate", PARAMS)
    await store.set_status(job_id, JobStatus.CANCELLED, attempt=0)
    called = False

    async def impl(ctx: dict[str, Any], params: SimulateParams) -> None:
        nonlocal called
        called = True

    _, history = await run_task(redis, settings, impl, job_id=job_id)
    assert not called
    assert statuses(history) == ["queued", "cancelled"]


@pytest.mark.parametrize(("attempt", "expected"), [(1, "retrying"), (3, "failed")])
async def test_retry_request_retries_until_the_last_attempt(
    redis: Redis, settings: Settings, attempt: int, expected: str
) -> None:
    async def impl(ctx: dict[str, Any], params: SimulateParams) -> None:
        raise Retry(defer=1)

    if expected == "retrying":
        with pytest.raises(Retry):  # arq must see it to put the job back on the queue
            await run_task(redis, settings, impl, attempt=attempt)
    else:
        _, history = await run_task(redis, settings, impl, attempt=attempt)
        assert statuses(history)[-1] == "failed"
        assert "gave up after 3 attempts" in history[-1][1]["error"]


async def test_worker_shutdown_marks_retrying_and_lets_arq_requeue(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    job_id = new_job_id()
    await store.create(job_id, "simulate", PARAMS)
    started = asyncio.Event()

    async def impl(ctx: dict[str, Any], params: SimulateParams) -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(run_task(redis, settings, impl, job_id=job_id))
    await started.wait()
    task.cancel()  # what arq does to running jobs on SIGTERM
    with pytest.raises(asyncio.CancelledError):
        await task
    history = await events(store, job_id)
    assert statuses(history) == ["queued", "running", "retrying"]
    assert "worker stopped" in history[-1][1]["error"]


async def test_failure_after_cancellation_with_progress_pending_is_quiet(
    redis: Redis, settings: Settings
) -> None:
    """Regression: flushing a pending update of a cancelled job raised JobAborted out of arq's job."""
    store = JobStore(redis, settings)
    job_id = new_job_id()
    await store.create(job_id, "simulate", PARAMS)

    async def impl(ctx: dict[str, Any], params: SimulateParams) -> None:
        await progress(ctx, 10)  # published
        await progress(ctx, 20)  # pending in the coalescing window
        await store.set_status(job_id, JobStatus.CANCELLED, attempt=1)
        raise ValueError("late failure")

    _, history = await run_task(
        redis, settings.model_copy(update={"progress_interval_ms": 10_000}), impl, job_id=job_id
    )
    assert statuses(history) == ["queued", "running", "cancelled"]


def test_a_task_failed_error_is_shown_without_its_class_name() -> None:
    assert describe(TaskFailed("photo.csv is not UTF-8 text")) == "photo.csv is not UTF-8 text"
    assert describe(ValueError("bad value")) == "ValueError: bad value"
    assert describe(TaskFailed()) == "TaskFailed"
