"""The HTTP response that streams one subscription as Server-Sent Events.

It subclasses FastAPI's `EventSourceResponse` for the media type and the OpenAPI marker, but drives the
ASGI messages itself rather than through FastAPI's generator machinery: the bytes are already encoded
once per event by the hub, the keep-alive interval is ours to configure, and the first bytes go out at
once. Then, on uvicorn, the connection is handed to a `DetachedStream` that writes to the socket itself
(`web/handoff.py` says why); elsewhere the stream goes on here, through ASGI, and the subscription is
released in `finally` the moment the client disconnects.
"""

import asyncio
import logging
from collections.abc import Callable

from fastapi.sse import EventSourceResponse
from redis.exceptions import RedisError
from starlette.types import Receive, Scope, Send

from jobpulse.sse import encode_comment, encode_retry
from jobpulse.web.streaming.detached_stream import DetachedStream
from jobpulse.web.streaming.handoff import take_over
from jobpulse.web.streaming.hub import Hub
from jobpulse.web.streaming.stream_clock import StreamClock
from jobpulse.web.streaming.subscription import Subscription

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# A stream's connection closes when the stream ends (a handed-off stream cannot give it back to the server
# for another request). Said up front, so that a proxy keeping connections to the web process open for
# reuse (nginx's `keepalive`) never sends its next request down one that is closing.
STREAM_HEADERS = {**SSE_HEADERS, "Connection": "close"}

# The reconnection delay suggested to clients whose stream is cut short (shutdown, Redis unavailable).
RECONNECT_SOON_MS = 250


class SubscriptionResponse(EventSourceResponse):
    """Sends the head, then hands the connection to a `DetachedStream` if the server allows it.

    Otherwise (another server, uvicorn's h11 protocol, TLS, an in-memory test transport) the stream runs
    in the request's own task, with one more task that waits for the disconnect.
    """

    def __init__(
        self,
        hub: Hub,
        subscription: Subscription,
        clock: StreamClock,
        *,
        on_close: Callable[[], None] = lambda: None,
        keepalive_s: float,
        retry_ms: int,
        send_timeout_s: float,
        lost: bytes = b"",
    ) -> None:
        """`lost`: the encoded `lost` event a resuming client is owed first, if it was read already."""
        super().__init__(content=iter(()), headers=STREAM_HEADERS)
        self._lost = lost
        self._hub = hub
        self._subscription = subscription
        self._clock = clock
        self._on_close = on_close
        self._keepalive_s = keepalive_s
        self._retry_ms = retry_ms
        self._send_timeout_s = send_timeout_s
        # Loop times read by `tick`: when the send under way began (0: none), when the last one began.
        self._sending_since = 0.0
        self._last_write = 0.0
        self._dropped = False
        self._task: asyncio.Task[object] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._task = asyncio.current_task()
        # The first bytes go out at once, so clients and proxies see a live stream before any event; the
        # `retry:` line takes effect as soon as a client reads it, event or no event.
        opening = encode_comment("connected") + encode_retry(self._retry_ms) + self._lost
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            hub = self._hub
            detached = DetachedStream(
                self._subscription,
                self._clock,
                pending=hub.pending_writes,
                counters=hub.counters,
                leave=hub.release,
                on_close=self._on_close,
                keepalive_s=self._keepalive_s,
                send_timeout_s=self._send_timeout_s,
                reconnect_ms=RECONNECT_SOON_MS,
            )
            if (transport := take_over(scope, detached)) is not None:
                # The stream is the connection's now, and this request is done. Its opening goes out
                # with the first write, a replay of the history (one round trip to Redis away) or
                # nothing: one write per new stream fewer.
                detached.start(transport, opening=opening)
                return
            await send({"type": "http.response.body", "body": opening, "more_body": True})
        except BaseException:
            self._release()
            raise
        watcher = asyncio.ensure_future(self._close_on_disconnect(receive))
        self._clock.add(self)
        try:
            await self._write(send)
        except OSError:
            pass  # a client that vanished mid-write is not an error
        finally:
            self._clock.discard(self)
            watcher.cancel()
            self._release()

    def _release(self) -> None:
        self._hub.release(self._subscription)
        self._on_close()

    @property
    def job_id(self) -> str:
        return self._subscription.job_id

    def drop(self) -> None:
        self._dropped = True
        if self._task is not None:
            self._task.cancel()

    def tick(self, now: float) -> None:
        """Called by the stream clock: drop a peer that takes no bytes; keep a quiet stream alive."""
        if self._sending_since:
            if now - self._sending_since > self._send_timeout_s and not self._dropped and self._task:
                self._dropped = True
                self._task.cancel()
        elif now - self._last_write >= self._keepalive_s:
            self._subscription.request_keepalive()

    async def _close_on_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._subscription.close()

    async def _write(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        self._last_write = loop.time()
        keepalive = encode_comment("keep-alive")
        subscription, counters = self._subscription, self._hub.counters
        counted = subscription.handed_out
        try:
            while (chunk := await subscription.next_chunk()) is not None:
                self._sending_since = loop.time()
                try:
                    await send({"type": "http.response.body", "body": chunk or keepalive, "more_body": True})
                except asyncio.CancelledError:
                    if not self._dropped:
                        raise
                    # The clock found this send blocked for `send_timeout_s`: a peer that accepts nothing
                    # for this long is gone (or as good as gone). Drop it rather than hold its connection
                    # for the kernel's retransmission timeout. It loses nothing: a client that is still
                    # there resumes with Last-Event-ID.
                    asyncio.current_task().uncancel()  # type: ignore[union-attr]
                    logger.warning(
                        "job %s: client took no bytes for %g s; dropped",
                        subscription.job_id,
                        self._send_timeout_s,
                        extra={"job_id": subscription.job_id},
                    )
                    counters.slow_dropped += 1
                    return
                # One clock read per send: a keep-alive counts from when the last send began.
                self._last_write, self._sending_since = self._sending_since, 0.0
                counters.delivered += subscription.handed_out - counted
                counted = subscription.handed_out
        except RedisError as exc:
            # Catching up needs Redis; without it, end the stream cleanly and let the client resume.
            job_id = subscription.job_id
            logger.warning(
                "job %s: stream ended, Redis unavailable: %s", job_id, exc, extra={"job_id": job_id}
            )
        # Cut short (shutdown, Redis gone): reconnect soon; a `retry:` line takes effect once it is read.
        ending = encode_retry(RECONNECT_SOON_MS) if not self._subscription.finished else b""
        await send({"type": "http.response.body", "body": ending, "more_body": False})
