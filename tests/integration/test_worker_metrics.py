"""A worker's Prometheus metrics (`jobpulse.worker.metrics`),
scraped from a real `arq worker.WorkerSettings`."""

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobpulse.stack.redis_server import free_port
from jobpulse.worker import metrics
from tests.conftest import Stack, StackFactory
from tests.support.processes import Process, process_env, worker_process
from tests.support.prometheus import Samples, parse, value

pytestmark = pytest.mark.anyio


async def scrape(port: int, process: Process) -> Samples:
    """The worker's metrics, once its port answers (it opens as the worker starts)."""
    async with asyncio.timeout(20), httpx.AsyncClient(timeout=5) as client:
        while True:
            assert process.popen is not None and process.popen.poll() is None, process.output()
            try:
                response = await client.get(f"http://127.0.0.1:{port}/metrics")
            except httpx.TransportError:
                await asyncio.sleep(0.05)
                continue
            assert response.status_code == 200
            return parse(response.text)


async def finish(stack: Stack, job: dict[str, Any]) -> str:
    response = await stack.client.get(f"/jobs/{job['id']}", params={"wait": 30})
    status: str = response.json()["status"]
    return status


async def wait_until_running(stack: Stack, job: dict[str, Any]) -> None:
    async with asyncio.timeout(20):
        while (await stack.job(job["id"]))["status"] != "running":
            await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_a_workers_jobs_are_counted_by_task_and_outcome(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    stack = await make_stack(with_worker=False)
    port = free_port()
    env = process_env(
        stack.settings.redis_url,
        JOBPULSE_QUEUE_NAME=stack.settings.queue_name,
        JOBPULSE_UPLOAD_DIR=str(stack.settings.upload_dir),
        JOBPULSE_WORKER_POLL_DELAY_S="0.05",
        JOBPULSE_WORKER_METRICS_PORT=str(port),
    )
    worker = worker_process(env, tmp_path / "worker.log").start()
    try:
        before = await scrape(port, worker)
        for status in ("succeeded", "failed", "cancelled"):
            assert value(before, "jobpulse_worker_jobs_finished_total", task="simulate", status=status) == 0
        assert value(before, "jobpulse_worker_jobs_in_progress", task="simulate") == 0

        assert await finish(stack, await stack.submit(steps=2, interval_ms=10)) == "succeeded"
        assert await finish(stack, await stack.submit(steps=2, interval_ms=10, fail_at=2)) == "failed"
        long_one = await stack.submit(steps=1000, interval_ms=20)
        await wait_until_running(stack, long_one)
        during = await scrape(port, worker)
        assert value(during, "jobpulse_worker_jobs_in_progress", task="simulate") == 1
        assert (await stack.client.delete(f"/jobs/{long_one['id']}")).status_code == 200
        after = during

        def finished(status: str) -> float | None:
            return value(after, "jobpulse_worker_jobs_finished_total", task="simulate", status=status)

        async with asyncio.timeout(20):  # the attempt ends at its next progress() after the DELETE
            while finished("cancelled") != 1:
                await asyncio.sleep(0.05)
                after = await scrape(port, worker)
    finally:
        worker.stop()

    assert (finished("succeeded"), finished("failed"), finished("retrying")) == (1, 1, 0)
    assert value(after, "jobpulse_worker_jobs_in_progress", task="simulate") == 0
    duration = "jobpulse_worker_job_duration_seconds"
    assert value(after, f"{duration}_count", task="simulate", status="succeeded") == 1
    took = value(after, f"{duration}_sum", task="simulate", status="succeeded")
    assert took is not None and 0.005 < took < 10  # two steps 10 ms apart
    # It ran under 10 s: in the 10 s bucket, and (a histogram's buckets are cumulative) in +Inf.
    assert value(after, f"{duration}_bucket", task="simulate", status="succeeded", le="10.0") == 1
    assert (value(after, "process_resident_memory_bytes") or 0) > 0


def test_a_taken_port_stops_the_worker_with_the_setting_named() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"JOBPULSE_WORKER_METRICS_PORT={port}"):
            metrics.serve(port)


def test_serve_and_stop_in_process() -> None:
    port = free_port()
    stop = metrics.serve(port)
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert "jobpulse_worker_jobs_finished_total" in response.text
    finally:
        stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1)


async def test_an_attempt_cut_short_by_the_worker_stopping_counts_as_retrying(stack: Stack) -> None:
    """In-process worker (same registry): stopped mid-job, the attempt records `retrying`."""

    def count(status: str) -> float:
        labels = {"task": "simulate", "status": status}
        return metrics.REGISTRY.get_sample_value("jobpulse_worker_jobs_finished_total", labels) or 0

    def in_progress() -> float:
        labels = {"task": "simulate"}
        return metrics.REGISTRY.get_sample_value("jobpulse_worker_jobs_in_progress", labels) or 0

    before = {status: count(status) for status in metrics.ATTEMPT_OUTCOMES}
    idle = in_progress()
    job = await stack.submit(steps=1000, interval_ms=20)
    await wait_until_running(stack, job)
    assert in_progress() == idle + 1
    await stack.worker.stop()
    assert (await stack.job(job["id"]))["status"] == "retrying"
    assert in_progress() == idle
    after = {status: count(status) for status in metrics.ATTEMPT_OUTCOMES}
    assert {status: after[status] - before[status] for status in after} == {
        "succeeded": 0,
        "failed": 0,
        "retrying": 1,
        "cancelled": 0,
        "interrupted": 0,
    }
