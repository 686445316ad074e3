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
one of the host app's own, and `mark_head_only(my_dispatch)` a function the app registered with
`@app.middleware("http")` (docs/PERFORMANCE.md says what each path costs). Such a middleware (Starlette's
`BaseHTTPMiddleware`) relays the response through a task of its own and passes the head on only once its
dispatch function has returned, so after the stream sends its head the lane waits until the head has
reached the server: handed a connection whose response has not started, the handoff would decline.
"""

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobpulse.web.routes.events import serve_stream
from jobpulse.web.security_headers import SecurityHeaders
from jobpulse.web.streaming.handoff import remember_server_send

# Middleware (classes, or `@app.middleware("http")` dispatch functions) that change only the response
# head: a handed-off stream's body bypasses them unchanged.
_HEAD_ONLY_MIDDLEWARE: set[Any] = {CORSMiddleware, SecurityHeaders}

_HEAD_OUT = "jobpulse.head_out"  # scope key: an event set once the response head has reached the server
_HEAD_WAIT_S = 5.0  # after that, the stream stays on the ASGI path (the handoff declines)

_Middleware = TypeVar("_Middleware", bound=Callable[..., Any])


def mark_head_only(middleware: _Middleware) -> _Middleware:
    """Declare that `middleware` never changes a response's body (it may change its head), so event
    streams behind it can still be written straight to their sockets. `middleware` is a middleware
    class, or a function registered with `@app.middleware("http")`. Returns it, so it also works as a
    decorator (below `@app.middleware("http")`)."""
    _HEAD_ONLY_MIDDLEWARE.add(middleware)
    return middleware


def _is_head_only(middleware: Any) -> bool:
    return middleware.cls in _HEAD_ONLY_MIDDLEWARE or (
        isinstance(middleware.cls, type)
        and issubclass(middleware.cls, BaseHTTPMiddleware)
        and middleware.kwargs.get("dispatch") in _HEAD_ONLY_MIDDLEWARE
    )


async def _serve_head_first(scope: Scope, receive: Receive, send: Send) -> None:
    """`serve_stream`, returning from sending the response head only once the server has it."""
    head_out: asyncio.Event = scope[_HEAD_OUT]

    async def send_head_through(message: Message) -> None:
        await send(message)
        if message["type"] == "http.response.start" and not head_out.is_set():
            try:
                await asyncio.wait_for(head_out.wait(), _HEAD_WAIT_S)
            except TimeoutError:
                pass

    await serve_stream(scope, receive, send_head_through)


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
        self.handoff = all(_is_head_only(middleware) for middleware in app.user_middleware)
        lane: ASGIApp = ExceptionMiddleware(
            _serve_head_first if self.handoff else serve_stream, handlers=handlers
        )
        for cls, args, kwargs in reversed(app.user_middleware):
            lane = cls(lane, *args, **kwargs)
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
                    head_out = scope[_HEAD_OUT] = asyncio.Event()

                    async def server_send(message: Message) -> None:
                        await send(message)
                        if message["type"] == "http.response.start":
                            head_out.set()

                    await self._lane(scope, receive, server_send)
                    return
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
