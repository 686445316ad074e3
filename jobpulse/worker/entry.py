"""`arq jobpulse.worker.entry.WorkerSettings` (what `jobpulse worker` runs): a worker for `JOBPULSE_TASKS`.

Built when arq asks for it, so the environment is read then; works from a pip install, with the user's
project on `sys.path` (arq puts the working directory there).
"""

from typing import Any

from jobpulse.registry import TaskDefinitionError, import_registry
from jobpulse.settings import Settings
from jobpulse.web.entry import NO_TASKS
from jobpulse.worker.arq_settings import worker_settings


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        settings = Settings()
        if not settings.tasks:
            raise TaskDefinitionError(NO_TASKS)
        return worker_settings(import_registry(settings.tasks), settings=settings)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
