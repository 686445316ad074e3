"""Every script call routed by the job's slot, nothing crossing slots: the store's whole lifecycle of a job
(created, queued again by the reconciler, running, progress, handed on, running again, succeeded, refused
writes) against the real cluster, checked on each node directly rather than by reading the key table."""

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from jobpulse import keys, queue_codec
from jobpulse.connections import StoreCluster, store_cluster
from jobpulse.ids import new_job_id
from jobpulse.settings import Settings
from jobpulse.stack.redis_cluster import RedisCluster
from jobpulse.status import JobStatus
from jobpulse.store import JobAlreadyFinished, JobStore, StaleAttempt
from jobpulse.worker.reconciler import Reconciler
from tests.cluster.conftest import primary_port
from worker.tasks import registry

pytestmark = pytest.mark.anyio

GRACE_S = 0.2
PARAMS = {"steps": 1, "interval_ms": 0}
# The commands that read or write a job's keys (scripts, and the reads the web and the reconciler make).
JOB_COMMANDS = ("evalsha", "eval", "hgetall", "xrange", "exists")
# Errors a node answers that would mean a call went to the wrong node, or a script crossed slots.
WRONG_NODE = ("MOVED", "ASK", "CROSSSLOT", "TRYAGAIN", "CLUSTERDOWN")


@pytest.fixture
async def client(cluster_settings: Settings) -> AsyncIterator[StoreCluster]:
    """The store's cluster client, as a worker makes it (`jobpulse.connections`)."""
    store_redis = store_cluster(
        cluster_settings, client_name="jobpulse-test-store", max_connections=4, ride_out_s=5
    )
    yield store_redis
    await store_redis.aclose()


class Lane:
    """A store and a reconciler on a queue of their own, so that a pass looks at one job only."""

    def __init__(self, client: StoreCluster, settings: Settings, queue_redis: Redis, arq: ArqRedis) -> None:
        self.settings = settings.model_copy(
            update={"queue_name": f"{settings.queue_name}:{new_job_id()}", "reconcile_after_s": GRACE_S}
        )
        self.store = JobStore(client, self.settings, queue_redis=queue_redis, batch_progress=True)
        self.reconciler = Reconciler(arq, self.store, self.settings, registry)
        self.index = keys.unfinished_jobs_key(self.settings.queue_name)

    async def reconciled(self, job_id: str) -> None:
        """Once the grace is over, a pass changes the job."""
        await asyncio.sleep(GRACE_S + 0.05)
        with anyio.fail_after(5):
            while await self.reconciler.reconcile() != [job_id]:
                await anyio.sleep(0.05)


@pytest.fixture
async def arq(cluster_settings: Settings) -> AsyncIterator[ArqRedis]:
    queue = ArqRedis.from_url(cluster_settings.queue_url)
    queue.job_serializer, queue.job_deserializer = queue_codec.encode, queue_codec.decode
    yield queue
    await queue.aclose()


