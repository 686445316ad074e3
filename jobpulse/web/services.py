"""What one app holds for its lifetime: settings, the task registry, Redis, the store, the queue and the hub.

Started by `jobs_router`'s lifespan and kept on the app (`app.state.jobpulse`), where routes find it.

Redis in two roles (`Settings`): the store's (`REDIS_URL`: job state, events, live channels, limits) and
the queue's (arq). By default both are one client on one pool. With the queue elsewhere, or the store on a
cluster, each has its own: a cluster client bounded to `JOBPULSE_REDIS_POOL_SIZE` connections per node
(`jobpulse.connections`), and a pool of that size for the queue.
"""

from dataclasses import dataclass

from arq.connections import ArqRedis
from redis.asyncio import BlockingConnectionPool, Redis

from jobpulse import queue_codec
from jobpulse.connections import StoreRedis, store_cluster
from jobpulse.models import JobView
from jobpulse.registry import TaskRegistry
from jobpulse.settings import Settings
from jobpulse.store import JobState, JobStore
from jobpulse.web.access.limits import StreamSlots, SubmissionRate, stream_capacity
from jobpulse.web.access.policy import AccessPolicy
from jobpulse.web.metrics import WebMetrics
from jobpulse.web.paths import NO_PREFIX, JobPaths
from jobpulse.web.queue import JobQueue
from jobpulse.web.streaming.hub import Hub
from jobpulse.web.streaming.stream_clock import StreamClock
from jobpulse.web.streaming.stream_counters import StreamCounters

# Shown by `CLIENT LIST`, so operators (and tests) can count the web processes' connections.
WEB_CLIENT_NAME = "jobpulse-web"


@dataclass
class Services:
    settings: Settings
    registry: TaskRegistry
    paths: JobPaths
    redis: StoreRedis  # the store's: one node, or a cluster client
    queue_redis: ArqRedis  # arq's; `redis` itself unless the queue lives apart
    store: JobStore
    queue: JobQueue
    hub: Hub
    access: AccessPolicy
    submissions: SubmissionRate
    streams: StreamSlots
    clock: StreamClock
    # The stream code bumps these in place; `metrics` reads them, and the rest, when Prometheus scrapes.
    counters: StreamCounters
    metrics: WebMetrics

    @classmethod
    async def start(
        cls, settings: Settings, registry: TaskRegistry, paths: JobPaths = NO_PREFIX
    ) -> "Services":
        queue_redis = _queue_client(settings)
        redis: StoreRedis = queue_redis
        if settings.redis_cluster:
            redis = store_cluster(
                settings,
                client_name=WEB_CLIENT_NAME,
                max_connections=settings.redis_pool_size,
                ride_out_s=settings.redis_timeout_s,
            )
        elif settings.queue_apart:
            redis = Redis.from_pool(_pool(settings.redis_url, settings))  # closing it closes the pool
        store = JobStore(redis, settings, queue_redis=queue_redis)
        counters = StreamCounters()  # created before the hub, which is to count its reconnects in it
        hub = Hub(
            redis,
            store,
            max_buffered=settings.subscriber_buffer,
            ping_interval_s=settings.hub_ping_interval_s,
            # Idle streams are touched this often anyway (keep-alives): check their jobs still exist.
            vanished_check_s=settings.keepalive_s,
            counters=counters,
            paths=paths,
        )
        await hub.start()
        clock = StreamClock.for_deadlines(settings.keepalive_s, settings.send_timeout_s)
        clock.start()
        queue = JobQueue(queue_redis, settings.queue_name)
        streams = StreamSlots(settings.max_streams_per_client, stream_capacity(settings.max_streams))
        return cls(
            settings,
            registry,
            paths,
            redis,
            queue_redis,
            store,
            queue,
            hub,
            AccessPolicy(settings),
            SubmissionRate(redis, settings.submissions_per_minute),
            streams,
            clock,
            counters,
            WebMetrics(registry, queue, streams, counters),
        )

    def view(self, state: JobState) -> JobView:
        return state.view(self.paths.events(state.id))

    async def stop(self) -> None:
        await self.hub.stop()
        await self.clock.stop()
        if self.redis is not self.queue_redis:
            await self.redis.aclose()
        await self.queue_redis.aclose(close_connection_pool=True)


def _pool(url: str, settings: Settings) -> BlockingConnectionPool:
    """A fixed-size pool: the connection count stays constant however many clients are served. The hub's
    pub/sub reader holds one more connection, of its own, built from this pool's settings."""
    return BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis_pool_size,
        timeout=10,
        socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        socket_keepalive=True,
        health_check_interval=30,
        client_name=WEB_CLIENT_NAME,
    )


def _queue_client(settings: Settings) -> ArqRedis:
    # Jobs go on the queue as JSON, never pickle: see jobpulse.queue_codec.
    return ArqRedis(
        connection_pool=_pool(settings.queue_url, settings),
        job_serializer=queue_codec.encode,
        job_deserializer=queue_codec.decode,
    )
