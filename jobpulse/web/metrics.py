"""One web process's Prometheus metrics: what it counts, and the registry `GET /metrics` renders.

Each app has a registry of its own, not prometheus-client's global one: tests build many apps in one
process, and two apps must not share (or collide on) counters.

Nothing here is updated per event. The stream code bumps plain integers on a `StreamCounters`
(`web/stream_counters.py`; an attribute increment, ~20 ns; a prometheus `Counter.inc()` takes a lock,
and it would run once per event per watcher), and a collector reads those, the open-stream slots and
the queue's counts when Prometheus scrapes. Per-process values are meant to be summed over web
processes (`sum(rate(...))`); the queue gauges are read from Redis and are the same on every web
process (use `max`, not `sum`). The full list, with what each means: docs/OBSERVABILITY.md.
"""

import asyncio
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from jobpulse.registry import TaskRegistry
from jobpulse.web.access.limits import StreamSlots
from jobpulse.web.queue import JobQueue
from jobpulse.web.streaming.stream_counters import StreamCounters

# Prometheus gives up on a scrape after 10 s by default; the queue's counts are dropped well before.
QUEUE_READ_TIMEOUT_S = 2.0


class _WebCollector(Collector):
    def __init__(
        self, registry: TaskRegistry, queue: JobQueue, slots: StreamSlots, counters: StreamCounters
    ) -> None:
        self._tasks = registry.names
        self._queue = queue
        self._slots = slots
        self._counters = counters
        # Set by `WebMetrics.exposition` just before each scrape renders; None when Redis did not answer.
        self.depth: tuple[int, int] | None = None

    def collect(self) -> Iterator[Metric]:
        submitted = CounterMetricFamily(
            "jobpulse_web_jobs_submitted",
            "Jobs this web process put on the queue (POST /jobs, POST /uploads), by task.",
            labels=["task"],
        )
        # Every task's series exists from the start, at 0, so rate() sees its first job.
        for task in sorted({*self._tasks, *self._queue.enqueued}):
            submitted.add_metric([task], self._queue.enqueued[task])
        yield submitted
        yield GaugeMetricFamily(
            "jobpulse_web_open_streams",
            "Event streams and long-polls this web process holds open (what JOBPULSE_MAX_STREAMS limits).",
            value=self._slots.total,
        )
        yield GaugeMetricFamily(
            "jobpulse_web_stream_capacity",
            "Event streams and long-polls this web process accepts at once (JOBPULSE_MAX_STREAMS).",
            value=self._slots.capacity,
        )
        counters = self._counters
        yield CounterMetricFamily(
            "jobpulse_web_events_delivered",
            "Events written to event-stream clients by this web process.",
            value=counters.delivered,
        )
        yield CounterMetricFamily(
            "jobpulse_web_slow_clients_dropped",
            "Event streams dropped because the client took no bytes for JOBPULSE_SEND_TIMEOUT_S.",
            value=counters.slow_dropped,
        )
        yield CounterMetricFamily(
            "jobpulse_web_hub_reconnects",
            "Times this web process's pub/sub connection to Redis was lost and made again.",
            value=counters.hub_reconnects,
        )
        if self.depth is not None:
            waiting, running = self.depth
            yield GaugeMetricFamily(
                "jobpulse_queue_depth",
                "Jobs on the queue that no worker has started yet, deferred retries included (from Redis: "
                "the same on every web process).",
                value=waiting,
            )
            yield GaugeMetricFamily(
                "jobpulse_jobs_running",
                "Job attempts running on all workers (from Redis: the same on every web process).",
                value=running,
            )


class WebMetrics:
    """The registry of one app: the collector above plus the process, Python and GC collectors."""

    def __init__(
        self, registry: TaskRegistry, queue: JobQueue, slots: StreamSlots, counters: StreamCounters
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._queue = queue
        self._collector = _WebCollector(registry, queue, slots, counters)
        self.registry.register(self._collector)

    async def exposition(self) -> bytes:
        """The text exposition format. The queue's counts are read now, in one Redis round trip; without
        Redis they are left out (an absent series, as Prometheus expects), and the rest is still served.
        """
        try:
            async with asyncio.timeout(QUEUE_READ_TIMEOUT_S):
                self._collector.depth = await self._queue.depth()
        except (RedisError, OSError, TimeoutError):
            self._collector.depth = None
        # No await between setting the depth and rendering: concurrent scrapes cannot mix them up.
        return generate_latest(self.registry)
