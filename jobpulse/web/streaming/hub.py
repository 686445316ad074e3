"""The hub: one per web process, it feeds every SSE subscription from one Redis pub/sub connection.

However many clients watch, the process holds one pub/sub connection (plus the shared command pool that
subscriptions read history through). The hub subscribes to a job's live channel when the first client
of that job arrives and unsubscribes when the last leaves. Each announced event is parsed once and its
SSE bytes encoded once, then offered to every subscription of the job without blocking.

If the pub/sub connection drops, the hub reconnects with backoff, re-subscribes, and tells every
subscription to re-read from the job's stream, so an outage costs latency, never events.
"""

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from jobpulse import keys
from jobpulse.events import StoredEvent, from_live_message
from jobpulse.web.paths import NO_PREFIX, JobPaths
from jobpulse.web.streaming.pending_writes import PendingWrites
from jobpulse.web.streaming.stream_counters import StreamCounters
from jobpulse.web.streaming.subscription import JobEvents, Subscription

logger = logging.getLogger(__name__)

_PING = "jobpulse-hub"


class HubUnavailable(Exception):
    """The hub cannot reach Redis right now."""


def _for_each(subscriptions: Iterable[Subscription], act: Callable[[Subscription], None], what: str) -> None:
    """`act` on each of `subscriptions` (a copy: a stream may leave its channel as it is acted on); one
    that raises is logged with its job, and costs the others nothing."""
    for subscription in tuple(subscriptions):
        try:
            act(subscription)
        except Exception:
            job_id = subscription.job_id
            logger.exception("job %s: %s failed", job_id, what, extra={"job_id": job_id})


class _Channel:
    def __init__(self, job_id: str, name: bytes) -> None:
        self.job_id = job_id
        self.name = name
        self.subscriptions: set[Subscription] = set()
        self.ready = asyncio.Event()  # Redis confirmed the subscription
        self.news: list[StoredEvent] = []  # events of this read, delivered by `flush`

    def flush(self) -> None:
        """Deliver the events of the hub's last read to every subscription (`PendingWrites`)."""
        events, self.news = self.news, []
        # No copy of the set: `deliver` writes or queues, and never ends a stream or leaves the
        # channel synchronously (a transport reports a failed write on a later turn of the loop).
        for subscription in self.subscriptions:
            try:
                subscription.deliver(events)
            except Exception:  # a bug in one stream must not cost the others this read's events
                logger.exception("job %s: delivering live events failed", self.job_id)
                subscription.mark_behind()  # it reads what it missed from the job's stream


