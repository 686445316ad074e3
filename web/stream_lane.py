"""A short lane for `GET /jobs/{id}/events`, past FastAPI's router and outermost middleware.

Every frame of a request's call chain stays alive for as long as its response runs, and an event stream
runs for minutes to hours: with thousands open, FastAPI's stack (its telemetry, body-limit and exit-stack
middleware, the nested routers that matched the path) was about 4.6 KiB per open stream and a tenth of
the CPU of opening one. The lane matches the one route the way Starlette's router would
(`Route.matches`, so `root_path` and the path parameter behave the same) and runs it inside the app's own
middleware (security headers, CORS) and exception handlers, so its answers cannot be told apart from the
router's: `tests/test_events.py` sends the same requests both ways. Everything else, and any other
method on the path (405), goes through FastAPI as before.

What the lane leaves out is Starlette's `ServerErrorMiddleware`: an unexpected exception reaches uvicorn,
which logs it and answers 500, as that middleware would (no 500 handler is installed).

The lane also keeps the server's own `send` in the scope, so that once the response head is out the
stream can take its connection over (`web/handoff.py`) — but only while every middleware is one known to
leave body chunks alone (`_HEAD_ONLY_MIDDLEWARE`): a stream written straight to the socket would pass
by, say, a compressing one.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from web.handoff import remember_server_send
from web.routes.events import StreamRoute, router
from web.security_headers import SecurityHeaders

# Middleware that change only the response head: a handed-off stream's body bypasses them unchanged.
_HEAD_ONLY_MIDDLEWARE: frozenset[Any] = frozenset({CORSMiddleware, SecurityHeaders})


def _stream_route() -> StreamRoute:
    (route,) = [route for route in router.routes if isinstance(route, StreamRoute)]
    return route


class JobpulseApp(FastAPI):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stream_route = _stream_route()
        self._stream_lane: ASGIApp | None = None
        self._handoff = False

    def _build_stream_lane(self) -> ASGIApp:
        """The route inside the same user middleware and exception handlers as the router's routes."""
        handlers = {
            key: value for key, value in self.exception_handlers.items() if key not in (500, Exception)
        }
        lane: ASGIApp = ExceptionMiddleware(self._stream_route.handle, handlers=handlers)
        for cls, args, kwargs in reversed(self.user_middleware):
            lane = cls(lane, *args, **kwargs)
        self._handoff = all(middleware.cls in _HEAD_ONLY_MIDDLEWARE for middleware in self.user_middleware)
        return lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            match, child_scope = self._stream_route.matches(scope)
            if match is Match.FULL:
                if self._stream_lane is None:
                    self._stream_lane = self._build_stream_lane()
                scope["app"] = self
                scope.update(child_scope)
                if self._handoff:
                    remember_server_send(scope, send)
                await self._stream_lane(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
