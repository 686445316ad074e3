"""One log format for the web app and the worker: JSON lines for machines, plain lines for people.

`configure_logging` is called once by each process's real entry point (`web.app:app` for uvicorn, the
worker's startup for `arq worker.WorkerSettings`), never by `create_app` or `build_worker_settings`
themselves: tests build many of those in one process, and pytest owns that process's logging.

The format follows stderr: JSON when it is not a terminal (a container, a service manager, a file), plain
text at a terminal; `JOBPULSE_LOG_FORMAT=json|text` forces one. uvicorn and arq configure their own
loggers (`dictConfig`) before our code runs, so rather than replace that configuration we keep their
handlers, destinations and levels (`--log-level`, `--no-access-log`, `arq -v` still work) and give every
handler our formatter. The root logger gets a stderr handler if it has none, so `web.*`, `worker.*` and
`jobpulse.*` lines (INFO and up) are printed too; a logger that has handlers of its own stops
propagating to the root, or its lines would be printed twice.

A line about a job carries `job_id`: from `extra={"job_id": ...}` on the call, else from `current_job`,
a context variable that the worker sets while a job runs and the web sets for a request about one job.
A context variable rather than a logger adapter so that lines logged by arq, uvicorn and the stream code,
which know nothing of it, are tagged as well.
"""

import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any, Literal

from jobpulse.ids import is_job_id

LogFormat = Literal["auto", "json", "text"]

current_job: ContextVar[str | None] = ContextVar("jobpulse_current_job", default=None)

# uvicorn's access lines: `'%s - "%s %s HTTP/%s" %d'` with these arguments.
_ACCESS_LOGGER = "uvicorn.access"
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def bind_job(job_id: str) -> None:
    """Tag the lines logged from here on in this task (and tasks it starts) with `job_id`.

    Ignores text that is not a job id, so a request for `/jobs/<anything>` cannot put arbitrary text
    into every line it logs. A request or a job runs in its own asyncio task, whose context dies with it:
    there is nothing to reset.
    """
    if is_job_id(job_id):
        current_job.set(job_id)


def job_of(record: logging.LogRecord) -> str | None:
    job_id = getattr(record, "job_id", None)
    return job_id if isinstance(job_id, str) else current_job.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, job_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (job_id := job_of(record)) is not None:
            line["job_id"] = job_id
        if record.name == _ACCESS_LOGGER and isinstance(record.args, tuple) and len(record.args) == 5:
            # Already redacted by jobpulse.web.access.access_log's filter, which runs before any handler.
            line.update(zip(_ACCESS_FIELDS, record.args, strict=True))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`2026-11-23 20:50:42,702 INFO jobpulse.web.routes.jobs [job ID] message`, then any traceback."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(jobpulse_job)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        job_id = job_of(record)
        record.jobpulse_job = f" [job {job_id}]" if job_id else ""
        return super().format(record)


def formatter_for(stream: IO[str] | None, log_format: LogFormat) -> logging.Formatter:
    """JSON or text as asked; with `auto`, JSON unless `stream` is a terminal."""
    if log_format == "auto":
        is_tty = stream is not None and hasattr(stream, "isatty") and stream.isatty()
        log_format = "text" if is_tty else "json"
    return JsonFormatter() if log_format == "json" else TextFormatter()


def _loggers() -> Iterator[logging.Logger]:
    yield logging.getLogger()
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            yield logger


def configure_logging(log_format: LogFormat = "auto") -> None:
    """Give every handler in the process our formatter; see the module docstring for the rules."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)
    for logger in _loggers():
        for handler in logger.handlers:
            stream = getattr(handler, "stream", None)
            handler.setFormatter(formatter_for(stream, log_format))
        if logger is not root and logger.handlers:
            logger.propagate = False