class Hub:
    def __init__(
        self,
        redis: Redis,
        source: JobEvents,
        *,
        max_buffered: int,
        subscribe_timeout_s: float = 5.0,
        ping_interval_s: float = 5.0,
        vanished_check_s: float = 15.0,
        counters: StreamCounters | None = None,
        paths: JobPaths = NO_PREFIX,
    ) -> None:
        self._paths = paths
        self._redis = redis
        self._source = source
        self._max_buffered = max_buffered
        self._subscribe_timeout_s = subscribe_timeout_s
        self._ping_interval_s = ping_interval_s
        self._vanished_check_s = vanished_check_s
        self._channels: dict[bytes, _Channel] = {}
        self._connection: AbstractConnection | None = None
        self._lock = asyncio.Lock()  # orders SUBSCRIBE/UNSUBSCRIBE against each other and reconnects
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # This process's stream counters (web/metrics.py): the hub's reconnects, and its streams' work.
        self.counters = counters or StreamCounters()
        self._last_heard = 0.0
        self._closing = False
        self.pending_writes = PendingWrites()  # streams written to after each read (web/detached_stream.py)

    @property
    def reconnects(self) -> int:
        return self.counters.hub_reconnects

    @property
    def subscription_count(self) -> int:
        return sum(len(channel.subscriptions) for channel in self._channels.values())

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_forever(), name="jobpulse-hub")
        self._watchdog = asyncio.create_task(self._watch_for_vanished_jobs(), name="jobpulse-hub-vanished")

    def close_streams(self) -> None:
        """End every open stream now and refuse new ones: the process is about to stop."""
        self._closing = True
        for channel in list(self._channels.values()):  # a copy: a channel goes once its streams have
            _for_each(channel.subscriptions, Subscription.close, "closing its stream")

    async def stop(self) -> None:
        """End every open stream and release the connection."""
        self.close_streams()
        for task in (self._reader, self._watchdog):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._close_connection()

    async def open(self, job_id: str, after: int) -> Subscription:
        """A subscription to `job_id`'s events after `after`, live from the moment this returns.

        The live channel is confirmed subscribed before the subscription reads any history, so an event
        published during catch-up is either in what it reads or announced to it afterwards.
        """
        if self._closing:
            raise HubUnavailable("this web process is shutting down")
        subscription = Subscription(job_id, after, self._source, self._max_buffered, self._paths)
        name = keys.live_channel(job_id).encode()
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel(job_id, name)
            channel.subscriptions.add(subscription)
            await self._send("subscribe", name)
        else:
            channel.subscriptions.add(subscription)
        try:
            if not channel.ready.is_set():  # only a job's first watcher waits for Redis to confirm
                async with asyncio.timeout(self._subscribe_timeout_s):
                    await channel.ready.wait()
        except TimeoutError:
            self.release(subscription)
            raise HubUnavailable("Redis did not confirm the subscription in time") from None
        except BaseException:  # the request was cancelled while waiting
            self.release(subscription)
            raise
        return subscription

    def open_watched(self, job_id: str, after: int) -> Subscription | None:
        """A subscription to a job already watched here, with its read of the events after `after` begun.

        None if the job's channel is not confirmed subscribed (or the process is stopping): use `open`.
        The caller reads the history (`Subscription.read_size` events) and hands it to `end_read`, or
        releases the subscription; live events meanwhile wait to be spliced in after what it reads.
        """
        channel = self._channels.get(keys.live_channel(job_id).encode())
        if channel is None or not channel.ready.is_set() or self._closing:
            return None
        subscription = Subscription(job_id, after, self._source, self._max_buffered, self._paths)
        channel.subscriptions.add(subscription)
        subscription.begin_read()
        return subscription

    def release(self, subscription: Subscription) -> None:
        """Forget a subscription at once; the channel is unsubscribed when its last one leaves."""
        name = keys.live_channel(subscription.job_id).encode()
        channel = self._channels.get(name)
        if channel is None:
            return
        channel.subscriptions.discard(subscription)
        if not channel.subscriptions:
            del self._channels[name]
            task = asyncio.create_task(self._send("unsubscribe", name))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def end_streams_of_vanished_jobs(self) -> list[str]:
        """End the streams of watched jobs whose state is gone from Redis; returns those jobs' ids.

        A job vanishes when Redis lost it (restarted without persistence, flushed, failed over to an empty
        replica) or an abandoned job expired. No event will ever come, so rather than keep-alives for
        ever, its streams end with a short `retry:`: clients reconnect and learn it is gone (404).
        """
        watched = {channel.job_id: channel for channel in self._channels.values()}
        if not watched:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in watched:
                pipe.exists(keys.state_key(job_id))
            found = await pipe.execute()
        vanished = [job_id for job_id, exists in zip(watched, found, strict=True) if not exists]
        for job_id in vanished:
            _for_each(watched[job_id].subscriptions, Subscription.close, "ending its stream")
        return vanished

    async def _watch_for_vanished_jobs(self) -> None:
        while True:
            await asyncio.sleep(self._vanished_check_s)
            try:
                if vanished := await self.end_streams_of_vanished_jobs():
                    logger.warning("hub: jobs gone from Redis, their streams ended: %s", ", ".join(vanished))
            except RedisError as exc:
                logger.info("hub: could not check for vanished jobs: %s", exc)
            except Exception:  # a bug here must not end the watch for good
                logger.exception("hub: checking for vanished jobs failed")

    async def _send(self, command: str, name: bytes) -> None:
        async with self._lock:
            wanted = name in self._channels
            connection = self._connection
            if (command == "subscribe") != wanted or connection is None or not connection.is_connected:
                return  # superseded, or the reader will (re)subscribe everything once connected
            try:
                await connection.send_command(command.upper(), name)
            except (RedisError, OSError) as exc:
                logger.warning("hub: %s %s failed: %s", command, name.decode(), exc)

    async def _close_connection(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                await connection.disconnect(nowait=True)
            except (RedisError, OSError):
                pass

    async def _connect(self) -> AbstractConnection:
        """A connection of the hub's own, outside the command pool, in subscriber mode.

        Built from the pool's settings (URL, credentials, TLS, client name) but read directly rather than
        through redis-py's `PubSub`, whose per-message `get_message()` (health check, retry wrapper,
        timeout, a dict per message) cost more than the fan-out it fed. Without a socket timeout: the
        pings below tell a silent connection from a quiet one.
        """
        pool = self._redis.connection_pool
        connection: AbstractConnection = pool.connection_class(
            **{**pool.connection_kwargs, "socket_timeout": None, "health_check_interval": 0}
        )
        async with self._lock:
            await connection.connect()  # type: ignore[no-untyped-call]
            self._connection = connection
            for channel in self._channels.values():
                channel.ready.clear()
            if self._channels:
                await connection.send_command("SUBSCRIBE", *self._channels)
            return connection

    async def _read_forever(self) -> None:
        backoff = 0.05
        while True:
            try:
                connection = await self._connect()
                backoff = 0.05
                await self._listen(connection)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.counters.hub_reconnects += 1
                logger.warning("hub: Redis pub/sub connection lost (%s); reconnecting", exc)
            except Exception:
                logger.exception("hub: unexpected error; reconnecting")
            await self._close_connection()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _listen(self, connection: AbstractConnection) -> None:
        """Dispatch replies until the connection fails or goes silent.

        A connection can die without being closed (a NAT entry dropped, a network partition): reads then
        simply wait, and every stream would wait for ever while keep-alives hide it from clients. So the
        hub pings, and a connection that has said nothing for two ping intervals counts as lost.
        """
        loop = asyncio.get_running_loop()
        self._last_heard = loop.time()
        reader = asyncio.ensure_future(self._read_replies(connection))
        try:
            while True:
                await asyncio.wait({reader}, timeout=self._ping_interval_s)
                if reader.done():
                    reader.result()  # raises what ended it
                    return
                silent_s = loop.time() - self._last_heard
                if silent_s > 2 * self._ping_interval_s:
                    raise RedisConnectionError(f"no answer from Redis for {silent_s:.1f} s")
                await connection.send_command("PING", _PING)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read_replies(self, connection: AbstractConnection) -> None:
        """Each call returns a reply already parsed and buffered when there is one: one socket read
        brings many messages, and they are dispatched without waiting on the socket again."""
        loop = asyncio.get_running_loop()
        while True:
            reply = await connection.read_response()
            self._last_heard = loop.time()
            self._dispatch(reply)

    def _dispatch(self, reply: Any) -> None:
        """One subscriber-mode reply: `[kind, channel, payload]`, or `[b"pong", message]`."""
        kind: bytes = reply[0]
        if kind == b"message":
            channel = self._channels.get(reply[1])
            if channel is None:
                return
            try:
                event = from_live_message(reply[2])
            except (ValueError, UnicodeDecodeError):
                logger.warning("hub: ignoring a malformed message on %s", reply[1].decode(errors="replace"))
                return
            # Delivered once the hub's read is dispatched (web/pending_writes.py): a job whose events
            # came several in one read reaches each stream in one write.
            if not channel.news:
                self.pending_writes.add(channel)
            channel.news.append(event)
        elif kind == b"subscribe":
            channel = self._channels.get(reply[1])
            if channel is None:
                return
            channel.ready.set()
            # Whatever was published before this point is in the stream: each reads it from there.
            _for_each(channel.subscriptions, Subscription.mark_behind, "catching up after subscribing")
        elif kind == b"unsubscribe" and reply[1] in self._channels:
            # A subscriber arrived while the unsubscribe was in flight: subscribe again.
            name: bytes = reply[1]
            task = asyncio.create_task(self._send("subscribe", name))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
