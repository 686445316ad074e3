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
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from jobpulse import keys
from jobpulse.events import from_live_message
from web.subscription import EventSource, Subscription

logger = logging.getLogger(__name__)

_PING = "jobpulse-hub"


class HubUnavailable(Exception):
    """The hub cannot reach Redis right now."""


class _Channel:
    def __init__(self, job_id: str, name: bytes) -> None:
        self.job_id = job_id
        self.name = name
        self.subscriptions: set[Subscription] = set()
        self.ready = asyncio.Event()  # Redis confirmed the subscription


class Hub:
    def __init__(
        self,
        redis: Redis,
        source: EventSource,
        *,
        max_buffered: int,
        subscribe_timeout_s: float = 5.0,
        ping_interval_s: float = 5.0,
        vanished_check_s: float = 15.0,
    ) -> None:
        self._redis = redis
        self._source = source
        self._max_buffered = max_buffered
        self._subscribe_timeout_s = subscribe_timeout_s
        self._ping_interval_s = ping_interval_s
        self._vanished_check_s = vanished_check_s
        self._channels: dict[bytes, _Channel] = {}
        self._pubsub: PubSub | None = None
        self._connected = asyncio.Event()
        self._lock = asyncio.Lock()  # orders SUBSCRIBE/UNSUBSCRIBE against each other and reconnects
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.reconnects = 0
        self._closing = False

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
        for channel in self._channels.values():
            for subscription in channel.subscriptions:
                subscription.close()

    async def stop(self) -> None:
        """End every open stream and release the connection."""
        self.close_streams()
        for task in (self._reader, self._watchdog):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._close_pubsub()

    async def open(self, job_id: str, after: int) -> Subscription:
        """A subscription to `job_id`'s events after `after`, live from the moment this returns.

        The live channel is confirmed subscribed before the subscription reads any history, so an event
        published during catch-up is either in what it reads or announced to it afterwards.
        """
        if self._closing:
            raise HubUnavailable("this web process is shutting down")
        subscription = Subscription(job_id, after, self._source, self._max_buffered)
        name = keys.live_channel(job_id).encode()
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel(job_id, name)
            channel.subscriptions.add(subscription)
            await self._send("subscribe", name)
        else:
            channel.subscriptions.add(subscription)
        try:
            async with asyncio.timeout(self._subscribe_timeout_s):
                await channel.ready.wait()
        except TimeoutError:
            self.release(subscription)
            raise HubUnavailable("Redis did not confirm the subscription in time") from None
        except BaseException:  # the request was cancelled while waiting
            self.release(subscription)
            raise
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
            for subscription in list(watched[job_id].subscriptions):
                subscription.close()
        return vanished

    async def _watch_for_vanished_jobs(self) -> None:
        while True:
            await asyncio.sleep(self._vanished_check_s)
            try:
                if vanished := await self.end_streams_of_vanished_jobs():
                    logger.warning("hub: jobs gone from Redis, their streams ended: %s", ", ".join(vanished))
            except RedisError as exc:
                logger.info("hub: could not check for vanished jobs: %s", exc)

    async def _send(self, command: str, name: bytes) -> None:
        async with self._lock:
            wanted = name in self._channels
            if (command == "subscribe") != wanted or self._pubsub is None or not self._connected.is_set():
                return  # superseded, or the reader will (re)subscribe everything once connected
            try:
                if command == "subscribe":
                    await self._pubsub.subscribe(name)
                else:
                    await self._pubsub.unsubscribe(name)
            except (RedisError, OSError) as exc:
                logger.warning("hub: %s %s failed: %s", command, name.decode(), exc)

    async def _close_pubsub(self) -> None:
        self._connected.clear()
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            except (RedisError, OSError):
                pass

    async def _connect(self) -> PubSub:
        async with self._lock:
            pubsub = self._redis.pubsub()
            await pubsub.connect()  # type: ignore[no-untyped-call]
            self._pubsub = pubsub
            self._connected.set()
            for channel in self._channels.values():
                channel.ready.clear()
            if self._channels:
                await pubsub.subscribe(*self._channels)
            return pubsub

    async def _read_forever(self) -> None:
        backoff = 0.05
        while True:
            try:
                pubsub = await self._connect()
                backoff = 0.05
                await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.reconnects += 1
                logger.warning("hub: Redis pub/sub connection lost (%s); reconnecting", exc)
            except Exception:
                logger.exception("hub: unexpected error; reconnecting")
            await self._close_pubsub()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _listen(self, pubsub: PubSub) -> None:
        """Dispatch messages until the connection fails or goes silent.

        A connection can die without being closed (a NAT entry dropped, a network partition): reads then
        simply time out, and every stream would wait for ever while keep-alives hide it from clients. So
        the hub pings, and a connection that has said nothing for two ping intervals counts as lost.
        """
        loop = asyncio.get_running_loop()
        last_heard = last_ping = loop.time()
        while True:
            message = await pubsub.get_message(timeout=min(1.0, self._ping_interval_s))
            now = loop.time()
            if message is not None:
                last_heard = now
                self._dispatch(message)
            elif now - last_heard > 2 * self._ping_interval_s:
                raise RedisConnectionError(f"no answer from Redis for {now - last_heard:.1f} s")
            if now - last_ping >= self._ping_interval_s:
                await pubsub.ping(_PING)
                last_ping = now

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        name: bytes = message["channel"]
        channel = self._channels.get(name)
        if kind == "message":
            if channel is None:
                return
            try:
                event = from_live_message(message["data"])
            except (ValueError, UnicodeDecodeError):
                logger.warning("hub: ignoring a malformed message on %s", name.decode(errors="replace"))
                return
            for subscription in channel.subscriptions:
                subscription.offer(event)
        elif kind == "subscribe":
            if channel is None:
                return
            channel.ready.set()
            for subscription in channel.subscriptions:
                subscription.mark_behind()  # whatever was published before this point is in the stream
        elif kind == "unsubscribe" and channel is not None:
            # A subscriber arrived while the unsubscribe was in flight: subscribe again.
            task = asyncio.create_task(self._send("subscribe", name))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
