"""`GET /jobs/{id}?wait=SECONDS`: answers when the job ends or the wait runs out, without polling Redis."""

import time

import anyio
import pytest
from redis.asyncio import Redis

from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.anyio


async def timed_get(stack: Stack, path: str) -> tuple[float, dict[str, object], int]:
    started = time.monotonic()
    response = await stack.client.get(path)
    return time.monotonic() - started, response.json(), response.status_code


async def test_returns_as_soon_as_the_job_ends(stack: Stack) -> None:
    job = await stack.submit(steps=5, interval_ms=100)
    elapsed, body, status = await timed_get(stack, f"/jobs/{job['id']}?wait=30")
    assert status == 200 and body["status"] == "succeeded" and body["result"] == {"steps": 5}
    assert elapsed < 5


async def test_returns_the_current_state_when_the_wait_runs_out(make_stack: StackFactory) -> None:
    stack = await make_stack(with_worker=False)
    job = await stack.submit(steps=1, interval_ms=0)
    elapsed, body, status = await timed_get(stack, f"/jobs/{job['id']}?wait=0.6")
    assert status == 200 and body["status"] == "queued"
    assert 0.6 <= elapsed < 3


async def test_a_cancel_ends_the_wait(make_stack: StackFactory) -> None:
    stack = await make_stack(with_worker=False)
    job = await stack.submit(steps=1, interval_ms=0)
    async with anyio.create_task_group() as tasks:
        results: list[tuple[float, dict[str, object], int]] = []

        async def wait() -> None:
            results.append(await timed_get(stack, f"/jobs/{job['id']}?wait=30"))

        tasks.start_soon(wait)
        await anyio.sleep(0.3)
        assert (await stack.client.delete(f"/jobs/{job['id']}")).status_code == 200
    ((elapsed, body, status),) = results
    assert status == 200 and body["status"] == "cancelled" and elapsed < 5


async def test_a_finished_job_answers_at_once(stack: Stack) -> None:
    job = await stack.submit(steps=1, interval_ms=0)
    await stack.client.get(f"/jobs/{job['id']}?wait=30")
    elapsed, body, _ = await timed_get(stack, f"/jobs/{job['id']}?wait=30")
    assert body["status"] == "succeeded" and elapsed < 0.5


async def test_waiting_costs_no_redis_commands_until_something_happens(
    make_stack: StackFactory, redis: Redis
) -> None:
    stack = await make_stack(with_worker=False, hub_ping_interval_s=60)
    job = await stack.submit(steps=1, interval_ms=0)
    before = (await redis.info("stats"))["total_commands_processed"]
    elapsed, body, _ = await timed_get(stack, f"/jobs/{job['id']}?wait=2")
    spent = (await redis.info("stats"))["total_commands_processed"] - before
    assert body["status"] == "queued" and elapsed >= 2
    # state read, subscribe, one catch-up read, state read again, unsubscribe, our INFO: a handful,
    # where polling every 50 ms would have been 40 or more.
    assert spent <= 10, spent


@pytest.mark.parametrize("wait", ["61", "-1", "soon", "nan", "inf"])
async def test_a_wait_out_of_bounds_is_422(stack: Stack, wait: str) -> None:
    job = await stack.submit(steps=1, interval_ms=0)
    response = await stack.client.get(f"/jobs/{job['id']}", params={"wait": wait})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", "wait"] and set(error) == {"loc", "msg", "type"}


async def test_wait_on_an_unknown_job_is_404(stack: Stack) -> None:
    response = await stack.client.get("/jobs/" + "A" * 22, params={"wait": "5"})
    assert response.status_code == 404
