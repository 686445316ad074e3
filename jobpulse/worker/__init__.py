"""jobpulse's arq side: `WorkerSettings = worker_settings(tasks)` in your own `worker.py`.

Public: `worker_settings`, and for task code `progress`, `progress_reporter`, `JobAborted` and
`TaskFailed` (also importable from `jobpulse`). Every module below this package is private: its names
may change in any release.
"""

from jobpulse.worker.arq_settings import worker_settings
from jobpulse.worker.errors import TaskFailed
from jobpulse.worker.progress import JobAborted, progress
from jobpulse.worker.reporter import progress_reporter

__all__ = ["JobAborted", "TaskFailed", "progress", "progress_reporter", "worker_settings"]
