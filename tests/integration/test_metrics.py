"""The web's Prometheus metrics (jobpulse.web.metrics) and `GET /metrics` (jobpulse.web.routes.metrics)."""

import asyncio
import uuid

import pytest
from arq.connections import ArqRedis
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import SecretStr
from redis.asyncio import Redis

from jobpulse.ids import new_job_id
from jobpulse.keys import running_attempts_key
from jobpulse.stack.redis_server import free_port
from jobpulse.web.access.limits import StreamSlots
from jobpulse.web.metrics import WebMetrics
from jobpulse.web.queue import JobQueue
from jobpulse.web.streaming.stream_counters import StreamCounters
from tests.conftest import Stack, StackFactory
from tests.support.prometheus import Samples, parse, value
from tests.support.sse import read_events
from worker.tasks import registry

pytestmark = pytest.mark.anyio


async def test_the_collector_reads_the_stream_counters_and_slots_when_scraped(redis: Redis) -> None:
    """The stream code bumps plain ints; nothing is read until a scrape, and then everything is."""
    queue = JobQueue(ArqRedis(connection_pool=redis.connection_pool), f"test:{uuid.uuid4().hex[:8]}")
    slots, counters = StreamSlots(per_client=0, capacity=10), StreamCounters()
    metrics = WebMetrics(registry, queue, slots, counters)
    before = parse(await metrics.exposition())
    for name in ("events_delivered", "slow_clients_dropped", "hub_reconnects"):
        assert value(before, f"jobpulse_web_{name}_total") == 0
    assert value(before, "jobpulse_web_open_streams") == 0
    assert value(before, "jobpulse_web_stream_capacity") == 10

    counters.delivered += 3
    counters.slow_dropped += 1
    counters.hub_reconnects += 2
    slot = slots.take("a client")
    after = parse(await metrics.exposition())
    assert value(after, "jobpulse_web_events_delivered_total") == 3
    assert value(after, "jobpulse_web_slow_clients_dropped_total") == 1
    assert value(after, "jobpulse_web_hub_reconnects_total") == 2
    assert value(after, "jobpulse_web_open_streams") == 1
    slot.release()
    assert value(parse(await metrics.exposition()), "jobpulse_web_open_streams") == 0
    # And the process's own, as any Prometheus client serves them.
    assert (value(after, "process_resident_memory_bytes") or 0) > 0


async def test_queue_depth_leaves_out_the_running_jobs_arq_keeps_on_its_queue(redis: Redis) -> None:
    queue = JobQueue(ArqRedis(connection_pool=redis.connection_pool), f"test:{uuid.uuid4().hex[:8]}")
    metrics = WebMetrics(registry, queue, StreamSlots(per_client=0), StreamCounters())
    for _ in range(3):
        await queue.enqueue("simulate", new_job_id(), {"steps": 1, "interval_ms": 0})
    samples = parse(await metrics.exposition())
    assert (value(samples, "jobpulse_queue_depth"), value(samples, "jobpulse_jobs_running")) == (3, 0)
    # A worker took one: it stays in arq's sorted set until it ends, and has a heartbeat in ours.
    await redis.zadd(running_attempts_key(), {f"{new_job_id()}:1": 1})
    samples = parse(await metrics.exposition())
    assert (value(samples, "jobpulse_queue_depth"), value(samples, "jobpulse_jobs_running")) == (2, 1)
    assert value(samples, "jobpulse_web_jobs_submitted_total", task="simulate") == 3
    assert value(samples, "jobpulse_web_jobs_submitted_total", task="process_upload") == 0


async def test_without_redis_the_queue_gauges_are_left_out_and_the_rest_served() -> None:
    unreachable = ArqRedis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    try:
        metrics = WebMetrics(
            registry, JobQueue(unreachable, "arq:queue"), StreamSlots(per_client=0), StreamCounters()
        )
        samples = parse(await metrics.exposition())
    finally:
        await unreachable.aclose()
    assert value(samples, "jobpulse_queue_depth") is None
    assert value(samples, "jobpulse_jobs_running") is None
    assert value(samples, "jobpulse_web_open_streams") == 0


async def scrape(stack: Stack) -> Samples:
    response = await stack.client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return parse(response.text)


async def wait_for_open_streams(stack: Stack, expected: int) -> None:
    async with asyncio.timeout(10):
        while value(await scrape(stack), "jobpulse_web_open_streams") != expected:
            await asyncio.sleep(0.02)


async def test_metrics_endpoint_counts_submissions_queue_and_open_streams(make_stack: StackFactory) -> None:
    stack = await make_stack(with_worker=False)
    first = await stack.submit(steps=1, interval_ms=0)
    await stack.submit(steps=1, interval_ms=0)
    upload = await stack.client.post("/uploads", files={"file": ("a.txt", b"hello\n", "text/plain")})
    assert upload.status_code == 202, upload.text
    samples = await scrape(stack)
    assert value(samples, "jobpulse_web_jobs_submitted_total", task="simulate") == 2
    assert value(samples, "jobpulse_web_jobs_submitted_total", task="process_upload") == 1
    assert value(samples, "jobpulse_queue_depth") == 3  # no worker: all of them wait
    assert value(samples, "jobpulse_web_open_streams") == 0

    # A long-poll and an event stream each hold a slot while they are open.
    long_poll = asyncio.create_task(stack.client.get(f"/jobs/{first['id']}", params={"wait": 30}))
    await wait_for_open_streams(stack, 1)
    async with stack.client.stream("GET", f"/jobs/{first['id']}/events") as stream:
        assert stream.status_code == 200
        await wait_for_open_streams(stack, 2)
        assert (await stack.client.delete(f"/jobs/{first['id']}")).status_code == 200
        await stream.aread()  # the stream ends with the `cancelled` event
    assert (await long_poll).json()["status"] == "cancelled"
    await wait_for_open_streams(stack, 0)

    paths = (await stack.client.get("/openapi.json")).json()["paths"]
    assert "/metrics" not in paths  # for operators, not API clients


async def test_events_delivered_counts_each_event_written_to_each_stream(make_stack: StackFactory) -> None:
    stack = await make_stack(progress_interval_ms=0)
    job = await stack.submit(steps=10, interval_ms=5, start_delay_ms=300)
    before = value(await scrape(stack), "jobpulse_web_events_delivered_total")
    results = await asyncio.gather(*(read_events(stack.client, job["id"]) for _ in range(3)))
    assert [len(events) for events in results] == [13, 13, 13]
    after = value(await scrape(stack), "jobpulse_web_events_delivered_total")
    assert before == 0 and after == 3 * 13


async def test_a_metrics_token_is_required_once_set(make_stack: StackFactory) -> None:
    stack = await make_stack(with_worker=False, metrics_token=SecretStr("a-scrape-token"))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic a-scrape-token"}):
        refused = await stack.client.get("/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert "jobpulse_" not in refused.text
        assert refused.headers["www-authenticate"].startswith("Bearer")
    allowed = await stack.client.get("/metrics", headers={"Authorization": "Bearer a-scrape-token"})
    assert allowed.status_code == 200
    assert "jobpulse_web_open_streams" in allowed.text


async def test_the_metrics_are_the_apps_own(make_stack: StackFactory) -> None:
    """Two apps in one process (as in these tests) count apart: no global registry."""
    one, two = await make_stack(with_worker=False), await make_stack(with_worker=False)
    await one.submit(steps=1, interval_ms=0)
    assert value(await scrape(one), "jobpulse_web_jobs_submitted_total", task="simulate") == 1
    assert value(await scrape(two), "jobpulse_web_jobs_submitted_total", task="simulate") == 0
