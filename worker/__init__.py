"""The reference service's worker: `arq worker.WorkerSettings`, built on jobpulse's public API.

`WorkerSettings` is built when arq asks for it, so the environment is read when the worker starts, not
when this package is imported. The demo's `process_upload` reads files in a thread pool of its own,
started and stopped by hooks composed with jobpulse's.
"""

from typing import Any

from jobpulse import Settings
from jobpulse.worker import worker_settings
from worker.registry import served_registry


def build(settings: Settings | None = None, *, owns_process: bool = True) -> dict[str, Any]:
    """The worker's settings for `settings` (default: from the environment)."""
    from worker.tasks.process_upload import UploadReadingHooks

    settings = settings or Settings()
    registry = served_registry(settings)
    reading = UploadReadingHooks(settings)
    return worker_settings(
        registry,
        settings=settings,
        owns_process=owns_process,
        on_startup=reading.on_startup,
        on_shutdown=reading.on_shutdown,
    )


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        return build()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
