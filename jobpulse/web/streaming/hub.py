"""The hub: one per web process, it feeds every SSE subscription from one Redis pub/sub connection.

However many clients watch, the process holds one pub/sub connection (plus the shared command pool that
subscriptions read history through). The hub subscribes to a job's live channel when the first client
of that job arrives and unsubscribes when the last leaves. Each announced event is parsed once and its
SSE bytes encoded once, then offered to every subscription of the job without blocking.

If the pub/sub connection drops, the hub reconnects with backoff, re-subscribes, and tells every
subscription to re-read from the job's stream, so an outage costs latency, never events.

On a Redis Cluster (`Settings.redis_cluster`) the worker announces with `SPUBLISH`, which stays on the
shard of the job's slot, and the hub holds one connection per shard primary instead of one in all
(`SSUBSCRIBE` there; `ShardMap` says which). When the cluster changes under it (a slot migrated: Redis
sends `sunsubscribe`; a primary failed over: its connection is lost; a `MOVED` answer), the hub reads the
slot map again, subscribes each channel where it now lives, and its streams re-read from the job's
stream as after a reconnect: latency, never a gap or a duplicate.
"""

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, RedisError, ResponseError

from jobpulse import keys
from jobpulse.events import StoredEvent, from_live_message
from jobpulse.web.paths import NO_PREFIX, JobPaths
from jobpulse.web.streaming.pending_writes import PendingWrites
from jobpulse.web.streaming.shard_map import Address, ShardMap
from jobpulse.web.streaming.stream_counters import StreamCounters
from jobpulse.web.streaming.subscription import JobEvents, Subscription

logger = logging.getLogger(__name__)

_PING = "jobpulse-hub"
# The longest wait between two tries of a lost subscriber connection: to one Redis, and to a cluster's
# shard (where each try also reads the slot map again, which finds a failover's new primary).
_BACKOFF_CAP_S = 2.0
_SHARD_BACKOFF_CAP_S = 0.5


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
    def __init__(self, job_id: str, name: bytes, link: "_Link | None" = None) -> None:
        self.job_id = job_id
        self.name = name
        self.link = link  # the connection it is subscribed on (or being subscribed on)
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


class _Commands:
    """The pub/sub verbs and the replies they bring: classic, or sharded on a cluster."""

    def __init__(self, sharded: bool) -> None:
        prefix = b"s" if sharded else b""
        self.subscribe = (prefix + b"subscribe").upper().decode()
        self.unsubscribe = (prefix + b"unsubscribe").upper().decode()
        self.message = prefix + b"message"
        self.subscribed = prefix + b"subscribe"
        self.unsubscribed = prefix + b"unsubscribe"


