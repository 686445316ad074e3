"""An event stream written straight to its socket, once taken over from the server (`web/handoff.py`).

No task waits per stream: the hub's offer of a live event reaches the stream through the subscription,
and the event's bytes, framed as an HTTP chunk once per event (`StoredEvent.chunk`), go to the transport
as soon as the hub has dispatched what it read (`PendingWrites`): one write per stream per read, however
many of its events came in it. A task exists only while the subscription reads Redis (a late
subscriber's replay, a client that fell behind). The transport's flow control replaces the send that
would block: while the client reads slower than events come, nothing is written and the subscription
queues to its bound, then marks itself behind and re-reads the stream when the client drains. The
stream clock drops a client whose socket has taken nothing for `send_timeout_s` and writes the
keep-alives.
"""

import asyncio
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from jobpulse.events import StoredEvent
from jobpulse.sse import LAST_CHUNK, encode_chunk, encode_comment, encode_retry
from jobpulse.web.streaming.pending_writes import PendingWrites
from jobpulse.web.streaming.stream_clock import StreamClock
from jobpulse.web.streaming.stream_counters import StreamCounters
from jobpulse.web.streaming.subscription import Subscription

logger = logging.getLogger(__name__)

_KEEPALIVE = encode_chunk(encode_comment("keep-alive"))
# What a client may send on a stream's connection after its request before the connection is cut.
_MAX_IGNORED_BYTES = 64 * 1024


