"""The atomic job store: numbering, guards, trimming and expiry, on a real Redis."""

import json
from typing import Any

import pytest
from redis.asyncio import Redis

from jobpulse import keys
from jobpulse.ids import new_job_id
from jobpulse.models import ProgressEvent
from jobpulse.settings import Settings
from jobpulse.status import EventType, JobStatus
from jobpulse.store import JobAlreadyFinished, JobNotFound, JobStore, JobStoreError, StaleAttempt
from jobpulse.worker.redis_pool import worker_redis

pytestmark = pytest.mark.anyio


async def test_events_are_numbered_from_one_and_state_follows(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    job_id = new_job_id()
    created = await store.create(job_id, "simulate", {"steps": 1})
    assert created.last_event_id == 1 and created.status is JobStatus.QUEUED
    assert await store.set_status(job_id, JobStatus.RUNNING, attempt=1) == 2
    assert await store.set_progress(job_id, attempt=1, progress=40, message="m") == 3
    state = await store.get(job_id)
    assert state is not None
    assert (state.status, state.progress, state.message, state.attempt) == (JobStatus.RUNNING, 40, "m", 1)
    assert [e.id for e in await store.read_events(job_id, 0, 10)] == [1, 2, 3]
    assert [e.id for e in await store.read_events(job_id, 1, 10)] == [2, 3]


async def test_nothing_is_appended_after_a_terminal_event(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    job_id = new_job_id()
    await store.create(job_id, "simulate", {})
    await store.set_status(job_id, JobStatus.CANCELLED, attempt=0)
    with pytest.raises(JobAlreadyFinished):
        await store.set_status(job_id, JobStatus.RUNNING, attempt=1)
    with pytest.raises(JobAlreadyFinished):
        await store.set_progress(job_id, attempt=1, progress=1)
    events = await store.read_events(job_id, 0, 10)
    assert [e.final for e in events] == [False, True]


async def test_unknown_job_and_duplicate_create_are_refused(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    with pytest.raises(JobNotFound):
        await store.set_progress(new_job_id(), attempt=1, progress=1)
    job_id = new_job_id()
    await store.create(job_id, "simulate", {})
    with pytest.raises(JobStoreError, match="already exists"):
        await store.create(job_id, "simulate", {})


async def test_stale_attempt_is_refused(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    job_id = new_job_id()
    await store.create(job_id, "simulate", {})
    await store.set_status(job_id, JobStatus.RUNNING, attempt=2)
    with pytest.raises(StaleAttempt):
        await store.set_status(job_id, JobStatus.SUCCEEDED, attempt=1, expect_attempt=1)


async def test_history_is_trimmed_and_finished_jobs_expire(redis: Redis, settings: Settings) -> None:
    settings = settings.model_copy(update={"stream_maxlen": 10, "retention_s": 60, "active_ttl_s": 3600})
    store = JobStore(redis, settings)
    job_id = new_job_id()
    await store.create(job_id, "simulate", {})
    assert 3500 < await redis.ttl(keys.state_key(job_id)) <= 3600
    for i in range(30):
        await store.set_progress(job_id, attempt=0, progress=i)
    assert await redis.xlen(keys.events_key(job_id)) == 10
    assert await store.first_retained_id(job_id) == 22
    await store.set_status(job_id, JobStatus.FAILED, attempt=0, error="x")
    for key in (keys.state_key(job_id), keys.events_key(job_id)):
        assert 0 < await redis.ttl(key) <= 60


async def test_one_jobs_keys_share_a_cluster_hash_slot() -> None:
    job_id = new_job_id()
    tags = {key.split("{")[1].split("}")[0] for key in (keys.state_key(job_id), keys.events_key(job_id))}
    assert tags == {job_id}


async def test_results_that_json_cannot_hold_are_stored_as_text(redis: Redis, settings: Settings) -> None:
    store = JobStore(redis, settings)
    job_id = new_job_id()
    await store.create(job_id, "simulate", {})
    await store.set_status(job_id, JobStatus.SUCCEEDED, attempt=1, result={"when": object, "n": 1})
    state = await store.get(job_id)
    assert state is not None
    assert state.result["n"] == 1 and "object" in state.result["when"]


async def test_a_retried_append_is_written_once(redis: Redis, settings: Settings) -> None:
    """What the worker's client does after a lost reply: the same script call again, same arguments."""
    store = JobStore(redis, settings)
    job_id = new_job_id()
    await store.create(job_id, "simulate", {})
    data = json.dumps({"job_id": job_id, "ts": 1})
    for final, event_type in ((False, EventType.PROGRESS), (True, EventType.STATUS)):
        write = {
            "event_type": event_type,
            "data": data,
            "final": final,
            "fields": {},
            "write_id": f"w{final}",
        }
        first = await store._run(job_id, mode="append", **write)  # type: ignore[arg-type]
        again = await store._run(job_id, mode="append", **write)  # type: ignore[arg-type]
        assert again == first  # the retry answers the id written the first time
    assert [event.id for event in await store.read_events(job_id, 0, 10)] == [1, 2, 3]
    # distinct writes with equal contents are distinct events
    other = new_job_id()
    await store.create(other, "simulate", {})
    ids = [await store.set_progress(other, attempt=0, progress=5) for _ in range(2)]
    assert ids == [2, 3]


async def test_progress_is_stored_and_announced_as_the_model_writes_it(
    redis: Redis, settings: Settings
) -> None:
    """The worker writes progress JSON without building the model, through its own client: same bytes."""
    client = worker_redis(settings)
    store = JobStore(client, settings)
    job_id = new_job_id()
    await store.create(job_id, "simulate", {})
    await store.set_status(job_id, JobStatus.RUNNING, attempt=1)
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(keys.live_channel(job_id))
        confirmation = await pubsub.get_message(timeout=5)
        assert confirmation is not None and confirmation["type"] == "subscribe"
        updates: list[dict[str, Any]] = [
            {
                "progress": 12.5,
                "message": 'é ✓ "quoted"\n',
                "current": 1,
                "total": 8,
                "ts": 1_700_000_000.123456,
            },
            {"progress": 40, "ts": 1_700_000_001},  # whole numbers, as the model writes them: 40.0
            {"progress": 0.00001, "message": "", "current": 0, "ts": 1e-05},
        ]
        for update in updates:
            event_id = await store.set_progress(job_id, attempt=1, **update)
            expected = ProgressEvent(job_id=job_id, **update).model_dump_json(exclude_none=True).encode()
            entry = await redis.xrange(keys.events_key(job_id), min=f"0-{event_id}", max=f"0-{event_id}")
            assert entry == [
                (f"0-{event_id}".encode(), {b"type": b"progress", b"data": expected, b"final": b"0"})
            ]
            live = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            assert live is not None and live["data"] == b"%d\nprogress\n0\n%b" % (event_id, expected)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        await client.aclose()
