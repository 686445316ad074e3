"""A user's own FastAPI app with jobpulse's router included: the "embedded" systems of the benchmark.

    REDIS_URL=redis://... uvicorn benchmarks.fanout.embedded_app:app          # middleware not marked
    REDIS_URL=redis://... uvicorn benchmarks.fanout.embedded_app:marked_app   # + mark_head_only(...)

The shop has a route of its own (`GET /hello`), the most common middleware there is, FastAPI's
`@app.middleware("http")` putting an `X-Request-ID` on every response, and the reference service's
registry (`worker.tasks:registry`, so the same `arq worker.WorkerSettings` runs its jobs) at `/api`.
`marked_app` adds the one line that tells jobpulse the middleware leaves bodies alone, so that streams
behind it can be handed off the ASGI path (`jobpulse/web/streaming/stream_lane.py`).

No `gc.freeze()` or collector thresholds, which the reference service's `create_app(freeze_gc=True)` has:
a user's app has neither unless it asks.
"""

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response

from jobpulse.web import jobs_router, mark_head_only
from worker.tasks import registry

PREFIX = "/api"


def build(*, marked: bool) -> FastAPI:
    """The user's app; `marked`: with the one line that declares its middleware head-only."""
    app = FastAPI(title="my shop")

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    async def request_id(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers["X-Request-ID"] = request.headers.get("x-request-id") or uuid.uuid4().hex
        return response

    if marked:
        mark_head_only(request_id)  # the one line: this middleware changes heads, never bodies
    app.middleware("http")(request_id)
    app.include_router(jobs_router(registry), prefix=PREFIX)
    return app


def __getattr__(name: str) -> Any:
    """Built when uvicorn asks, so that `jobs_router`'s settings are read from the run's environment."""
    if name in ("app", "marked_app"):
        return build(marked=name == "marked_app")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
