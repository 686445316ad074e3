"""`process_upload`: reads an uploaded file once, reporting progress by bytes, and returns what it found."""

import asyncio
import threading
from typing import Any

from jobpulse.tasks import ProcessUploadParams
from jobpulse.uploads import UploadStorage
from worker.progress import progress
from worker.tasks.upload_analysis import FileProgress, analyse

UPLOADS_KEY = "jobpulse_uploads"
THROTTLE_KEY = "jobpulse_upload_throttle"
# How often the reading thread's position is reported; `progress()` coalesces further.
_REPORT_EVERY_S = 0.05


class UploadMissing(Exception):
    """The job's file is not in the upload directory."""


def _megabytes(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


def _consume_outcome(reading: "asyncio.Future[Any]") -> None:
    """A pass stopped because the task was cancelled ends with `Stopped` that nobody awaits: drop it."""
    if not reading.cancelled():
        reading.exception()


async def process_upload(ctx: dict[str, Any], params: ProcessUploadParams) -> dict[str, Any]:
    storage: UploadStorage = ctx[UPLOADS_KEY]
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
    reading = asyncio.ensure_future(
        asyncio.to_thread(
            analyse, path, params.filename, params.content_type, done, stop, ctx.get(THROTTLE_KEY, 0)
        )
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
