"""Fixtures for the Redis Cluster cases (issue 19): job events and state on a real cluster, the queue apart.

The session starts one private cluster on loopback (3 primaries + 3 replicas, `jobpulse.stack.redis_cluster`)
that the non-destructive tests share: each uses a queue name and job ids of its own, so nothing is flushed.
A test that kills a node or moves a slot takes `own_cluster`, started for it alone. arq's queue and the
workers' bookkeeping live on the session's plain Redis (`redis_server`), as `JOBPULSE_QUEUE_REDIS_URL` says.
"""

import gc
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.crc import key_slot

from jobpulse import keys
from jobpulse.events import event_id_from_entry, from_stream_entry
from jobpulse.settings import Settings
from jobpulse.stack.redis_cluster import ClusterNode, RedisCluster
from jobpulse.stack.redis_server import RedisServer
from tests.conftest import Stack, StackFactory, start_stack, stop_stack
from tests.support.sse import Event

TestFunction = TypeVar("TestFunction", bound=Callable[..., Any])


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """The session's cluster, shared: tests keep to their own queue names and job ids."""
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture
def own_cluster() -> Iterator[RedisCluster]:
    """A cluster for one test that kills nodes or moves slots, so that the shared one stays intact.

    Torn down after the test's stacks (`make_own_cluster_stack`); what they left to the garbage collector
    is collected first, inside the test (see `ignores_redis_py_node_leaks`)."""
    with RedisCluster() as cluster:
        yield cluster
        gc.collect()


def ignores_redis_py_node_leaks(test: TestFunction) -> TestFunction:
    """For a test that makes clients follow a failover or a slot move: redis-py's leak's warnings, ignored.

    redis-py 5's asyncio cluster client (arq 0.28 pins redis<6) replaces its node objects on a topology
    refresh (`NodesManager.set_nodes`) and disconnects the replaced ones in a task it does not await; a
    connection busy at that moment goes back to the replaced node and is never closed: its finalizer warns
    ("unclosed Connection", "Unclosed ClusterNode object", an unclosed socket or StreamWriter) and closes
    it. redis/redis-py#3572 (fixed upstream by PR #4057, after the 5.x line). Harmless, but the suite turns
    warnings into errors.
    """
    for mark in (
        pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning"),
        pytest.mark.filterwarnings("ignore:loop is closed:ResourceWarning"),
    ):
        test = mark(test)
    return test


def settings_on(cluster: RedisCluster, redis_server: RedisServer, tmp_path: Path) -> Settings:
    """As tests/conftest.py's `settings`, with the store on `cluster` and the queue on `redis_server`."""
    return Settings(
        redis_url=cluster.url,
        redis_cluster=True,
        queue_redis_url=redis_server.url,
        queue_name=f"test-cluster:{uuid.uuid4().hex[:8]}",
        worker_poll_delay_s=0.05,
        keepalive_s=15,
        upload_dir=tmp_path / "uploads",
        submissions_per_minute=0,
        max_streams_per_client=0,
    )


@pytest.fixture
def cluster_settings(redis_cluster: RedisCluster, redis_server: RedisServer, tmp_path: Path) -> Settings:
    return settings_on(redis_cluster, redis_server, tmp_path)


@pytest.fixture
async def queue_redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """The queue's Redis (the session's plain one); not flushed: other tests' queues live there too."""
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def make_cluster_stack(cluster_settings: Settings, queue_redis: Redis) -> AsyncIterator[StackFactory]:
    """In-process uvicorn + arq worker (tests/conftest.py's) on the shared cluster; `redis_url=` another
    cluster's URL puts them on that one. `Stack.redis` is the queue's Redis."""
    started: list[Stack] = []

    async def make(*, with_worker: bool = True, **changes: Any) -> Stack:
        stack = await start_stack(
            cluster_settings.model_copy(update=changes), queue_redis, with_worker=with_worker
        )
        started.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in reversed(started):
            await stop_stack(stack)


@pytest.fixture
async def make_own_cluster_stack(own_cluster: RedisCluster, make_cluster_stack: StackFactory) -> StackFactory:
    """As `make_cluster_stack`, on `own_cluster`; set up after it, so its stacks stop before it does."""

    async def make(*, with_worker: bool = True, **changes: Any) -> Stack:
        return await make_cluster_stack(with_worker=with_worker, **{"redis_url": own_cluster.url, **changes})

    return make


@pytest.fixture
async def cluster_stack(make_cluster_stack: StackFactory) -> Stack:
    return await make_cluster_stack()


def cluster_client(cluster: RedisCluster) -> AsyncRedisCluster:
    """A plain redis-py cluster client of the test's own, to read what the cluster holds."""
    client: AsyncRedisCluster = AsyncRedisCluster.from_url(cluster.url)
    return client


@pytest.fixture
async def store_client(redis_cluster: RedisCluster) -> AsyncIterator[AsyncRedisCluster]:
    client = cluster_client(redis_cluster)
    yield client
    await client.aclose()


def job_slot(job_id: str) -> int:
    return key_slot(keys.state_key(job_id).encode())


def primary_port(cluster: RedisCluster, job_id: str) -> int:
    """The port of the primary that serves the job's slot now."""
    return cluster.primary_of_slot(job_slot(job_id)).port


