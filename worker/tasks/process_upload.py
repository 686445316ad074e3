"""`process_upload`: reads an uploaded file once, reporting progress by bytes, and returns what it found."""

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from jobpulse import Settings, TaskFailed, UploadParams, UploadStorage, progress
from worker.tasks.upload_analysis import FileProgress, analyse

UPLOADS_KEY = "jobpulse_uploads"
# How often the reading thread's position is reported; `progress()` coalesces further.
_REPORT_EVERY_S = 0.05


@dataclass(frozen=True)
class UploadReading:
    """What `process_upload` needs from the worker, kept in arq's ctx under `UPLOADS_KEY`.

    The readers are a pool of their own, one thread per job the worker may run at once: on asyncio's
    default pool (CPUs + 4 threads) the seventh upload would wait at 0 % for a free thread.
    """

    storage: UploadStorage
    readers: ThreadPoolExecutor
    throttle_bytes_per_s: int = 0

    @classmethod
    def start(cls, settings: Settings) -> "UploadReading":
        storage = UploadStorage(settings.upload_dir)
        storage.ensure()
        readers = ThreadPoolExecutor(settings.max_jobs, thread_name_prefix="jobpulse-upload")
        return cls(storage, readers, settings.upload_throttle_bytes_per_s)

    def stop(self) -> None:
        self.readers.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class UploadReadingHooks:
    """arq hooks that start `UploadReading` with the worker and stop it with the worker."""

    settings: Settings

    async def on_startup(self, ctx: dict[str, Any]) -> None:
        ctx[UPLOADS_KEY] = UploadReading.start(self.settings)

    async def on_shutdown(self, ctx: dict[str, Any]) -> None:
        if UPLOADS_KEY in ctx:
            ctx.pop(UPLOADS_KEY).stop()


class ProcessUploadParams(UploadParams):
    """Read the job's uploaded file and report its size, line count and SHA-256 (and CSV/image facts)."""


class UploadMissing(TaskFailed):
    """The job's file is not in the upload directory."""


def _megabytes(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


def _consume_outcome(reading: "asyncio.Future[Any]") -> None:
    """A pass stopped because the task was cancelled ends with `Stopped` that nobody awaits: drop it."""
    if not reading.cancelled():
        reading.exception()


async def process_upload(ctx: dict[str, Any], params: ProcessUploadParams) -> dict[str, Any]:
    uploads: UploadReading = ctx[UPLOADS_KEY]
    storage = uploads.storage
    path = storage.path(ctx["job_id"])
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UploadMissing(
            f"{params.filename} is no longer stored: it outlived JOBPULSE_UPLOAD_RETENTION_S, or the web "
            f"app and the worker do not share JOBPULSE_UPLOAD_DIR ({storage.directory})"
        ) from None
    done = FileProgress()
    stop = threading.Event()
    reading = asyncio.get_running_loop().run_in_executor(
        uploads.readers,
        functools.partial(
            analyse, path, params.filename, params.content_type, done, stop, uploads.throttle_bytes_per_s
        ),
    )
    try:
        while not reading.done():
            await asyncio.wait({reading}, timeout=_REPORT_EVERY_S)
            if not reading.done() and size:
                message = f"read {_megabytes(done.done)} of {_megabytes(size)}"
                await progress(ctx, min(99.9, 100 * done.done / size), message, current=done.done, total=size)
        analysis = reading.result()
    finally:
        stop.set()  # cancelled or aborted: the thread stops at its next chunk
        reading.add_done_callback(_consume_outcome)
    await progress(ctx, 100, f"read {_megabytes(analysis.size)}", current=analysis.size, total=analysis.size)
    result: dict[str, Any] = {
        "filename": params.filename,
        "content_type": params.content_type,
        "size": analysis.size,
        "sha256": analysis.sha256,
        "lines": analysis.lines,
    }
    if analysis.csv is not None:
        result["csv"] = analysis.csv
    if analysis.image is not None:
        result["image"] = analysis.image
    return result
