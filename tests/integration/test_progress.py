"""`progress()` and its coalescing, against a real Redis store."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from jobpulse.ids import new_job_id
from jobpulse.settings import Settings
from jobpulse.status import JobStatus
from jobpulse.store import JobStore
from jobpulse.worker.progress import REPORTER_KEY, JobAborted, ProgressReporter, progress

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(redis: Redis, settings: Settings) -> AsyncIterator[JobStore]:
    yield JobStore(redis, settings)


async def running_job(store: JobStore) -> str:
    job_id = new_job_id()
    await store.create(job_id, "simulate", {})
    await store.set_status(job_id, JobStatus.RUNNING, attempt=1)
    return job_id


async def progress_values(store: JobStore, job_id: str) -> list[float]:
    events = await store.read_events(job_id, 0, 100_000)
    return [json.loads(e.data)["progress"] for e in events if e.type == "progress"]


def ctx_for(store: JobStore, job_id: str, interval_s: float) -> dict[str, Any]:
    return {REPORTER_KEY: ProgressReporter(store, job_id, attempt=1, interval_s=interval_s)}


async def test_tight_loop_is_coalesced_and_ends_at_100(store: JobStore) -> None:
    job_id = await running_job(store)
    ctx = ctx_for(store, job_id, interval_s=0.1)
    for i in range(1, 20_001):
        await progress(ctx, 100 * i / 20_000)
    values = await progress_values(store, job_id)
    assert values[-1] == 100
    assert len(values) < 50  # 20,000 calls, a handful of Redis writes
    assert values == sorted(values)


async def test_pending_update_is_published_within_the_window(store: JobStore) -> None:
    job_id = await running_job(store)
    ctx = ctx_for(store, job_id, interval_s=0.1)
    await progress(ctx, 10)  # published at once: the window was open
    await progress(ctx, 20)  # pending
    await progress(ctx, 30, "latest")  # replaces 20
    assert await progress_values(store, job_id) == [10]
    await asyncio.sleep(0.2)  # no further call: the timer publishes it
    assert await progress_values(store, job_id) == [10, 30]
    state = await store.get(job_id)
    assert state is not None and state.message == "latest"


async def test_flush_publishes_the_final_progress_before_a_status(store: JobStore) -> None:
    job_id = await running_job(store)
    reporter = ProgressReporter(store, job_id, attempt=1, interval_s=10)
    ctx = {REPORTER_KEY: reporter}
    await progress(ctx, 50)
    await progress(ctx, 60)
    await reporter.flush()
    await store.set_status(job_id, JobStatus.SUCCEEDED, attempt=1, expect_attempt=1)
    events = await store.read_events(job_id, 0, 100)
    assert [e.type for e in events][-3:] == ["progress", "progress", "status"]
    assert await progress_values(store, job_id) == [50, 60]


async def test_interval_zero_publishes_every_update(store: JobStore) -> None:
    job_id = await running_job(store)
    ctx = ctx_for(store, job_id, interval_s=0)
    for i in range(1, 51):
        await progress(ctx, i)
    assert await progress_values(store, job_id) == list(range(1, 51))


async def test_current_and_total_give_the_percentage(store: JobStore) -> None:
    job_id = await running_job(store)
    ctx = ctx_for(store, job_id, interval_s=0)
    await progress(ctx, current=3, total=12, message="files")
    events = await store.read_events(job_id, 0, 100)
    data = json.loads(events[-1].data)
    assert data == {
        "job_id": job_id,
        "ts": data["ts"],
        "progress": 25,
        "message": "files",
        "current": 3,
        "total": 12,
    }
    assert abs(data["ts"] - time.time()) < 5


@pytest.mark.parametrize(("value", "expected"), [(-5, 0), (150, 100), (42.5, 42.5)])
async def test_values_are_clamped(store: JobStore, value: float, expected: float) -> None:
    job_id = await running_job(store)
    await progress(ctx_for(store, job_id, interval_s=0), value)
    assert await progress_values(store, job_id) == [expected]


@pytest.mark.parametrize(
    "kwargs", [{}, {"current": 1}, {"current": 1, "total": 0}, {"percent": float("nan")}]
)
async def test_meaningless_progress_is_a_value_error(store: JobStore, kwargs: dict[str, Any]) -> None:
    job_id = await running_job(store)
    with pytest.raises(ValueError, match="progress"):
        await progress(ctx_for(store, job_id, interval_s=0), **kwargs)


async def test_progress_after_cancellation_raises_job_aborted(store: JobStore) -> None:
    job_id = await running_job(store)
    ctx = ctx_for(store, job_id, interval_s=0)
    await progress(ctx, 10)
    await store.set_status(job_id, JobStatus.CANCELLED, attempt=1)
    with pytest.raises(JobAborted):
        await progress(ctx, 20)
    assert await progress_values(store, job_id) == [10]


async def test_stale_attempt_cannot_publish(store: JobStore) -> None:
    """A worker still running attempt 1 after attempt 2 began must not write over it."""
    job_id = await running_job(store)
    old = ctx_for(store, job_id, interval_s=0)
    await store.set_status(job_id, JobStatus.RUNNING, attempt=2)
    with pytest.raises(JobAborted):
        await progress(old, 99)
    assert await progress_values(store, job_id) == []


async def test_progress_outside_a_jobpulse_task_says_so() -> None:
    with pytest.raises(RuntimeError, match="ctx arq passes to a jobpulse task"):
        await progress({}, 50)


class SlowStore(JobStore):
    """The real store, with each progress write taking 50 ms longer, as over a slow link."""

    async def set_progress(self, job_id: str, **kwargs: Any) -> int:
        await asyncio.sleep(0.05)
        return await super().set_progress(job_id, **kwargs)


async def test_flush_waits_for_a_publish_already_under_way(redis: Redis, settings: Settings) -> None:
    """Regression: a timer publish in flight was not awaited, so the status overtook the final progress."""
    store = SlowStore(redis, settings)
    job_id = await running_job(store)
    reporter = ProgressReporter(store, job_id, attempt=1, interval_s=0.05)
    ctx = {REPORTER_KEY: reporter}
    await progress(ctx, 10)  # published at once
    await progress(ctx, 60)  # pending; the timer publishes it about 50 ms from now, taking 50 ms
    await asyncio.sleep(0.07)  # the timer's publish is under way
    await reporter.flush()
    await store.set_status(job_id, JobStatus.SUCCEEDED, attempt=1, expect_attempt=1)
    events = await store.read_events(job_id, 0, 100)
    assert [(e.type, json.loads(e.data).get("progress")) for e in events][-3:] == [
        ("progress", 10),
        ("progress", 60),
        ("status", None),
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"percent": 20, "current": -1, "total": 5},
        {"percent": 20, "current": 1, "total": -5},
        {"percent": 20, "current": 1.5, "total": 5},
        {"percent": 20, "current": True},
    ],
)
async def test_bad_counts_fail_at_the_call_not_at_publish(store: JobStore, kwargs: dict[str, Any]) -> None:
    """Regression: bad counts passed progress() and failed later, when the coalesced update went out."""
    job_id = await running_job(store)
    with pytest.raises(ValueError, match="whole number"):
        await progress(ctx_for(store, job_id, interval_s=10), **kwargs)


async def test_non_string_message_is_a_type_error(store: JobStore) -> None:
    job_id = await running_job(store)
    with pytest.raises(TypeError, match="message must be a str"):
        await progress(ctx_for(store, job_id, interval_s=0), 5, 123)  # type: ignore[arg-type]
