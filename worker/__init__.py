"""The arq side of jobpulse: start it with `arq worker.WorkerSettings`.

`WorkerSettings` is built when arq asks for it, so the environment is read when the worker starts, not
when this package is imported.
"""

from typing import Any

from worker.errors import TaskFailed
from worker.progress import JobAborted, progress

__all__ = ["JobAborted", "TaskFailed", "WorkerSettings", "progress"]


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        from jobpulse.settings import Settings
        from worker.settings import build_worker_settings

        return build_worker_settings(Settings(), owns_process=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