async def node_stats(cluster: RedisCluster) -> dict[int, dict[str, int]]:
    """Per primary: calls of each of JOB_COMMANDS, and error replies by their prefix."""
    stats: dict[int, dict[str, int]] = {}
    for node in cluster.primaries():
        async with Redis(port=node.port) as plain:
            commands, errors = await plain.info("commandstats"), await plain.info("errorstats")
        stats[node.port] = {
            name: int(commands.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in JOB_COMMANDS
        }
        stats[node.port] |= {kind: int(count["count"]) for kind, count in errors.items()}
    return stats


def difference(
    before: dict[int, dict[str, int]], after: dict[int, dict[str, int]]
) -> dict[int, dict[str, int]]:
    return {
        port: {
            name: count - before[port].get(name, 0)
            for name, count in counts.items()
            if count != before[port].get(name, 0)
        }
        for port, counts in after.items()
    }


def assert_routed_to(port: int, changes: dict[int, dict[str, int]]) -> None:
    """Job commands reached the node on `port` and no other; no node answered a wrong-node error."""
    assert any(changes[port].get(name) for name in JOB_COMMANDS), changes
    for other, counts in changes.items():
        assert not any(counts.get(f"errorstat_{kind}") for kind in WRONG_NODE), (other, counts)
        if other != port:
            assert not any(counts.get(name) for name in JOB_COMMANDS), (other, counts)


async def keys_on(port: int, pattern: str) -> set[bytes]:
    """The keys matching `pattern` that the node on `port` itself holds (SCAN is never redirected)."""
    async with Redis(port=port) as plain:
        return {key async for key in plain.scan_iter(match=pattern, count=1000)}


def ids_on_every_primary(cluster: RedisCluster) -> dict[int, str]:
    """One fresh job id for each primary, by its port."""
    chosen: dict[int, str] = {}
    while len(chosen) < cluster.primary_count:
        job_id = new_job_id()
        chosen.setdefault(primary_port(cluster, job_id), job_id)
    return chosen


async def test_a_jobs_every_call_goes_to_its_slots_primary_and_its_keys_stay_there(
    redis_cluster: RedisCluster,
    client: StoreCluster,
    cluster_settings: Settings,
    queue_redis: Redis,
    arq: ArqRedis,
) -> None:
    jobs = ids_on_every_primary(redis_cluster)
    lanes = {job_id: Lane(client, cluster_settings, queue_redis, arq) for job_id in jobs.values()}
    # Until running its second attempt, one job at a time: each node's counters tell where its calls went.
    for port, job_id in jobs.items():
        lane = lanes[job_id]
        before = await node_stats(redis_cluster)
        await lane.store.create(job_id, "simulate", PARAMS)  # never enqueued: the reconciler's to queue
        await lane.reconciled(job_id)  # its `unqueued` path: released on the queue, then written
        state = await lane.store.get(job_id)
        assert (
            state is not None and state.status is JobStatus.QUEUED and "queued again" in (state.error or "")
        )
        await lane.store.set_status(job_id, JobStatus.RUNNING, attempt=1)
        await asyncio.gather(*(lane.store.set_progress(job_id, attempt=1, progress=p) for p in (10, 20)))
        await lane.reconciled(job_id)  # no heartbeat was ever written for attempt 1: handed on
        state = await lane.store.get(job_id)
        assert state is not None and (state.status, state.attempt) == (JobStatus.RETRYING, 1)
        await lane.store.set_status(job_id, JobStatus.RUNNING, attempt=2, expect_attempt=1)
        with pytest.raises(StaleAttempt):
            await lane.store.set_progress(job_id, attempt=1, progress=30)
        assert_routed_to(port, difference(before, await node_stats(redis_cluster)))

    # Progress of all three at once through one store: its batcher sends one pipeline, which the cluster
    # client splits by node; each node runs exactly its own job's calls.
    batching = JobStore(client, cluster_settings, queue_redis=queue_redis, batch_progress=True)
    before = await node_stats(redis_cluster)
    steps = range(1, 11)

    async def report(job_id: str) -> None:
        for step in steps:
            await batching.set_progress(job_id, attempt=2, progress=step * 10, current=step, total=len(steps))

    await asyncio.gather(*(report(job_id) for job_id in jobs.values()))
    changes = difference(before, await node_stats(redis_cluster))
    for port in jobs:
        assert changes[port].get("evalsha") == len(steps), changes
        assert not any(changes[port].get(f"errorstat_{kind}") for kind in WRONG_NODE), changes

    for port, job_id in jobs.items():
        lane = lanes[job_id]
        before = await node_stats(redis_cluster)
        await lane.store.set_status(
            job_id, JobStatus.SUCCEEDED, attempt=2, result={"ok": True}, expect_attempt=2
        )
        with pytest.raises(JobAlreadyFinished):
            await lane.store.set_status(job_id, JobStatus.FAILED, attempt=2, error="late")
        state, events = await lane.store.state_and_events(job_id, 0, 100)
        assert state is not None and state.status is JobStatus.SUCCEEDED and state.result == {"ok": True}
        assert [e.id for e in events] == list(range(1, state.last_event_id + 1))
        assert [e.id for e in await lane.store.read_events(job_id, 3, 100)] == list(
            range(4, state.last_event_id + 1)
        )
        assert_routed_to(port, difference(before, await node_stats(redis_cluster)))

        # All of the job's keys on its primary, none on the others.
        tagged = f"*{{{job_id}}}*"
        assert await keys_on(port, tagged) == {
            keys.state_key(job_id).encode(),
            keys.events_key(job_id).encode(),
        }
        async with Redis(port=port) as plain:
            assert await plain.exists(keys.state_key(job_id), keys.events_key(job_id)) == 2
        for other in jobs:
            if other != port:
                assert await keys_on(other, tagged) == set()

        # What goes with the queue stays with it: the index is on the queue's Redis, emptied by the final
        # event, and nowhere on the cluster.
        for other in jobs:
            assert await keys_on(other, f"{lane.index}*") == set()
        assert await queue_redis.zcard(lane.index) == 0
        await asyncio.sleep(GRACE_S + 0.05)
        assert await lane.reconciler.reconcile() == []
