"""`progress()`: how task code reports how far it has got.

Cheap enough for a hot loop: updates closer together than the coalescing window only replace a pending
update in memory; the latest pending one is published when the window closes. 100% is published at once,
and whatever is pending is flushed before any status event, so the final progress is never lost.
"""

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobpulse.store import JobAlreadyFinished, JobNotFound, JobStore, StaleAttempt

logger = logging.getLogger(__name__)

REPORTER_KEY = "jobpulse_reporter"


class JobAborted(BaseException):
    """Raised inside a task by `progress()` (or a `progress_reporter()`'s report, in the thread or process
    that calls it) once its job was cancelled, handed to another attempt, or the attempt is over.

    A BaseException, so task code's `except Exception` does not swallow it: the task must stop.
    """


@dataclass(frozen=True, slots=True)
class Update:
    """One progress report, validated and clamped (see `build_update`)."""

    progress: float
    message: str | None
    current: int | None
    total: int | None
    ts: float


class ProgressReporter:
    """Publishes one attempt's progress, coalescing updates closer together than `interval_s`."""

    def __init__(self, store: JobStore, job_id: str, attempt: int, interval_s: float) -> None:
        self._store = store
        self._job_id = job_id
        self._attempt = attempt
        self._interval_s = interval_s
        self._last_publish = -math.inf
        self._pending: Update | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # keeps publishes in the order they were reported
        self._aborted = False  # refused by the store, or closed: every later report raises JobAborted

    @property
    def job_id(self) -> str:
        return self._job_id

    @property
    def attempt(self) -> int:
        return self._attempt

    async def report(self, update: Update) -> None:
        if self._aborted:
            raise JobAborted(self._job_id)
        now = time.monotonic()
        if update.progress >= 100 or now - self._last_publish >= self._interval_s:
            self._pending = None
            await self._publish(update)
            return
        self._pending = update
        if self._flusher is None:
            delay = self._last_publish + self._interval_s - now
            self._flusher = asyncio.create_task(self._flush_after(delay))

    async def _flush_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._flusher = None
        try:
            await self.flush()
        except JobAborted:
            pass  # the task hears of it on its next report
        except Exception:
            logger.exception("job %s: publishing progress failed", self._job_id)

    async def flush(self) -> None:
        """Publish whatever update is pending, now, after any publish already under way."""
        async with self._lock:
            update, self._pending = self._pending, None
            if update is not None:
                await self._publish_locked(update)

    def close(self) -> None:
        """Drop a pending update and its timer: the attempt is over, and later reports raise JobAborted.

        A thread or process the task left running (its awaiting task was cancelled) learns so at its
        next report, even one that would only have replaced a pending update.
        """
        self._aborted = True
        self._pending = None
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None

    async def close_and_settle(self) -> None:
        """`close()`, then wait out the publishes already under way or waiting their turn, so that a
        status written next comes after every progress event of the attempt. A thread or process
        reporting meanwhile (the task was cancelled, not it) would otherwise append after that status."""
        self.close()
        async with self._lock:  # an asyncio.Lock is fair: those waiting before go first
            pass

    async def _publish(self, update: Update) -> None:
        async with self._lock:
            await self._publish_locked(update)

    async def _publish_locked(self, update: Update) -> None:
        self._last_publish = time.monotonic()
        try:
            await self._store.set_progress(
                self._job_id,
                attempt=self._attempt,
                progress=update.progress,
                message=update.message,
                current=update.current,
                total=update.total,
                ts=update.ts,
            )
        except (JobAlreadyFinished, JobNotFound, StaleAttempt) as exc:
            self._aborted = True
            raise JobAborted(self._job_id) from exc


def build_update(
    percent: float | None,
    message: str | None,
    current: int | None,
    total: int | None,
    *,
    caller: str = "progress()",
    ts: float | None = None,
) -> Update:
    """The update `progress()` (or another `caller`) publishes for these arguments; bad ones raise here."""
    for name, count in (("current", current), ("total", total)):
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
            raise ValueError(f"{caller} {name}= must be a whole number >= 0, not {count!r}")
    if message is not None and not isinstance(message, str):
        raise TypeError(f"{caller} message must be a str, not {type(message).__name__}")
    if percent is None:
        if current is None or not total:
            raise ValueError(f"{caller} needs a percent, or current= with a positive total=")
        percent = 100.0 * current / total
    if math.isnan(percent):
        raise ValueError(f"{caller} percent is NaN")
    clamped = min(100.0, max(0.0, float(percent)))
    return Update(clamped, message, current, total, time.time() if ts is None else ts)


async def progress(
    ctx: Mapping[str, Any],
    percent: float | None = None,
    message: str | None = None,
    *,
    current: int | None = None,
    total: int | None = None,
) -> None:
    """Report progress from a task: `await progress(ctx, 40, "resizing")` or `current=`/`total=`.

    Without `percent`, it is `current / total`. Values are clamped to 0-100. Raises `JobAborted` if the
    job was cancelled meanwhile; let it propagate. From a thread or a process pool, use
    `progress_reporter(ctx)`.
    """
    update = build_update(percent, message, current, total)
    reporter: ProgressReporter | None = ctx.get(REPORTER_KEY)
    if reporter is None:
        raise RuntimeError("progress() needs the ctx arq passes to a jobpulse task (see worker/tasks)")
    await reporter.report(update)
