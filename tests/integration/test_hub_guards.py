"""The hub's loops over streams: one stream that raises costs the others nothing (issue 18's "same shape
elsewhere": closing every stream at shutdown, ending the streams of vanished jobs, catching up after a
subscribe). Real Redis where the hub reads it; the raising stream is a subscription whose push callback
fails, as a bug in one stream would."""

import pytest
from redis.asyncio import Redis

from jobpulse.settings import Settings
from jobpulse.store import JobStore
from jobpulse.web.streaming.hub import Hub, _Channel
from jobpulse.web.streaming.subscription import Subscription

pytestmark = pytest.mark.anyio


def boom() -> None:
    raise RuntimeError("a bug in this stream")


def watched(hub: Hub, store: JobStore, job_ids: list[str]) -> list[Subscription]:
    """One raising subscription per job, registered with the hub as `open` would (no Redis round trip)."""
    subscriptions = []
    for job_id in job_ids:
        channel = _Channel(job_id, job_id.encode())
        subscription = Subscription(job_id, 0, store, max_buffered=8)
        subscription.attach(boom)
        channel.subscriptions.add(subscription)
        hub._channels[channel.name] = channel
        subscriptions.append(subscription)
    return subscriptions


def hub_for(redis: Redis, settings: Settings) -> tuple[Hub, JobStore]:
    store = JobStore(redis, settings)
    return Hub(redis, store, max_buffered=8), store


async def test_closing_every_stream_goes_past_one_that_raises(
    redis: Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    hub, store = hub_for(redis, settings)
    subscriptions = watched(hub, store, ["job-a", "job-b", "job-c"])
    hub.close_streams()  # SIGTERM: every stream must end, or uvicorn waits for them
    assert all(subscription.closed for subscription in subscriptions)
    logged = {
        getattr(record, "job_id", None) for record in caplog.records if "closing its stream" in record.message
    }
    assert logged == {"job-a", "job-b", "job-c"}


async def test_the_streams_of_every_vanished_job_end_though_one_raises(
    redis: Redis, settings: Settings
) -> None:
    hub, store = hub_for(redis, settings)
    subscriptions = watched(hub, store, ["gone-1", "gone-2"])  # no state in Redis: both vanished
    assert sorted(await hub.end_streams_of_vanished_jobs()) == ["gone-1", "gone-2"]
    assert all(subscription.closed for subscription in subscriptions)


async def test_a_subscribe_confirmation_reaches_every_stream_though_one_raises(
    redis: Redis, settings: Settings
) -> None:
    hub, store = hub_for(redis, settings)
    channel = _Channel("job-x", b"job-x")
    hub._channels[channel.name] = channel
    first, second = Subscription("job-x", 0, store, 8), Subscription("job-x", 0, store, 8)
    for subscription in (first, second):
        subscription.attach(boom)
        channel.subscriptions.add(subscription)
    hub._dispatch([b"subscribe", b"job-x", 1])  # would raise out of the hub's reader, reconnecting it
    assert channel.ready.is_set()
    assert first.needs_fetch and second.needs_fetch  # each reads what came before from the stream
