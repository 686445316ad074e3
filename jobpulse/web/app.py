"""`create_app(registry)`: the whole standalone web app for a registry's tasks.

The job routes (`jobs_router`), the operators' probes and metrics, CORS and security headers, and an
OpenAPI document that also describes each task's params. A user's own app includes `jobs_router` instead.
"""

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from jobpulse.models import LostEvent, ProgressEvent, StatusEvent, SubmitJob
from jobpulse.registry import TaskRegistry
from jobpulse.settings import Settings
from jobpulse.web.errors import HTTPError
from jobpulse.web.router import jobs_router
from jobpulse.web.routes import health, metrics
from jobpulse.web.security_headers import SecurityHeaders


def _openapi(app: FastAPI, settings: Settings, models: list[type[BaseModel]]) -> dict[str, Any]:
    """FastAPI's schema plus the models only the SSE stream and the manual body parsing refer to."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        if not settings.api_keys:
            _make_credentials_optional(schema)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
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


def create_app(
    registry: TaskRegistry, *, settings: Settings | None = None, freeze_gc: bool = False
) -> FastAPI:
    """The standalone app; `freeze_gc` is for a process that serves only it (uvicorn), not for a test
    session. `settings` defaults to `Settings()`, read from the environment now."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if freeze_gc:
            # Everything alive now (modules, FastAPI's routes and models) lives as long as the process:
            # move it out of the collector's sight, so full collections while thousands of streams are
            # open scan only what the streams made, not the whole framework (pauses of tens of ms).
            gc.freeze()
            # And collect less often: each open stream is a few dozen long-lived objects, so a burst of
            # thousands of new streams triggered a full collection every 25 % of growth (12 of them,
            # 30 % of the CPU, while 10,000 streams opened). Cyclic garbage waits a little longer.
            gc.set_threshold(50_000, 20, 20)
        yield

    tasks = ", ".join(f"`{name}`" for name in registry.names)
    app = FastAPI(
        title="jobpulse",
        version="0.1.0",
        description=f"Submit background jobs; stream their progress as Server-Sent Events. Tasks: {tasks}.",
        lifespan=lifespan,
    )
    _install_middleware(app, settings)
    app.include_router(jobs_router(registry, settings=settings))
    app.include_router(health.router)
    app.include_router(metrics.router)
    documented: list[type[BaseModel]] = [
        HTTPError,
        SubmitJob,
        StatusEvent,
        ProgressEvent,
        LostEvent,
        *(spec.params_model for spec in registry),
    ]
    app.openapi = lambda: _openapi(app, settings, documented)  # type: ignore[method-assign]
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
