"""The FastAPI application: `uvicorn web.app:app`, or `create_app(settings)` in tests."""

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from jobpulse.logs import configure_logging
from jobpulse.models import LostEvent, ProgressEvent, StatusEvent, SubmitJob
from jobpulse.settings import Settings
from jobpulse.tasks import TASK_PARAMS
from jobpulse.uploads import UploadStorage
from web.access_log import redact_access_log
from web.errors import install_error_handlers
from web.routes import events, health, jobs, metrics, pages, uploads
from web.security_headers import SecurityHeaders
from web.services import Services
from web.shutdown import on_stop_signal
from web.stream_lane import JobpulseApp


class HTTPError(BaseModel):
    detail: Any


_DOCUMENTED_MODELS: list[type[BaseModel]] = [
    HTTPError,
    SubmitJob,
    StatusEvent,
    ProgressEvent,
    LostEvent,
    *TASK_PARAMS.values(),
]


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's schema plus the models only the SSE stream and the manual body parsing refer to."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        if not settings.api_keys:
            _make_credentials_optional(schema)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in _DOCUMENTED_MODELS:
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        app.openapi_schema = schema
    return app.openapi_schema


def _make_credentials_optional(schema: dict[str, Any]) -> None:
    """Without API keys no credential is needed: say so with the empty requirement `{}` OpenAPI allows."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and operation.get("security"):
                operation["security"].append({})


def create_app(settings: Settings | None = None, *, freeze_gc: bool = False) -> FastAPI:
    """The app; `freeze_gc` is for a process that serves only it (uvicorn), not for a test session."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redact_access_log()
        UploadStorage(settings.upload_dir).ensure()
        services = await Services.start(settings)
        app.state.services = services
        if freeze_gc:
            # Everything alive now (modules, FastAPI's routes and models) lives as long as the process:
            # move it out of the collector's sight, so full collections while thousands of streams are
            # open scan only what the streams made, not the whole framework (pauses of tens of ms).
            gc.freeze()
            # And collect less often: each open stream is a few dozen long-lived objects, so a burst of
            # thousands of new streams triggered a full collection every 25 % of growth (12 of them,
            # 30 % of the CPU, while 10,000 streams opened). Cyclic garbage waits a little longer.
            gc.set_threshold(50_000, 20, 20)
        try:
            with on_stop_signal(services.hub.close_streams):
                yield
        finally:
            await services.stop()

    tasks = ", ".join(f"`{name}`" for name in sorted(TASK_PARAMS))
    app = JobpulseApp(
        title="jobpulse",
        version="0.1.0",
        description=f"Submit background jobs; stream their progress as Server-Sent Events. Tasks: {tasks}.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    _install_middleware(app, settings)
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(uploads.router)
    app.include_router(pages.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.mount("/static", pages.static_files(), name="static")
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    return app


def _install_middleware(app: FastAPI, settings: Settings) -> None:
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            expose_headers=["Location", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(SecurityHeaders)


def __getattr__(name: str) -> Any:
    """`web.app:app` is built when uvicorn asks for it, reading the environment then."""
    if name == "app":
        settings = Settings()
        # Here, not in create_app: only the process uvicorn runs owns its logging (tests build many apps).
        # uvicorn has configured its loggers by now, and has not yet logged that it started.
        configure_logging(settings.log_format)
        return create_app(settings, freeze_gc=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
