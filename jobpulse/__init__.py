"""jobpulse: live progress for arq jobs, streamed to browsers and API clients as Server-Sent Events.

Public API (what the README documents; everything else is private and may change):

- here: `TaskRegistry`, `progress`, `progress_reporter`, `TaskFailed`, `JobAborted`, `Settings`,
  `UploadParams`, `UploadStorage`, `TaskDefinitionError`; for a program that serves a registry it is
  told of, `import_registry("module:attribute")`, and `configure_logging` for one that owns its process's
  logging (jobpulse's one-line JSON or text format);
- `jobpulse.worker`: `worker_settings`;
- `jobpulse.web`: `jobs_router`, `uploads_router`, `create_app`, `JobsDep`, `mark_head_only`;
- `jobpulse.client`: the Python client; the `jobpulse` command.

The contract both sides share lives in this package's top-level modules: the job and event models
(`models`), statuses (`status`), Redis keys (`keys`), the atomic event store (`store`) and the SSE
encoding (`sse`). Nothing else spells a Redis key or an event field.
"""

from jobpulse.logs import configure_logging
from jobpulse.registry import TaskDefinitionError, TaskRegistry, import_registry
from jobpulse.settings import Settings
from jobpulse.uploads import UploadParams, UploadStorage
from jobpulse.worker.errors import TaskFailed
from jobpulse.worker.progress import JobAborted, progress
from jobpulse.worker.reporter import progress_reporter

__all__ = [
    "JobAborted",
    "Settings",
    "TaskDefinitionError",
    "TaskFailed",
    "TaskRegistry",
    "UploadParams",
    "UploadStorage",
    "configure_logging",
    "import_registry",
    "progress",
    "progress_reporter",
]
