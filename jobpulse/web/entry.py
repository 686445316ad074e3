"""`uvicorn jobpulse.web.entry:app` (what `jobpulse web` runs): the standalone app for `JOBPULSE_TASKS`.

Built when uvicorn asks for it, so the environment is read then; works from a pip install, with the
user's project on `sys.path` (uvicorn puts the working directory there).
"""

from typing import Any

from jobpulse.logs import configure_logging
from jobpulse.registry import TaskDefinitionError, import_registry
from jobpulse.settings import Settings
from jobpulse.web.app import create_app

NO_TASKS = (
    "no task registry to serve: set JOBPULSE_TASKS=module:attribute (or pass --tasks), naming your "
    "TaskRegistry, e.g. JOBPULSE_TASKS=tasks:tasks for `tasks = TaskRegistry()` in tasks.py"
)


def __getattr__(name: str) -> Any:
    if name == "app":
        settings = Settings()
        if not settings.tasks:
            raise TaskDefinitionError(NO_TASKS)
        configure_logging(settings.log_format)
        return create_app(import_registry(settings.tasks), settings=settings, freeze_gc=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
