"""`jobs_router(registry)`: jobpulse's job routes, to include in any FastAPI app.

`app.include_router(jobs_router(tasks), prefix="/api")` is all it takes. FastAPI merges the router's
lifespan into the app's, and that lifespan starts what the routes need (Redis pool, hub, stream clock),
keeps it on `app.state.jobpulse`, finds the prefix the router was included at (so `Location` and
`events_url` carry it), and puts the stream lane in front of the app. The app's own routes, middleware,
OpenAPI and exception handlers are left as they are; so is its logging configuration, but for a filter
that keeps job tokens out of uvicorn's access log (`access/access_log.py`).

With an owner rule the stream lane is left out: the stream route must run the user's dependency, which
only FastAPI's dependency solving can (`StreamRoute`). Streams then open through the app's router and
middleware and FastAPI's request handling, as any route does: the CPU and memory the lane saved
(docs/PERFORMANCE.md), and the handoff of the stream's socket (`streaming/handoff.py`), which needs the
server's own `send` the lane keeps; such a stream is written through ASGI for as long as it is open.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import FileResponse
from starlette.routing import NoMatchFound

from jobpulse.registry import TaskRegistry
from jobpulse.settings import Settings
from jobpulse.web.access.access_log import redact_access_log
from jobpulse.web.access.guards import OwnerRule, owner_gate
from jobpulse.web.access.policy import AccessPolicy
from jobpulse.web.paths import JobPaths
from jobpulse.web.routes import events, jobs
from jobpulse.web.services import Services
from jobpulse.web.shutdown import on_stop_signal
from jobpulse.web.streaming.stream_lane import install_stream_lane

logger = logging.getLogger(__name__)

SCRIPT = Path(__file__).resolve().parent / "static" / "jobpulse.js"
_EVENTS_PATH_SUFFIX = "/jobs/{job_id}/events"


def _events_path(app: FastAPI) -> str:
    """The stream route's path template in `app`, prefix included."""
    try:
        path = str(app.url_path_for(events.ROUTE_NAME, job_id="{job_id}"))
    except NoMatchFound:
        raise RuntimeError(
            "jobs_router's lifespan ran for an app without its routes: include it with "
            "app.include_router(jobs_router(tasks)), not app.mount()"
        ) from None
    return path


def _nothing() -> None:
    pass


def jobs_router(
    registry: TaskRegistry, *, settings: Settings | None = None, owner: OwnerRule | None = None
) -> APIRouter:
    """`POST /jobs`, `GET /jobs/{id}`, `GET /jobs/{id}/events`, `DELETE /jobs/{id}` and
    `GET /static/jobpulse.js` for the tasks of `registry`.

    `settings` defaults to `Settings()`, read from the environment when the app starts. Raises
    `TaskDefinitionError` now if a registered task cannot run as defined.

    `owner`: a FastAPI dependency of your own (it may depend on your session, your user model) that
    answers who is asking as a non-empty `str`, or raises your `HTTPException` to refuse. A submission
    records it as the job's owner, and reading the job (`GET`, `?wait=`, its event stream) and cancelling
    it take the same identity: another user's job answers the same 404 as an unknown one. An API key
    (`JOBPULSE_API_KEYS`) still opens any job and submits, and a job's token still reads that job; for
    those to work without a user, answer None where there is none (jobpulse then answers 401 unless a
    key or token opens the way).
    """
    registry.check()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redact_access_log()
        events_path = _events_path(app)
        paths = JobPaths(prefix=events_path.removesuffix(_EVENTS_PATH_SUFFIX))
        services = await Services.start(settings or Settings(), registry, paths)
        if owner is not None:
            services.access = AccessPolicy(services.settings, owners=True)
        app.state.jobpulse = services
        uninstall_lane = install_stream_lane(app, events_path) if owner is None else _nothing
        try:
            with on_stop_signal(services.hub.close_streams):
                yield
        finally:
            uninstall_lane()
            await services.stop()
            del app.state.jobpulse

    gated = [Depends(owner_gate(owner))] if owner is not None else []
    router = APIRouter(lifespan=lifespan)
    router.include_router(jobs.router, dependencies=gated)
    router.include_router(events.router, dependencies=gated)

    @router.get("/static/jobpulse.js", include_in_schema=False)
    async def script() -> FileResponse:
        """The drop-in browser client (`watchJob`), an ES module with no dependencies."""
        return FileResponse(SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    return router
