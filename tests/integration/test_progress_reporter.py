"""`progress_reporter()`: progress from threads and process pools, through a real worker and Redis.

The task (tests.support.reporter_tasks) reports from `asyncio.to_thread`, a ThreadPoolExecutor, or a
ProcessPoolExecutor with the fork or the spawn context; the stream is read over HTTP or from the store.
"""

import asyncio
import inspect
import json
import logging
import os
import pickle
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from jobpulse import JobAborted, progress_reporter
from jobpulse.ids import new_job_id
from jobpulse.settings import Settings
from jobpulse.status import JobStatus
from jobpulse.store import JobStore
from jobpulse.worker.progress import REPORTER_KEY, ProgressReporter
from jobpulse.worker.report_relay import RELAY_KEY, ReportRelay
from jobpulse.worker.reporter import Report
from tests.conftest import Stack, StackFactory
from tests.support.sse import read_events

pytestmark = pytest.mark.anyio

TASKS = "tests.support.reporter_tasks:registry"
EVERY_WAY = ["to_thread", "thread_pool", "fork", "spawn"]
PROCESSES = {"fork", "spawn"}


async def stored_events(stack: Stack, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    store = JobStore(stack.redis, stack.settings)
    return [(e.type, json.loads(e.data)) for e in await store.read_events(job_id, 0, 100_000)]


async def until(condition: Callable[[], Any], deadline_s: float = 20) -> None:
    """Until `condition()` (awaited, if it is a coroutine) is true; fails the test after `deadline_s`."""
    with anyio.fail_after(deadline_s):
        while True:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.01)


async def worker_idle(stack: Stack) -> None:
    """Until the worker's job tasks have all ended (arq drops them from `tasks` only at its next poll)."""
    worker = stack.worker.worker
    assert worker is not None
    await until(lambda: all(task.done() for task in worker.tasks.values()))


@pytest.mark.parametrize("via", EVERY_WAY)
async def test_reports_arrive_in_order_with_100_before_succeeded(make_stack: StackFactory, via: str) -> None:
    stack = await make_stack(tasks=TASKS, progress_interval_ms=0)
    job = await stack.submit("count_up", via=via, steps=20)
    events = await read_events(stack.client, job["id"])
    progress = [e.data for e in events if e.event == "progress"]
    assert [p["progress"] for p in progress] == [5 * step for step in range(1, 21)]
    assert [(p["message"], p["current"], p["total"]) for p in progress][-1] == ("step 20", 20, 20)
    assert events[-1].event == "status" and events[-1].data["status"] == "succeeded"
    assert events[-2].event == "progress" and events[-2].data["progress"] == 100
    ran_in = events[-1].data["result"]["pid"]
    assert (ran_in != os.getpid()) == (via in PROCESSES)


@pytest.mark.parametrize("via", EVERY_WAY)
async def test_reports_in_one_window_are_coalesced_keeping_the_last(
    make_stack: StackFactory, via: str
) -> None:
    stack = await make_stack(tasks=TASKS, progress_interval_ms=300)
    job = await stack.submit("count_up", via=via, steps=500, upto=50)
    events = await read_events(stack.client, job["id"])
    progress = [e.data for e in events if e.event == "progress"]
    assert len(progress) < 50  # 500 reports
    values = [p["progress"] for p in progress]
    assert values == sorted(values)
    # The last report (50 %, not 100: nothing forces it out at once) is flushed before the status.
    assert (progress[-1]["progress"], progress[-1]["message"]) == (50, "step 500")
    assert events[-2].event == "progress"
    assert events[-1].data["status"] == "succeeded"