class _Link:
    """One subscriber connection to one Redis node, its reader, and the channels routed to it.

    A single Redis has one, for good. A cluster has one per shard primary that channels live on.
    """

    def __init__(self, hub: "Hub", address: Address | None) -> None:
        self.hub = hub
        self.address = address
        self.channels: set[bytes] = set()
        self.connection: AbstractConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.last_heard = 0.0

    @property
    def name(self) -> str:
        return "redis" if self.address is None else f"{self.address[0]}:{self.address[1]}"

    def start(self) -> None:
        self.task = asyncio.create_task(self._read_forever(), name=f"jobpulse-hub {self.name}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.close_connection()

    async def close_connection(self) -> None:
        if self.connection is not None:
            connection, self.connection = self.connection, None
            try:
                await connection.disconnect(nowait=True)
            except (RedisError, OSError):
                pass

    async def send(self, *command: str | bytes) -> None:
        connection = self.connection
        if connection is None or not connection.is_connected:
            return  # the reader subscribes everything routed here once connected
        try:
            await connection.send_command(*command)
        except (RedisError, OSError) as exc:
            logger.warning("hub: %s on %s failed: %s", command[0], self.name, exc)

    async def _connect(self) -> AbstractConnection:
        """A connection of the hub's own, outside the command pool, in subscriber mode.

        Built from the command client's settings (credentials, TLS, client name) but read directly rather
        than through redis-py's `PubSub`, whose per-message `get_message()` (health check, retry wrapper,
        timeout, a dict per message) cost more than the fan-out it fed. Without a socket timeout: the
        pings below tell a silent connection from a quiet one.
        """
        hub = self.hub
        connection = hub.new_connection(self.address)
        async with hub.lock:
            await connection.connect()  # type: ignore[no-untyped-call]
            self.connection = connection
            for name in self.channels:
                hub.channel_unconfirmed(name)
            if self.channels and hub.sharded:
                # One SSUBSCRIBE per channel: Redis refuses one whose channels are in different slots.
                verb = hub.commands.subscribe
                commands = [(verb, name) for name in self.channels]
                await connection.send_packed_command(connection.pack_commands(commands))
            elif self.channels:
                await connection.send_command(hub.commands.subscribe, *self.channels)
            return connection

    async def _read_forever(self) -> None:
        backoff = 0.05
        hub = self.hub
        while True:
            try:
                connection = await self._connect()
                backoff = 0.05
                await self._listen(connection)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                hub.counters.hub_reconnects += 1
                logger.warning("hub: Redis pub/sub connection to %s lost (%s); reconnecting", self.name, exc)
            except Exception:
                logger.exception("hub: unexpected error; reconnecting")
            await self.close_connection()
            if hub.sharded:
                # A primary gone or demoted: its channels may live elsewhere now. Read again at least
                # every half second, since a failover's replica takes over at any moment (and its
                # channels' streams wait for this), and a read is one `CLUSTER SLOTS`.
                await hub.reroute()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _SHARD_BACKOFF_CAP_S if hub.sharded else _BACKOFF_CAP_S)

    async def _listen(self, connection: AbstractConnection) -> None:
        """Dispatch replies until the connection fails or goes silent.

        A connection can die without being closed (a NAT entry dropped, a network partition): reads then
        simply wait, and every stream would wait for ever while keep-alives hide it from clients. So the
        hub pings, and a connection that has said nothing for two ping intervals counts as lost.
        """
        loop = asyncio.get_running_loop()
        self.last_heard = loop.time()
        ping_interval_s = self.hub.ping_interval_s
        reader = asyncio.ensure_future(self._read_replies(connection))
        try:
            while True:
                await asyncio.wait({reader}, timeout=ping_interval_s)
                if reader.done():
                    reader.result()  # raises what ended it
                    return
                silent_s = loop.time() - self.last_heard
                if silent_s > 2 * ping_interval_s:
                    raise RedisConnectionError(f"no answer from Redis for {silent_s:.1f} s")
                await connection.send_command("PING", _PING)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read_replies(self, connection: AbstractConnection) -> None:
        """Each call returns a reply already parsed and buffered when there is one: one socket read
        brings many messages, and they are dispatched without waiting on the socket again."""
        loop = asyncio.get_running_loop()
        hub = self.hub
        while True:
            try:
                reply = await connection.read_response()
            except MovedError as exc:  # a cluster's answer to a subscription sent to the wrong node
                self.last_heard = loop.time()
                hub.moved(exc)
                continue
            except ResponseError as exc:
                self.last_heard = loop.time()
                logger.warning("hub: %s refused a subscription: %s", self.name, exc)
                continue
            self.last_heard = loop.time()
            hub._dispatch(reply, self)


