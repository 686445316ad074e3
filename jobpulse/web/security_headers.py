"""Headers every response carries, whatever route or static file produced it.

A plain ASGI middleware rather than Starlette's `BaseHTTPMiddleware`, which would buffer and delay the
event streams passing through it.
"""

from collections.abc import Awaitable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADERS = {
    # Browsers must not guess a JSON or event-stream body is a script or a page.
    "X-Content-Type-Options": "nosniff",
    # Nothing of ours is framed by another site (the pages say it again in their CSP).
    "X-Frame-Options": "DENY",
    # Job URLs may carry `?token=`: never send them on to another site as a Referer.
    "Referrer-Policy": "no-referrer",
}


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # A plain function handing back the inner send's awaitable, not a coroutine of its own: an event
        # stream calls this once per event per client, and a coroutine frame each time shows in profiles.
        def send_with_headers(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            return send(message)

        await self.app(scope, receive, send_with_headers)
