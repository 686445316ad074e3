"""The reference service's web app: `uvicorn web.app:app`, built on jobpulse's public API.

jobpulse's standalone app for the served registry (`JOBPULSE_TASKS`, else the demo tasks), plus the
opt-in upload route and the demo's upload page.
"""

from typing import Any

from fastapi import FastAPI

from jobpulse import Settings, configure_logging
from jobpulse.web import create_app, uploads_router
from web.pages import pages_router, static_files
from worker.registry import served_registry

UPLOAD_TASK = "process_upload"


def build(settings: Settings | None = None, *, freeze_gc: bool = False) -> FastAPI:
    """The app for `settings` (default: from the environment)."""
    settings = settings or Settings()
    registry = served_registry(settings)
    app = create_app(registry, settings=settings, freeze_gc=freeze_gc)
    if UPLOAD_TASK in registry:
        app.include_router(uploads_router(registry, task=UPLOAD_TASK))
    app.include_router(pages_router(settings))
    app.mount("/static", static_files(), name="static")
    return app


def __getattr__(name: str) -> Any:
    """`web.app:app` is built when uvicorn asks for it, reading the environment then."""
    if name == "app":
        settings = Settings()
        # Here, not in build(): only the process uvicorn runs owns its logging (tests build many apps).
        # uvicorn has configured its loggers by now, and has not yet logged that it started.
        configure_logging(settings.log_format)
        return build(settings, freeze_gc=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
