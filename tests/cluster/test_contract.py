"""The event contract's core cases with job events and state on a Redis Cluster, the queue on one node.

As tests/integration/test_events.py and test_jobs_api.py assert them on one Redis: replay from the
start, `Last-Event-ID` resume, 204 at the end, cancel, failure and `lost`; in-process uvicorn and arq.
"""

import asyncio

import anyio
import pytest
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from jobpulse.stack.redis_cluster import RedisCluster
from tests.cluster.conftest import assert_complete, stored_history, submit, submit_on_every_shard
from tests.conftest import Stack, StackFactory
from tests.support.sse import ids, read_events

pytestmark = pytest.mark.anyio


async def test_replay_from_the_start_on_every_shard_is_the_stored_history(
    make_cluster_stack: StackFactory, redis_cluster: RedisCluster, store_client: AsyncRedisCluster
) -> None:
    cluster_stack = await make_cluster_stack(progress_interval_ms=0)  # every update an event
    jobs = await submit_on_every_shard(
        redis_cluster, [cluster_stack.client], per_shard=1, steps=4, interval_ms=10
    )
    for job_id in jobs:
        live = await read_events(cluster_stack.client, job_id)  # joins while the job runs, or replays
        assert_complete(live, job_id, 4)
        assert live == await stored_history(store_client, job_id)
        assert await read_events(cluster_stack.client, job_id) == live  # a replay of the finished job


@pytest.mark.parametrize("how", ["header", "query"])
async def test_resume_from_the_middle_gets_exactly_the_rest(cluster_stack: Stack, how: str) -> None:
    job_id = await submit(cluster_stack.client, steps=20, interval_ms=20)
    first = await read_events(cluster_stack.client, job_id, limit=5)
    resume_at = first[-1].id
    if how == "header":
        rest = await read_events(cluster_stack.client, job_id, last_event_id=resume_at)
    else:
        rest = await read_events(cluster_stack.client, job_id, query=f"?last_event_id={resume_at}")
    assert ids(first + rest) == list(range(1, len(first + rest) + 1))  # no gap, no duplicate
    assert (first + rest)[-1].data["status"] == "succeeded"
    assert first + rest == await read_events(cluster_stack.client, job_id)


async def test_reconnect_after_terminal_event_gets_204(cluster_stack: Stack) -> None:
    job_id = await submit(cluster_stack.client, steps=2, interval_ms=0)
    events = await read_events(cluster_stack.client, job_id)
    response = await cluster_stack.client.get(
        f"/jobs/{job_id}/events", headers={"Last-Event-ID": events[-1].id}
    )
    assert response.status_code == 204
    assert response.content == b""
    response = await cluster_stack.client.get(f"/jobs/{job_id}/events?last_event_id={events[-1].id}")
    assert response.status_code == 204


async def test_cancel_running_job_aborts_it(cluster_stack: Stack) -> None:
    job_id = await submit(cluster_stack.client, steps=10_000, interval_ms=20)
    reader = asyncio.create_task(read_events(cluster_stack.client, job_id, deadline_s=15))
    with anyio.fail_after(10):
        while (await cluster_stack.job(job_id))["status"] != "running":
            await anyio.sleep(0.02)
    await anyio.sleep(0.2)
    response = await cluster_stack.client.delete(f"/jobs/{job_id}")
    assert response.status_code == 200
    events = await reader
    assert ids(events) == list(range(1, len(events) + 1))
    assert events[-1].data["status"] == "cancelled"
    worker = cluster_stack.worker.worker
    assert worker is not None
    with anyio.fail_after(5):
        while worker.job_tasks:  # the worker stopped the task: nothing is appended after the terminal event
            await anyio.sleep(0.05)
    final = await cluster_stack.job(job_id)
    assert final["status"] == "cancelled" and final["last_event_id"] == int(events[-1].id)
    assert (await cluster_stack.client.delete(f"/jobs/{job_id}")).status_code == 409


async def test_cancel_queued_job_never_starts(make_cluster_stack: StackFactory) -> None:
    stack = await make_cluster_stack(with_worker=False)
    job_id = await submit(stack.client, steps=3, interval_ms=0)
    reader = asyncio.create_task(read_events(stack.client, job_id, deadline_s=5))
    await anyio.sleep(0.2)
    response = await stack.client.delete(f"/jobs/{job_id}")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    events = await reader
    assert [e.data["status"] for e in events] == ["queued", "cancelled"]
    await stack.worker.start()
    await anyio.sleep(0.5)  # the worker polls every 50 ms: time enough to have picked it up
    assert await read_events(stack.client, job_id) == events
    assert (await stack.job(job_id))["started_at"] is None


async def test_failing_job_reports_its_error(cluster_stack: Stack) -> None:
    job_id = await submit(cluster_stack.client, steps=10, interval_ms=0, fail_at=4)
    events = await read_events(cluster_stack.client, job_id)
    assert ids(events) == list(range(1, len(events) + 1))
    last = events[-1]
    assert last.event == "status" and last.data["status"] == "failed"
    assert "simulated failure at step 4" in last.data["error"]
    assert [e.data["current"] for e in events if e.event == "progress"][-1] == 3
    failed = await cluster_stack.job(job_id)
    assert (
        failed["status"] == "failed" and "simulated failure" in failed["error"] and failed["result"] is None
    )


async def test_resume_before_retained_history_signals_lost_events(make_cluster_stack: StackFactory) -> None:
    stack = await make_cluster_stack(stream_maxlen=10, progress_interval_ms=0)
    job_id = await submit(stack.client, steps=30, interval_ms=0)
    with anyio.fail_after(10):
        while (await stack.job(job_id))["status"] != "succeeded":
            await anyio.sleep(0.05)
    events = await read_events(stack.client, job_id)
    assert ids(events)[0] == 24  # only the newest 10 of 33 events are retained
    lost, *rest = await read_events(stack.client, job_id, last_event_id="2")
    assert lost.event == "lost" and lost.id == ""
    assert lost.data["last_event_id"] == 2 and lost.data["first_retained_id"] == 24
    assert lost.data["job"]["status"] == "succeeded"
    assert rest == events