class SlotOwners:
    """Which primary serves each slot, read once (`CLUSTER NODES`): for many jobs, rather than a
    blocking read of the topology for each."""

    def __init__(self, cluster: RedisCluster) -> None:
        self._ranges: list[tuple[int, int, int]] = []  # first slot, last slot, primary's port
        for row in cluster.topology():
            if "master" in row["flags"] and "fail" not in row["flags"]:
                for part in row["slots"].split():
                    if not part.startswith("["):  # not a slot being migrated
                        first, _, last = part.partition("-")
                        self._ranges.append((int(first), int(last or first), int(row["port"])))

    def port_of(self, job_id: str) -> int:
        slot = job_slot(job_id)
        return next(port for first, last, port in self._ranges if first <= slot <= last)


def node_at(cluster: RedisCluster, port: int) -> ClusterNode:
    return next(node for node in cluster.nodes if node.port == port)


async def stored_history(client: AsyncRedisCluster, job_id: str) -> list[Event]:
    """The job's history as the cluster holds it, in the shape a watcher receives it."""
    entries = await client.xrange(keys.events_key(job_id))
    stored = [from_stream_entry(entry_id, fields) for entry_id, fields in entries]
    assert [e.id for e in stored] == [event_id_from_entry(entry_id) for entry_id, _ in entries]
    return [Event(str(e.id), e.type, json.loads(e.data)) for e in stored]


def assert_complete(history: list[Event], job_id: str, steps: int) -> None:
    """Every event of a `simulate` run once, in order: queued, running, each step, succeeded."""
    assert [int(event.id) for event in history] == list(range(1, steps + 4))
    assert all(event.data["job_id"] == job_id for event in history)
    assert [(e.event, e.data.get("status")) for e in history[:2]] == [
        ("status", "queued"),
        ("status", "running"),
    ]
    assert [e.data["current"] for e in history[2:-1] if e.event == "progress"] == list(range(1, steps + 1))
    assert history[-1].is_terminal
    assert history[-1].data["status"] == "succeeded" and history[-1].data["result"] == {"steps": steps}


async def submit(client: httpx.AsyncClient, **params: int) -> str:
    response = await client.post("/jobs", json={"task": "simulate", "params": params})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def submit_on_every_shard(
    cluster: RedisCluster,
    clients: list[httpx.AsyncClient],
    *,
    per_shard: int,
    at_least: int = 0,
    **params: int,
) -> list[str]:
    """Submits jobs (alternately through `clients`) until each primary serves `per_shard` of them and
    `at_least` are submitted. Ids are the web's (random): how many that takes is chance, bounded here."""
    primaries = {node.port for node in cluster.primaries()}
    assert len(primaries) == cluster.primary_count
    owners = SlotOwners(cluster)
    job_ids: list[str] = []
    on: dict[int, int] = dict.fromkeys(primaries, 0)
    while min(on.values()) < per_shard or len(job_ids) < at_least:
        assert len(job_ids) < 30 * per_shard + at_least, f"ids fell on too few shards: {on}"
        job_id = await submit(clients[len(job_ids) % len(clients)], **params)
        job_ids.append(job_id)
        on[owners.port_of(job_id)] += 1
    return job_ids


class Watcher:
    """One client of one job: the events it received, in order, over however many connections."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.segments: list[list[Event]] = []
        self.arrivals: list[float] = []  # when each of `events` arrived (monotonic clock)
        self.refusals: list[str] = []  # answers other than a stream (a 503 while a shard has no primary)

    @property
    def events(self) -> list[Event]:
        return [event for segment in self.segments for event in segment]

    @property
    def last_id(self) -> str | None:
        return next((event.id for event in reversed(self.events) if event.id), None)

    @property
    def newest(self) -> int:
        return int(self.last_id or 0)

    @property
    def ended(self) -> bool:
        return bool(self.events) and self.events[-1].is_terminal

    async def read(self, url: str, *, resume: bool = False, until_id: int | None = None) -> None:
        """One connection: until the server ends the stream, the connection breaks, or `until_id`.

        `resume` sends `Last-Event-ID` with the last id received so far, as `EventSource` does.
        """
        headers = {"Last-Event-ID": last} if resume and (last := self.last_id) is not None else {}
        segment: list[Event] = []
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            try:
                async with aconnect_sse(client, "GET", f"/jobs/{self.job_id}/events", headers=headers) as sse:
                    if sse.response.status_code != 200:
                        await sse.response.aread()
                        self.refusals.append(f"{sse.response.status_code} {sse.response.text}")
                        return
                    self.segments.append(segment)
                    async for message in sse.aiter_sse():
                        segment.append(Event(message.id, message.event, json.loads(message.data)))
                        self.arrivals.append(time.monotonic())
                        if until_id is not None and message.id and int(message.id) >= until_id:
                            return
            except httpx.TransportError as exc:
                self.refusals.append(repr(exc))  # what arrived before is kept

    async def follow(self, url: str) -> None:
        """Reads, resuming with `Last-Event-ID` after every end or refusal, until the terminal event."""
        while not self.ended:
            await self.read(url, resume=True)
            if not self.ended:
                await anyio.sleep(0.1)

    async def wait_for_id(self, at_least: int) -> None:
        while self.newest < at_least:
            await anyio.sleep(0.01)


async def web_connections(cluster: RedisCluster, name: str) -> dict[int, list[dict[str, Any]]]:
    """`CLIENT LIST` of each live primary, the connections named `name`, by the primary's port."""
    found: dict[int, list[dict[str, Any]]] = {}
    for node in cluster.primaries():
        async with Redis(port=node.port) as plain:
            found[node.port] = [c for c in await plain.client_list() if c.get("name") == name]
    return found