class DetachedStream(asyncio.Protocol):
    __slots__ = (
        "_clock",
        "_counters",
        "_due",
        "_ended",
        "_fetch",
        "_ignored",
        "_keepalive_s",
        "_leave",
        "_on_close",
        "_opening",
        "_paused_since",
        "_pending",
        "_quiet_since",
        "_reconnect_ms",
        "_released",
        "_send_timeout_s",
        "_subscription",
        "_transport",
        "_wrote",
    )

    def __init__(
        self,
        subscription: Subscription,
        clock: StreamClock,
        *,
        pending: PendingWrites,
        counters: StreamCounters,
        leave: Callable[[Subscription], None],
        on_close: Callable[[], None],
        keepalive_s: float,
        send_timeout_s: float,
        reconnect_ms: int,
    ) -> None:
        # What it needs of the hub, handed in rather than reached through it: where it waits to be
        # written after a read, what it counts, and how it gives its subscription back.
        self._pending = pending
        self._counters = counters
        self._leave = leave
        self._due = False  # in `_pending`, to be flushed
        self._subscription = subscription
        self._clock = clock
        self._on_close: Callable[[], None] | None = on_close
        self._keepalive_s = keepalive_s
        self._send_timeout_s = send_timeout_s
        self._reconnect_ms = reconnect_ms
        self._transport: asyncio.Transport | None = None
        self._opening = b""  # framed bytes to put before whatever is written first
        self._fetch: asyncio.Task[None] | None = None
        self._paused_since = 0.0  # loop time the transport asked us to stop writing; 0: it did not
        self._quiet_since = 0.0  # loop time of the clock tick that last saw no write since the one before
        self._wrote = False  # written since the last tick
        self._ended = False  # the last chunk is written (or the connection is gone)
        self._released = False
        self._ignored = 0  # bytes the client sent after its request

    def start(self, transport: asyncio.Transport, *, opening: bytes = b"") -> None:
        """Serve the stream on `transport` (already driving this protocol) from now on.

        `opening` goes out with the first write, which comes at once or after one read of Redis.
        """
        self._transport = transport
        self._opening = encode_chunk(opening) if opening else b""
        self._quiet_since = asyncio.get_running_loop().time()
        self._clock.add(self)
        self._subscription.attach(self._schedule, self._write_live)
        self.flush()

    # The transport's side.

    def data_received(self, data: bytes) -> None:
        # An SSE client has nothing more to say (its response said `Connection: close`, so not even another
        # request): a little is dropped, a flood ends the stream rather than cost us CPU for nothing.
        self._ignored += len(data)
        if self._ignored > _MAX_IGNORED_BYTES and self._transport is not None:
            self._ended = True
            self._transport.abort()

    def pause_writing(self) -> None:
        self._paused_since = asyncio.get_running_loop().time()

    def resume_writing(self) -> None:
        self._paused_since = 0.0
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        if self._fetch is not None:
            self._fetch.cancel()
        self._clock.discard(self)
        self._release()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()

    # The clock's side.

    @property
    def job_id(self) -> str:
        return self._subscription.job_id

    def drop(self) -> None:
        self._ended = True  # nothing more is written; `connection_lost` follows and cleans up
        if self._transport is not None:
            self._transport.abort()

    def tick(self, now: float) -> None:
        """Drop a client whose socket has taken nothing for `send_timeout_s`; keep a quiet stream alive."""
        if self._paused_since:
            if now - self._paused_since > self._send_timeout_s and self._transport is not None:
                job_id = self._subscription.job_id
                logger.warning(
                    "job %s: client took no bytes for %g s; dropped",
                    job_id,
                    self._send_timeout_s,
                    extra={"job_id": job_id},
                )
                self._counters.slow_dropped += 1
                self._paused_since = 0.0
                self._ended = True  # nothing more is written; `connection_lost` follows and cleans up
                self._transport.abort()
        elif self._wrote:
            self._wrote = False
            self._quiet_since = now
        elif now - self._quiet_since >= self._keepalive_s and not self._ended and self._fetch is None:
            self._write(_KEEPALIVE)
            self._quiet_since = now

    # The subscription's side.

    def _schedule(self) -> None:
        if not self._due:
            self._due = True
            self._pending.add(self)

    def _write_live(self, event: StoredEvent) -> bool:
        """Write a live event now, if nothing is ahead of it (`Subscription.deliver`); False if not."""
        if self._ended or self._paused_since or self._fetch is not None or self._opening or self._due:
            return False
        assert self._transport is not None  # set in `start`, before the subscription is attached
        self._transport.write(event.chunk)
        self._wrote = True
        self._counters.delivered += 1
        return True

    def flush(self) -> None:
        """Write what the subscription has queued; start a read of Redis if it needs one.

        `PendingWrites` calls it once per hub read; the stream calls it itself when it may write again.
        """
        self._due = False  # if it was, a second flush this turn finds nothing to do
        if self._ended or self._paused_since or self._fetch is not None:
            return
        subscription = self._subscription
        if events := subscription.take_events():
            self._write_events(events)
        if subscription.finished:
            self._end(b"")
        elif subscription.closed:
            # Cut short (shutdown, a vanished job): reconnect soon, to this process's successor or another.
            self._end(encode_retry(self._reconnect_ms))
        elif subscription.needs_fetch and not self._paused_since:
            self._fetch = asyncio.get_running_loop().create_task(self._read_redis())

    async def _read_redis(self) -> None:
        try:
            lost = await self._subscription.fill()
        except Exception as exc:
            # Catching up needs Redis; without it (or after a bug), end the stream cleanly: the client
            # resumes with Last-Event-ID.
            job_id = self._subscription.job_id
            if isinstance(exc, RedisError):
                logger.warning(
                    "job %s: stream ended, Redis unavailable: %s", job_id, exc, extra={"job_id": job_id}
                )
            else:
                logger.exception(
                    "job %s: stream ended by an unexpected error", job_id, extra={"job_id": job_id}
                )
            self._fetch = None
            self._end(encode_retry(self._reconnect_ms))
            return
        self._fetch = None
        if self._ended:
            return
        if lost:
            self._write(encode_chunk(lost))
        self.flush()
        if self._opening and not self._ended:
            self._write(b"")  # nothing to replay: the opening goes out alone

    def _write_events(self, events: list[StoredEvent]) -> None:
        self._counters.delivered += len(events)
        if self._transport is not None:
            chunks = [event.chunk for event in events]
            if self._opening:
                chunks.insert(0, self._opening)
                self._opening = b""
            self._transport.writelines(chunks)  # one system call for them all
            self._wrote = True

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            if self._opening:
                data, self._opening = self._opening + data, b""
            self._transport.write(data)
            self._wrote = True

    def _end(self, tail: bytes) -> None:
        if self._ended:
            return
        self._ended = True
        self._release()  # no more live events: the hub may unsubscribe now
        if self._transport is not None:
            self._write(encode_chunk(tail) + LAST_CHUNK if tail else LAST_CHUNK)
            # The response is complete; the connection is not handed back to the server for another
            # request, so it closes (after the buffered bytes are out; the clock still watches them).
            self._transport.close()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._leave(self._subscription)
