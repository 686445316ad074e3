"""What one app holds for its lifetime: settings, the task registry, Redis, the store, the queue and the hub.

Started by `jobs_router`'s lifespan and kept on the app (`app.state.jobpulse`), where routes find it.
"""

from dataclasses import dataclass

from arq.connections import ArqRedis
from redis.asyncio import BlockingConnectionPool

from jobpulse import queue_codec
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
    redis: ArqRedis
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
        # A fixed-size pool: the connection count stays constant however many clients are served.
        # The hub's pub/sub reader holds one more connection, of its own, built from this pool's settings.
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.redis_pool_size,
            timeout=10,
            socket_connect_timeout=settings.redis_timeout_s,
            socket_timeout=settings.redis_timeout_s,
            socket_keepalive=True,
            health_check_interval=30,
            client_name=WEB_CLIENT_NAME,
        )
        # Jobs go on the queue as JSON, never pickle: see jobpulse.queue_codec.
        redis = ArqRedis(
            connection_pool=pool, job_serializer=queue_codec.encode, job_deserializer=queue_codec.decode
        )
        store = JobStore(redis, settings)
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
        queue = JobQueue(redis, settings.queue_name)
        streams = StreamSlots(settings.max_streams_per_client, stream_capacity(settings.max_streams))
        return cls(
            settings,
            registry,
            paths,
            redis,
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
        await self.redis.aclose(close_connection_pool=True)
