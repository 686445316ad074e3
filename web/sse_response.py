"""The HTTP response that streams one subscription as Server-Sent Events.

It subclasses FastAPI's `EventSourceResponse` for the media type and the OpenAPI marker, but drives the
ASGI messages itself rather than through FastAPI's generator machinery: the bytes are already encoded
once per event by the hub, the keep-alive interval is ours to configure, the first bytes go out at once,
and the subscription is released in `finally` the moment the client disconnects.
"""

import asyncio
import logging
from collections.abc import Callable

from fastapi.sse import EventSourceResponse
from redis.exceptions import RedisError
from starlette.types import Receive, Scope, Send

from jobpulse.sse import encode_comment, encode_retry
from web.hub import Hub
from web.subscription import Subscription

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

# The reconnection delay suggested to clients whose stream is cut short (shutdown, Redis unavailable).
RECONNECT_SOON_MS = 250


class SubscriptionResponse(EventSourceResponse):
    def __init__(
        self,
        hub: Hub,
        subscription: Subscription,
        *,
        on_close: Callable[[], None] = lambda: None,
        keepalive_s: float,
        retry_ms: int,
        send_timeout_s: float,
    ) -> None:
        super().__init__(content=iter(()), headers=SSE_HEADERS)
        self._hub = hub
        self._subscription = subscription
        self._on_close = on_close
        self._keepalive_s = keepalive_s
        self._retry_ms = retry_ms
        self._send_timeout_s = send_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            writer = asyncio.ensure_future(self._write(send))
            watcher = asyncio.ensure_future(_until_disconnect(receive))
            try:
                await asyncio.wait({writer, watcher}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (writer, watcher):
                    task.cancel()
                await asyncio.gather(writer, watcher, return_exceptions=True)
            if writer.done() and not writer.cancelled() and (exc := writer.exception()) is not None:
                if not isinstance(exc, OSError):  # a client that vanished mid-write is not an error
                    raise exc
        finally:
            self._hub.release(self._subscription)
            self._on_close()

    async def _write(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        # The first bytes go out at once, so clients and proxies see a live stream before any event; the
        # `retry:` line takes effect as soon as a client reads it, event or no event.
        opening = encode_comment("connected") + encode_retry(self._retry_ms)
        await send({"type": "http.response.body", "body": opening, "more_body": True})
        keepalive = encode_comment("keep-alive")
        try:
            while (chunk := await self._subscription.next_chunk(self._keepalive_s)) is not None:
                try:
                    async with asyncio.timeout(self._send_timeout_s):
                        await send(
                            {"type": "http.response.body", "body": chunk or keepalive, "more_body": True}
                        )
                except TimeoutError:
                    # A peer that accepts nothing for this long is gone (or as good as gone): drop it
                    # rather than hold its connection for the kernel's retransmission timeout. It loses
                    # nothing: a client that is still there resumes with Last-Event-ID.
                    logger.warning(
                        "job %s: client took no bytes for %g s; dropped",
                        self._subscription.job_id,
                        self._send_timeout_s,
                    )
                    return
        except RedisError as exc:
            # Catching up needs Redis; without it, end the stream cleanly and let the client resume.
            logger.warning("job %s: stream ended, Redis unavailable: %s", self._subscription.job_id, exc)
        # Cut short (shutdown, Redis gone): reconnect soon; a `retry:` line takes effect once it is read.
        ending = encode_retry(RECONNECT_SOON_MS) if not self._subscription.finished else b""
        await send({"type": "http.response.body", "body": ending, "more_body": False})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