@pytest.mark.parametrize("via", EVERY_WAY)
async def test_cancel_aborts_the_thread_or_process_at_its_next_report(
    make_stack: StackFactory, via: str, tmp_path: Path
) -> None:
    """With a long coalescing window the reports after the first only replace a pending update, so it is
    the attempt's end, not a refused store write, that aborts them."""
    stack = await make_stack(tasks=TASKS, progress_interval_ms=60_000)
    marker = tmp_path / "aborted"
    job = await stack.submit("count_up", via=via, steps=100_000, pause_ms=10, marker=str(marker))
    job_id = job["id"]

    async def has_progress() -> bool:
        return any(kind == "progress" for kind, _ in await stored_events(stack, job_id))

    await until(has_progress)
    response = await stack.client.delete(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    await until(marker.exists)
    step, pid = map(int, marker.read_text().split())
    assert step > 1
    assert (pid != os.getpid()) == (via in PROCESSES)
    await worker_idle(stack)
    await asyncio.sleep(0.1)  # a report that slipped through would be appended by now
    events = await stored_events(stack, job_id)
    assert events[-1][0] == "status" and events[-1][1]["status"] == "cancelled"


@pytest.mark.parametrize("via", ["to_thread", "fork"])
async def test_a_worker_stopping_mid_job_stops_its_thread_or_process(
    make_stack: StackFactory, via: str, tmp_path: Path
) -> None:
    """arq cancels the job at shutdown and will run it again: the attempt is `retrying`, not ended, so the
    store would still take its progress. The thread or process must stop anyway, and append nothing."""
    stack = await make_stack(tasks=TASKS, progress_interval_ms=0)
    marker = tmp_path / "aborted"
    job = await stack.submit("count_up", via=via, steps=100_000, pause_ms=10, marker=str(marker))
    job_id = job["id"]

    async def has_progress() -> bool:
        return any(kind == "progress" for kind, _ in await stored_events(stack, job_id))

    await until(has_progress)
    await stack.worker.stop()
    await until(marker.exists)
    await asyncio.sleep(0.1)  # a report that slipped through would be appended by now
    events = await stored_events(stack, job_id)
    assert events[-1] == ("status", {**events[-1][1], "status": "retrying", "attempt": 1})


@pytest.mark.parametrize("via", EVERY_WAY)
async def test_a_stale_attempt_aborts_the_thread_or_process(
    make_stack: StackFactory, via: str, tmp_path: Path
) -> None:
    """Attempt 2 began elsewhere (as the stall reaper would hand it on): attempt 1's reports are refused,
    the JobAborted travels back through to_thread / the process pool, and attempt 1 writes nothing more."""
    stack = await make_stack(tasks=TASKS, progress_interval_ms=0)
    marker = tmp_path / "aborted"
    job = await stack.submit("count_up", via=via, steps=100_000, pause_ms=10, marker=str(marker))
    job_id = job["id"]

    async def has_progress() -> bool:
        return any(kind == "progress" for kind, _ in await stored_events(stack, job_id))

    await until(has_progress)
    store = JobStore(stack.redis, stack.settings)
    await store.set_status(job_id, JobStatus.RUNNING, attempt=2)
    await until(marker.exists)
    await worker_idle(stack)
    assert Path(f"{marker}.task").read_text() == "JobAborted"  # carried back to the awaiting task
    events = await stored_events(stack, job_id)
    assert events[-1] == ("status", {**events[-1][1], "status": "running", "attempt": 2})
    state = await store.get(job_id)
    assert state is not None and state.status is JobStatus.RUNNING and state.attempt == 2


# Without a stack: a ProgressReporter on the real store, and the relay a worker would make.


@pytest.fixture
async def store(redis: Redis, settings: Settings) -> AsyncIterator[JobStore]:
    yield JobStore(redis, settings)


@pytest.fixture
async def relay() -> AsyncIterator[ReportRelay]:
    relay = ReportRelay()
    yield relay
    await relay.close()


async def running_ctx(store: JobStore, relay: ReportRelay) -> tuple[str, dict[str, Any]]:
    job_id = new_job_id()
    await store.create(job_id, "count_up", {})
    await store.set_status(job_id, JobStatus.RUNNING, attempt=1)
    reporter = ProgressReporter(store, job_id, attempt=1, interval_s=0)
    return job_id, {REPORTER_KEY: reporter, RELAY_KEY: relay}


async def progress_values(store: JobStore, job_id: str) -> list[float]:
    events = await store.read_events(job_id, 0, 1000)
    return [json.loads(e.data)["progress"] for e in events if e.type == "progress"]


@pytest.mark.timeout(10)  # without the check, the call would block the loop it waits for
async def test_reporting_on_the_event_loop_says_to_await_progress(
    store: JobStore, relay: ReportRelay
) -> None:
    job_id, ctx = await running_ctx(store, relay)
    report = progress_reporter(ctx)
    with pytest.raises(RuntimeError, match=r"use await progress\(ctx, \.\.\.\) on the event loop"):
        report(10)
    assert await progress_values(store, job_id) == []


async def test_the_reporter_pickles_and_the_copy_reports_for_the_same_attempt(
    store: JobStore, relay: ReportRelay
) -> None:
    job_id, ctx = await running_ctx(store, relay)
    copy = pickle.loads(pickle.dumps(progress_reporter(ctx)))
    assert isinstance(copy, Report) and job_id in repr(copy)
    await asyncio.to_thread(copy, 30, "from a copy")
    assert await progress_values(store, job_id) == [30]


async def test_arguments_are_checked_as_progress_checks_them(store: JobStore, relay: ReportRelay) -> None:
    _, ctx = await running_ctx(store, relay)
    report = progress_reporter(ctx)
    with pytest.raises(ValueError, match=r"report\(\) current= must be a whole number"):
        await asyncio.to_thread(report, 5, current=-1, total=3)
    with pytest.raises(ValueError, match=r"report\(\) needs a percent"):
        await asyncio.to_thread(report)


def test_progress_reporter_outside_a_task_says_so() -> None:
    with pytest.raises(RuntimeError, match="ctx arq passes to a jobpulse task"):
        progress_reporter({})


def report_twice(report: Report) -> list[str]:
    """In a child process: what each of two reports did."""
    outcomes = []
    for percent in (40, 50):
        try:
            report(percent)
            outcomes.append("ok")
        except JobAborted as exc:
            outcomes.append(" ".join(["aborted", *getattr(exc, "__notes__", [])]))
        time.sleep(0)
    return outcomes


async def test_a_child_hears_of_the_attempts_end_and_of_its_workers(
    store: JobStore, relay: ReportRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """Reporter closed → the relay answers "aborted"; relay gone (worker stopped or dead) → JobAborted too,
    with a note saying why."""
    job_id, ctx = await running_ctx(store, relay)
    report = progress_reporter(ctx)
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=get_context("fork")) as pool:
        assert await loop.run_in_executor(pool, report_twice, report) == ["ok", "ok"]
        ctx[REPORTER_KEY].close()  # the attempt ends
        assert await loop.run_in_executor(pool, report_twice, report) == ["aborted", "aborted"]
        await relay.close()  # the worker shuts down; the child's connection and the socket go
        outcomes = await loop.run_in_executor(pool, report_twice, report)
    assert all(outcome.startswith("aborted the worker's progress relay") for outcome in outcomes), outcomes
    assert await progress_values(store, job_id) == [40, 50]
    with pytest.raises(JobAborted):  # and in the worker's own process, from a thread
        await asyncio.to_thread(report, 60)
    # Regression: closing the relay cancelled its connections' handlers, and asyncio logged each one.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