class Hub:
    def __init__(
        self,
        redis: Redis | RedisCluster,
        source: JobEvents,
        *,
        max_buffered: int,
        subscribe_timeout_s: float = 5.0,
        ping_interval_s: float = 5.0,
        vanished_check_s: float = 15.0,
        counters: StreamCounters | None = None,
        paths: JobPaths = NO_PREFIX,
    ) -> None:
        """`redis` is the store's client: a `RedisCluster` makes the hub subscribe per shard."""
        self._paths = paths
        self._redis = redis
        self._source = source
        self._max_buffered = max_buffered
        self._subscribe_timeout_s = subscribe_timeout_s
        self.ping_interval_s = ping_interval_s
        self._vanished_check_s = vanished_check_s
        self._channels: dict[bytes, _Channel] = {}
        self.sharded = isinstance(redis, RedisCluster)
        self.commands = _Commands(self.sharded)
        self._shards = ShardMap(redis) if isinstance(redis, RedisCluster) else None
        self._links: dict[Address | None, _Link] = {}
        self.lock = asyncio.Lock()  # orders SUBSCRIBE/UNSUBSCRIBE against each other and reconnects
        self._reroute_lock = asyncio.Lock()
        self._watchdog: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # This process's stream counters (web/metrics.py): the hub's reconnects, and its streams' work.
        self.counters = counters or StreamCounters()
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

    @property
    def link_count(self) -> int:
        """Subscriber connections held: one, or one per shard primary that watched jobs live on."""
        return len(self._links)

    async def start(self) -> None:
        if self._shards is not None:
            await self._shards.refresh()  # if no node answers now, the first subscription reads it again
        else:
            self._link_at(None)
        self._watchdog = asyncio.create_task(self._watch_for_vanished_jobs(), name="jobpulse-hub-vanished")

    def close_streams(self) -> None:
        """End every open stream now and refuse new ones: the process is about to stop."""
        self._closing = True
        for channel in list(self._channels.values()):  # a copy: a channel goes once its streams have
            _for_each(channel.subscriptions, Subscription.close, "closing its stream")

    async def stop(self) -> None:
        """End every open stream and release the connections."""
        self.close_streams()
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        for link in list(self._links.values()):
            await link.stop()
        self._links.clear()

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
            try:
                link = await self._route(name)
            except BaseException:
                self.release(subscription)
                raise
            if self._channels.get(name) is channel and channel.link is None:
                self._move(channel, link)
                await self._send(link, "subscribe", name)
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
            link = channel.link
            if link is not None:
                link.channels.discard(name)
                self._in_background(self._send(link, "unsubscribe", name))

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

    # -- links and routing --------------------------------------------------------------------------

    def new_connection(self, address: Address | None) -> AbstractConnection:
        """A subscriber connection to `address` (the one Redis if None), made like the client's own."""
        if address is None:
            pool = self._redis.connection_pool
            connection_class, kwargs = pool.connection_class, dict(pool.connection_kwargs)
        else:
            node = self._redis.get_nodes()[0]  # type: ignore[union-attr]
            connection_class = node.connection_class
            kwargs = {**node.connection_kwargs, "host": address[0], "port": address[1]}
        connection: AbstractConnection = connection_class(
            **{**kwargs, "socket_timeout": None, "health_check_interval": 0}
        )
        return connection

    def _link_at(self, address: Address | None) -> _Link:
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = _Link(self, address)
            link.start()
        return link

    async def _route(self, name: bytes) -> _Link:
        """The link `name` belongs on: the one, or its slot's primary's (the map read again if need be)."""
        if self._shards is None:
            return self._link_at(None)
        address = self._shards.owner(name)
        if address is None and await self._shards.refresh():
            address = self._shards.owner(name)
        if address is None:
            raise HubUnavailable("no primary of the Redis Cluster serves this job's slot")
        return self._link_at(address)

    def _move(self, channel: _Channel, link: _Link) -> None:
        if channel.link is not None:
            channel.link.channels.discard(channel.name)
        channel.link = link
        link.channels.add(channel.name)

    def channel_unconfirmed(self, name: bytes) -> None:
        channel = self._channels.get(name)
        if channel is not None:
            channel.ready.clear()

    async def _send(self, link: _Link, command: str, name: bytes) -> None:
        async with self.lock:
            channel = self._channels.get(name)
            wanted = channel is not None and channel.link is link
            if (command == "subscribe") != wanted:
                return  # superseded, or the reader will (re)subscribe everything once connected
            verb = self.commands.subscribe if command == "subscribe" else self.commands.unsubscribe
            await link.send(verb, name)

    def _in_background(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def reroute(self) -> None:
        """Read the cluster's slot map again and subscribe each channel on its slot's primary now."""
        if self._shards is None:
            return
        async with self._reroute_lock:
            if not await self._shards.refresh():
                return  # no node answered: the links retry, and call this again
            self._follow_map()

    def moved(self, exc: MovedError) -> None:
        """A subscription was answered `MOVED`: its slot is served elsewhere now."""
        if self._shards is None:
            return
        self._shards.moved(exc.slot_id, (exc.host, int(exc.port)))
        self._follow_map()

    def _follow_map(self) -> None:
        """Move each channel whose slot's primary is not its link's to that primary's link."""
        assert self._shards is not None
        for name, channel in list(self._channels.items()):
            address = self._shards.owner(name)
            old = channel.link
            if address is None or (old is not None and old.address == address):
                continue
            channel.ready.clear()
            new = self._link_at(address)
            self._move(channel, new)
            if old is not None:
                self._in_background(old.send(self.commands.unsubscribe, name))
            self._in_background(self._send(new, "subscribe", name))
        primaries = self._shards.primaries()
        for address, link in list(self._links.items()):
            if not link.channels and address not in primaries:
                del self._links[address]  # no longer a primary: nothing will live there
                self._in_background(link.stop())

    def _dispatch(self, reply: Any, link: _Link | None = None) -> None:
        """One subscriber-mode reply: `[kind, channel, payload]`, or `[b"pong", message]`."""
        kind: bytes = reply[0]
        commands = self.commands
        if kind == commands.message:
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
        elif kind == commands.subscribed:
            channel = self._channels.get(reply[1])
            if channel is None or (link is not None and channel.link is not link):
                return
            channel.ready.set()
            # Whatever was published before this point is in the stream: each reads it from there.
            _for_each(channel.subscriptions, Subscription.mark_behind, "catching up after subscribing")
        elif kind == commands.unsubscribed and reply[1] in self._channels:
            name: bytes = reply[1]
            channel = self._channels[name]
            if link is not None and channel.link is not link:
                return  # the old node's answer to a channel that has moved on
            if self.sharded:
                # Unasked, this is Redis telling that the slot moved away (or our own unsubscribe crossing a
                # new subscriber): find where it lives now, and subscribe there.
                channel.ready.clear()
                self._in_background(self._resubscribe(name))
            else:
                # A subscriber arrived while the unsubscribe was in flight: subscribe again.
                self._in_background(self._send(channel.link or self._link_at(None), "subscribe", name))

    async def _resubscribe(self, name: bytes) -> None:
        await self.reroute()
        channel = self._channels.get(name)
        if channel is not None and channel.link is not None:
            await self._send(channel.link, "subscribe", name)
