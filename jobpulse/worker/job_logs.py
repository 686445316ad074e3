"""arq's side of `jobpulse.logs`: every line about a job, arq's own included, carries its `job_id`.

arq runs each job in a task of its own (`Worker.run_job`) and awaits `on_job_start` in that task before
it logs the job's start (`→`) and creates the task that runs our code. A context variable set there is
therefore seen by arq's start, end (`←`), retry and failure lines, by our lifecycle and task code, and by
the heartbeat and progress tasks they start; it dies with the job's task. A few arq lines come before that
hook (a job aborted before it started, an expired one, one past its tries): `ArqJobIds` finds the id
among their arguments.
"""

import logging
from typing import Any

from jobpulse.ids import is_job_id
from jobpulse.logs import LogFormat, bind_job, configure_logging, job_of

ARQ_WORKER_LOGGER = "arq.worker"


async def on_job_start(ctx: dict[str, Any]) -> None:
    """arq's `on_job_start` hook: tag this job's lines. Cron jobs' ids are not job ids and are not bound."""
    bind_job(str(ctx["job_id"]))


class ArqJobIds(logging.Filter):
    """Tags arq's lines that name a job (`ID` or `ID:task` among their arguments) but run outside it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if job_of(record) is None and isinstance(record.args, tuple):
            for arg in record.args:
                if isinstance(arg, str) and is_job_id(candidate := arg.partition(":")[0]):
                    record.job_id = candidate
                    break
        return True


def configure_worker_logging(log_format: LogFormat) -> None:
    """`jobpulse.logs.configure_logging` for a worker process, after arq's CLI has configured its own."""
    configure_logging(log_format)
    arq_logger = logging.getLogger(ARQ_WORKER_LOGGER)
    if not any(isinstance(f, ArqJobIds) for f in arq_logger.filters):
        arq_logger.addFilter(ArqJobIds())
