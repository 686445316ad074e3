"""Runs a task inside the job's lifecycle: every status event comes from here, never from task code.

arq reports a failed or aborted job as "complete" and calls its hooks without the outcome, so each task is
wrapped in a function that knows it and publishes our own statuses:
  running (attempt N) → succeeded | failed | retrying (→ running, attempt N+1) ; cancelled is written by
  the web when the job is deleted, and this wrapper then publishes nothing more.
The attempt limit and the job timeout are enforced here, not by arq, so a job that arq would give up on
without calling us still gets its terminal event.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from arq.worker import Retry

from jobpulse.registry import TaskSpec
from jobpulse.settings import Settings
from jobpulse.status import JobStatus
from jobpulse.store import JobAlreadyFinished, JobNotFound, JobStore, JobStoreError
from jobpulse.worker import metrics
from jobpulse.worker.errors import TaskFailed
from jobpulse.worker.heartbeat import heartbeat
from jobpulse.worker.progress import REPORTER_KEY, JobAborted, ProgressReporter

logger = logging.getLogger(__name__)

STORE_KEY = "jobpulse_store"

ArqCoroutine = Callable[..., Awaitable[Any]]


def describe(exc: BaseException) -> str:
    """The job's `error` for `exc`: a `TaskFailed` message as it is, anything else with its class name."""
    text = str(exc)
    if isinstance(exc, TaskFailed) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Attempt:
    """One run of one job on this worker."""

    def __init__(self, ctx: dict[str, Any], max_tries: int) -> None:
        self.store: JobStore = ctx[STORE_KEY]
        self.job_id: str = ctx["job_id"]
        self.number: int = ctx["job_try"]
        self.max_tries = max_tries
        # How it ended, for jobpulse.worker.metrics: the last status it recorded, or `cancelled` (see there).
        self.outcome = "interrupted"

    async def status(self, status: JobStatus, *, error: str | None = None, result: Any = None) -> None:
        """Publish a status of this attempt; a job already finished (e.g. cancelled) is left as it is.

        Only the attempt that is the job's current one may end it: once `running` has made it current,
        every later status is fenced on its number.
        """
        try:
            await self.store.set_status(
                self.job_id,
                status,
                attempt=self.number,
                error=error,
                result=result,
                expect_attempt=None if status is JobStatus.RUNNING else self.number,
            )
        except (JobAlreadyFinished, JobNotFound) as exc:
            logger.info("job %s: not marking %s: %s", self.job_id, status.value, exc)
            self.outcome = "cancelled"
            raise
        if status is not JobStatus.RUNNING:
            self.outcome = status.value

    async def retry_or_fail(self, reason: str) -> bool:
        """After this attempt was cut short: `retrying` if tries remain (returns True), else `failed`."""
        if self.number < self.max_tries:
            await self.status(JobStatus.RETRYING, error=reason)
            return True
        await self.status(JobStatus.FAILED, error=f"{reason}; gave up after {self.max_tries} attempts")
        return False


def lifecycle_task(spec: TaskSpec, settings: Settings) -> ArqCoroutine:
    """The coroutine arq runs for task `spec`: validates params, then runs the task inside the lifecycle.

    The task's own `max_tries` and `timeout_s` win over the settings'.
    """
    name = spec.name
    max_tries = spec.tries(settings.max_tries)
    timeout_s = spec.timeout(settings.job_timeout_s)

    async def run(ctx: dict[str, Any], params: Mapping[str, Any]) -> None:
        attempt = _Attempt(ctx, max_tries)
        try:
            if attempt.number > max_tries:
                # arq runs it once more after our last attempt (a worker killed mid-job, say), so that
                # this can end it. No attempt of ours ran now: the last one that did is the job's.
                await attempt.store.set_status(
                    attempt.job_id,
                    JobStatus.FAILED,
                    attempt=max_tries,
                    error=f"gave up after {max_tries} attempts",
                )
                return
            await attempt.status(JobStatus.RUNNING)
        except JobStoreError:
            return  # cancelled while queued, or expired: never start it
        reporter = ProgressReporter(
            attempt.store, attempt.job_id, attempt.number, settings.progress_interval_ms / 1000
        )
        ctx[REPORTER_KEY] = reporter
        started = time.monotonic()
        metrics.attempt_started(name)
        try:
            beat_every = settings.heartbeat_interval_s
            async with heartbeat(attempt.store.queue_redis, attempt.job_id, attempt.number, beat_every):
                await _run_attempt(ctx, attempt, reporter, spec, timeout_s, params)
        except (JobStoreError, JobAborted):
            attempt.outcome = "cancelled"  # finished elsewhere while we ran: it keeps that ending
        finally:
            reporter.close()
            metrics.attempt_ended(name, attempt.outcome, time.monotonic() - started)

    run.__qualname__ = run.__name__ = name
    return run


async def _run_attempt(
    ctx: dict[str, Any],
    attempt: _Attempt,
    reporter: ProgressReporter,
    spec: TaskSpec,
    timeout_s: float,
    params: Mapping[str, Any],
) -> None:
    deadline = asyncio.timeout(timeout_s)
    try:
        parsed = spec.params_model.model_validate(params)
        async with deadline:
            result = await spec.function(ctx, parsed)
        await reporter.flush()
    except JobAborted:
        # cancelled: arq's finish_job also drops the abort request it may not have acted on
        attempt.outcome = "cancelled"
        return
    except Retry as exc:
        await reporter.flush()
        if await attempt.retry_or_fail(f"the task asked to be retried ({describe(exc)})"):
            raise  # arq puts it back on the queue
    except asyncio.CancelledError:
        # Either the job was deleted (the web already wrote `cancelled`, so this is refused) or the worker
        # is shutting down and arq will run the job again.
        await asyncio.shield(_note_interrupted(attempt, reporter))
        raise
    except TimeoutError as exc:
        await reporter.flush()
        reason = f"timed out after {timeout_s:g} s" if deadline.expired() else describe(exc)
        await attempt.status(JobStatus.FAILED, error=reason)
    except Exception as exc:
        logger.info("job %s failed: %s", attempt.job_id, describe(exc))
        await reporter.flush()
        await attempt.status(JobStatus.FAILED, error=describe(exc))
    else:
        await attempt.status(JobStatus.SUCCEEDED, result=result)


async def _note_interrupted(attempt: _Attempt, reporter: ProgressReporter) -> None:
    try:
        async with asyncio.timeout(5):
            # The task's thread or process may still be reporting: none of it may land after this status.
            await reporter.close_and_settle()
            await attempt.retry_or_fail("the worker stopped during the job")
    except (JobStoreError, TimeoutError):
        pass
    except Exception:
        logger.exception("job %s: could not record the interruption", attempt.job_id)
