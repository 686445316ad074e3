"""Deletes uploads older than `JOBPULSE_UPLOAD_RETENTION_S` at start-up and every 5 minutes (arq cron).

arq runs a cron job once per tick however many workers there are (its job id is unique per run), so
scaling workers does not multiply the sweeping.
"""

import logging
from typing import Any

import anyio
from arq.cron import CronJob, cron

from jobpulse.uploads import UploadStorage

logger = logging.getLogger(__name__)


def upload_sweeper(storage: UploadStorage, retention_s: int) -> CronJob:
    async def sweep_uploads(ctx: dict[str, Any]) -> int:
        removed = await anyio.to_thread.run_sync(storage.sweep, retention_s)
        if removed:
            logger.info("removed %d old uploads from %s", len(removed), storage.directory)
        return len(removed)

    return cron(
        sweep_uploads, name="sweep_uploads", minute=set(range(0, 60, 5)), run_at_startup=True, keep_result=0
    )
