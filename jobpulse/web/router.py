"""`jobs_router(registry)`: jobpulse's job routes, to include in any FastAPI app.

`app.include_router(jobs_router(tasks), prefix="/api")` is all it takes. FastAPI merges the router's
lifespan into the app's, and that lifespan starts what the routes need (Redis pool, hub, stream clock),
keeps it on `app.state.jobpulse`, finds the prefix the router was included at (so `Location` and
`events_url` carry it), and puts the stream lane in front of the app. The app's own routes, middleware,
OpenAPI and exception handlers are left as they are; so is its logging configuration, but for a filter
that keeps job tokens out of uvicorn's access log (`access/access_log.py`).
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.routing import NoMatchFound

from jobpulse.registry import TaskRegistry
from jobpulse.settings import Settings
from jobpulse.web.access.access_log import redact_access_log
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


def jobs_router(registry: TaskRegistry, *, settings: Settings | None = None) -> APIRouter:
    """`POST /jobs`, `GET /jobs/{id}`, `GET /jobs/{id}/events`, `DELETE /jobs/{id}` and
    `GET /static/jobpulse.js` for the tasks of `registry`.

    `settings` defaults to `Settings()`, read from the environment when the app starts. Raises
    `TaskDefinitionError` now if a registered task cannot run as defined.
    """
    registry.check()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redact_access_log()
        events_path = _events_path(app)
        paths = JobPaths(prefix=events_path.removesuffix(_EVENTS_PATH_SUFFIX))
        services = await Services.start(settings or Settings(), registry, paths)
        app.state.jobpulse = services
        uninstall_lane = install_stream_lane(app, events_path)
        try:
            with on_stop_signal(services.hub.close_streams):
                yield
        finally:
            uninstall_lane()
            await services.stop()
            del app.state.jobpulse

    router = APIRouter(lifespan=lifespan)
    router.include_router(jobs.router)
    router.include_router(events.router)

    @router.get("/static/jobpulse.js", include_in_schema=False)
    async def script() -> FileResponse:
        """The drop-in browser client (`watchJob`), an ES module with no dependencies."""
        return FileResponse(SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    return router
