"""A short lane for `GET .../jobs/{id}/events`, in front of the app's whole middleware stack.

Every frame of a request's call chain stays alive for as long as its response runs, and an event stream
runs for minutes to hours: with thousands open, FastAPI's stack (its telemetry, body-limit and exit-stack
middleware, the nested routers that matched the path) was about a tenth of the CPU of opening a stream
and several KiB of memory per open one (docs/PERFORMANCE.md). The lane matches the one route the way
Starlette's router would (`Route.matches`, so `root_path` and the path parameter behave the same) and
runs it inside the app's own middleware and exception handlers, so its answers cannot be told apart from
the router's: `tests/` send the same requests both ways. Everything else, and any other method on the
path (405), goes through the app as before.

`jobs_router`'s lifespan installs it on whichever app included the router, by wrapping
`app.middleware_stack` (which Starlette builds before it runs the lifespan): the host app writes no line
for it. What the lane leaves out is Starlette's `ServerErrorMiddleware`: an unexpected exception reaches
the server, which logs it and answers 500, as that middleware would.

The lane also keeps the server's own `send` in the scope, so that once the response head is out the
stream can take its connection over (`handoff.py`) — but only while every middleware of the app is one
known to leave body chunks alone: a stream written straight to the socket would pass by, say, a
compressing one. CORS and jobpulse's security headers are known; `mark_head_only(MyMiddleware)` adds
one of the host app's own (docs/PERFORMANCE.md says what each path costs).
"""

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from jobpulse.web.routes.events import serve_stream
from jobpulse.web.security_headers import SecurityHeaders
from jobpulse.web.streaming.handoff import remember_server_send

# Middleware that change only the response head: a handed-off stream's body bypasses them unchanged.
_HEAD_ONLY_MIDDLEWARE: set[Any] = {CORSMiddleware, SecurityHeaders}


def mark_head_only(middleware_class: type) -> type:
    """Declare that `middleware_class` never changes a response's body (it may change its head), so
    event streams behind it can still be written straight to their sockets. Returns the class, so it
    also works as a decorator."""
    _HEAD_ONLY_MIDDLEWARE.add(middleware_class)
    return middleware_class


class StreamLane:
    """The app's stack, with the stream route taken out in front of it."""

    def __init__(self, app: FastAPI, inner: ASGIApp, path: str) -> None:
        self._app = app
        self._inner = inner
        self._route = Route(path, endpoint=serve_stream)
        self._route.methods = {"GET"}  # Starlette would add HEAD; the router answers HEAD with 405
        self._lane: ASGIApp | None = None
        self.handoff = False

    @property
    def inner(self) -> ASGIApp:
        return self._inner

    def _build(self) -> ASGIApp:
        """The route inside the same user middleware and exception handlers as the router's routes."""
        app = self._app
        handlers = {
            key: value for key, value in app.exception_handlers.items() if key not in (500, Exception)
        }
        lane: ASGIApp = ExceptionMiddleware(serve_stream, handlers=handlers)
        for cls, args, kwargs in reversed(app.user_middleware):
            lane = cls(lane, *args, **kwargs)
        self.handoff = all(middleware.cls in _HEAD_ONLY_MIDDLEWARE for middleware in app.user_middleware)
        return lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            match, child_scope = self._route.matches(scope)
            if match is Match.FULL:
                if self._lane is None:
                    self._lane = self._build()
                scope["app"] = self._app
                scope.update(child_scope)
                if self.handoff:
                    remember_server_send(scope, send)
                await self._lane(scope, receive, send)
                return
        await self._inner(scope, receive, send)


def install_stream_lane(app: FastAPI, path: str) -> Callable[[], None]:
    """Put the lane for the stream route at `path` in front of `app`'s stack; returns what removes it."""
    if app.middleware_stack is None:
        app.middleware_stack = app.build_middleware_stack()
    lane = StreamLane(app, app.middleware_stack, path)
    app.middleware_stack = lane

    def uninstall() -> None:
        if app.middleware_stack is lane:
            app.middleware_stack = lane.inner

    return uninstall
